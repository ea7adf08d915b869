"""lit-untrac: which training datasets made a language model behave as it does.

UnTrac and UnTrac-Inv (Isonuma & Titov) as PyTorch Lightning parts, with the
leave-dataset-out ground truth and gradient-based baselines.
"""

from lit_untrac.data import DatasetSpec, MixtureDataModule
from lit_untrac.errors import UserError
from lit_untrac.models import ModelSpec, load_model
from lit_untrac.modules import LanguageModel, UnlearningModule

__version__ = "0.1.0"

__all__ = [
    "DatasetSpec",
    "LanguageModel",
    "MixtureDataModule",
    "ModelSpec",
    "UnlearningModule",
    "UserError",
    "__version__",
    "load_model",
]
