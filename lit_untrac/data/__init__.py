"""Named datasets, their formats, the mixture datamodule and the synthetic generators."""

from lit_untrac.data.formats import Collator, Examples, length_grouped_batches, padding_waste
from lit_untrac.data.mixture import MixtureDataModule, SeededBatchSampler
from lit_untrac.data.sources import DatasetSpec, load_raw
from lit_untrac.data.synthetic import synthetic_a, synthetic_b

__all__ = [
    "Collator",
    "DatasetSpec",
    "Examples",
    "MixtureDataModule",
    "SeededBatchSampler",
    "length_grouped_batches",
    "load_raw",
    "padding_waste",
    "synthetic_a",
    "synthetic_b",
]
