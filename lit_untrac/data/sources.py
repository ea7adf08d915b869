"""Named datasets and where their examples come from.

A :class:`DatasetSpec` names one dataset of a mixture and says where to read
it: a hub dataset, local files (json, jsonl, csv, parquet, txt) or a built-in
generator. Everything is read through ``datasets.load_dataset`` (generators
through ``datasets.Dataset.from_list``), then reduced to the columns a format
needs: ``text``, or ``prompt`` and ``completion``, plus ``subset`` when the
dataset is split into subsets.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lit_untrac.errors import UserError, choose

FILE_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}
FORMATS = ("text", "prompt_completion")


@dataclass
class DatasetSpec:
    """One named dataset.

    Give exactly one source: ``hub``, ``files`` or ``generator``.

    Attributes:
        name: The dataset's name in tables and logs (no ``/``).
        hub: A hub dataset id for ``datasets.load_dataset``.
        hub_config: The hub dataset's configuration name, if it has several.
        split: The split to read (``train``, ``validation``, ``train[:1000]``).
        files: Local json, jsonl, csv, parquet or txt files (one path or a list).
        generator: A built-in generator: ``synthetic_a`` or ``synthetic_b``.
        generator_args: Its arguments, e.g. ``{"split": "train_1", "n": 256}``.
        format: ``text`` (concatenated, cut into blocks, loss on every token)
            or ``prompt_completion`` (loss on the completion only).
        text_field: The text column, for ``text``.
        prompt_field: The prompt column, for ``prompt_completion``; ``null``
            for an empty prompt (loss on the whole text, as for ToxiGen).
        completion_field: The completion column, for ``prompt_completion``.
        separator: Put between prompt and completion (causal models only).
        subset_field: A column that splits the dataset into named subsets.
        max_documents: A cap on the rows read, before tokenisation: a seeded
            random sample, in the original order (for large corpora).
        max_examples: A cap on the examples (blocks, for ``text``): a seeded
            random sample, in their original order.
        seed: The seed of both samples.
        recipe: A named preparation of a hub dataset before the fields are
            read (see :mod:`lit_untrac.data.recipes`).
        recipe_args: Its arguments.
    """

    name: str
    hub: str | None = None
    hub_config: str | None = None
    split: str = "train"
    files: str | list[str] | None = None
    generator: str | None = None
    generator_args: dict[str, Any] = field(default_factory=dict)
    format: Literal["text", "prompt_completion"] = "prompt_completion"
    text_field: str = "text"
    prompt_field: str | None = "prompt"
    completion_field: str = "completion"
    separator: str = " "
    subset_field: str | None = None
    max_documents: int | None = None
    max_examples: int | None = None
    seed: int = 0
    recipe: str | None = None
    recipe_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise UserError(f"dataset name {self.name!r} must be non-empty and contain no '/'")
        choose(f"format of dataset {self.name!r}", self.format, FORMATS)
        sources = [s for s in ("hub", "files", "generator") if getattr(self, s)]
        if len(sources) != 1:
            raise UserError(
                f"dataset {self.name!r} needs exactly one source (hub, files or generator), "
                f"got {sources or 'none'}"
            )
        for cap in ("max_documents", "max_examples"):
            value = getattr(self, cap)
            if value is not None and value < 1:
                raise UserError(f"dataset {self.name!r}: {cap}={value} must be >= 1")

    @property
    def columns(self) -> list[str]:
        """The source columns this spec reads."""
        if self.format == "text":
            needed = [self.text_field]
        else:
            needed = [self.completion_field] + ([self.prompt_field] if self.prompt_field else [])
        return needed + ([self.subset_field] if self.subset_field else [])


def seeded_sample(n_total: int, n: int | None, seed: int) -> list[int]:
    """Indices of a seeded random sample of ``n`` out of ``n_total``, in order."""
    if n is None or n >= n_total:
        return list(range(n_total))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_total, size=n, replace=False).tolist())


def _file_list(spec: DatasetSpec) -> list[str]:
    files = [spec.files] if isinstance(spec.files, str) else list(spec.files)
    for path in files:
        if not os.path.isfile(path):
            raise UserError(f"dataset {spec.name!r}: file {path!r} does not exist")
        if not os.access(path, os.R_OK):
            raise UserError(f"dataset {spec.name!r}: file {path!r} is not readable")
    builders = {FILE_BUILDERS.get(os.path.splitext(p)[1].lower()) for p in files}
    if None in builders or len(builders) != 1:
        raise UserError(
            f"dataset {spec.name!r}: files {files} must share one of the extensions "
            f"{sorted(FILE_BUILDERS)}"
        )
    return files


def load_raw(spec: DatasetSpec):
    """Read a dataset and keep the columns its format needs, renamed to
    ``text`` or ``prompt``/``completion`` (and ``subset``).

    Raises:
        UserError: for a missing or unreadable file, an unknown generator or
            recipe, a missing field, or an empty dataset.
    """
    import datasets

    if spec.generator:
        from lit_untrac.data.synthetic import GENERATORS

        choose("generator", spec.generator, GENERATORS)
        try:
            rows = GENERATORS[spec.generator](**spec.generator_args)
        except TypeError as err:
            raise UserError(f"dataset {spec.name!r}: bad generator_args: {err}") from err
        raw = datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({})
    elif spec.files:
        files = _file_list(spec)
        builder = FILE_BUILDERS[os.path.splitext(files[0])[1].lower()]
        try:
            with _quiet_datasets():  # the builders log a traceback before they raise
                raw = datasets.load_dataset(builder, data_files=files, split="train")
        except Exception as err:  # the builders raise many types for a bad file
            raise UserError(
                f"dataset {spec.name!r}: cannot read {files}: {_one_line(err)}"
            ) from err
    else:
        try:
            raw = datasets.load_dataset(spec.hub, spec.hub_config, split=spec.split)
        except Exception as err:  # network, missing config, bad split
            raise UserError(
                f"dataset {spec.name!r}: cannot load hub dataset {spec.hub!r}: {_one_line(err)}"
            ) from err
    if spec.recipe:
        from lit_untrac.data.recipes import RECIPES

        choose("recipe", spec.recipe, RECIPES)
        raw = RECIPES[spec.recipe](raw, spec, **spec.recipe_args)
    if spec.max_documents is not None:
        raw = raw.select(seeded_sample(len(raw), spec.max_documents, spec.seed))
    return _select_columns(raw, spec)


@contextlib.contextmanager
def _quiet_datasets():
    """Silence the ``datasets`` library's own error logs for one call."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _select_columns(raw, spec: DatasetSpec):
    if len(raw) == 0:
        raise UserError(f"dataset {spec.name!r} is empty")
    missing = [c for c in spec.columns if c not in raw.column_names]
    if missing:
        raise UserError(
            f"dataset {spec.name!r} has no field {missing[0]!r}; its fields are {raw.column_names}"
        )
    rename = {}
    if spec.format == "text":
        rename[spec.text_field] = "text"
    else:
        rename[spec.completion_field] = "completion"
        if spec.prompt_field:
            rename[spec.prompt_field] = "prompt"
    if spec.subset_field:
        rename[spec.subset_field] = "subset"
    raw = raw.select_columns(list(rename))
    raw = raw.rename_columns({k: v for k, v in rename.items() if k != v})
    if spec.subset_field and raw.features["subset"].dtype != "string":
        import datasets

        raw = raw.cast_column("subset", datasets.Value("string"))
    return raw
