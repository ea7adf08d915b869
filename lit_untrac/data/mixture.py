"""The mixture datamodule: training datasets and test datasets by name.

It serves, from one config:

* the training mixture for a fixed number of steps, sampled over the
  examples of the included datasets (:class:`SeededBatchSampler`);
* the same mixture without one dataset (``exclude``), for leave-out
  retraining;
* one dataset alone (``unlearn``), with its own batch size and epochs, for
  UnTrac (a training dataset) and UnTrac-Inv (a test dataset);
* every dataset and subset as a named evaluation set
  (:meth:`MixtureDataModule.eval_sets`), for the InfluenceTracker.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning.pytorch as pl
import torch
from torch.utils.data import ConcatDataset, DataLoader, Sampler

from lit_untrac.data.formats import Collator, Examples, tokenize
from lit_untrac.data.sources import DatasetSpec, load_raw, seeded_sample
from lit_untrac.errors import UserError


class SeededBatchSampler(Sampler[list[int]]):
    """Global batches drawn from seeded random permutations of ``range(n)``.

    Either ``epochs`` passes, each cut into batches of ``batch_size`` (the
    last batch of a pass may be smaller; no batch spans two passes), or
    ``num_batches`` batches cut from passes joined end to end ("train for
    ``num_batches`` steps on the mixture": every example is seen once per
    pass, each pass in a new order). Pass ``p`` is
    ``torch.randperm(n, generator=g)`` for a generator seeded once with
    ``seed``, so a plain loop can reproduce the order.

    Under data parallelism each process takes its share of every global batch
    (``batch[rank::world_size]``), so the global batch is the same whatever
    the number of processes.

    ``skip`` passes over the first global batches (a run resumed from a
    checkpoint has consumed them); ``len`` still counts them, as Lightning's
    restored loop does.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int = 0,
        epochs: int | None = None,
        num_batches: int | None = None,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        skip: int = 0,
    ) -> None:
        if n < 1:
            raise UserError("cannot draw batches from an empty dataset")
        if (epochs is None) == (num_batches is None):
            raise ValueError("give exactly one of epochs and num_batches")
        if batch_size < world_size:
            raise UserError(
                f"a global batch of {batch_size} cannot be shared by {world_size} processes; "
                f"use a batch size of at least {world_size}"
            )
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epochs, self.num_batches, self.shuffle = epochs, num_batches, shuffle
        self.rank, self.world_size = rank, world_size
        self.skip = skip

    def __len__(self) -> int:
        if self.num_batches is not None:
            return self.num_batches
        return self.epochs * -(-self.n // self.batch_size)

    def global_batches(self) -> Iterator[list[int]]:
        """The batches of all processes together."""
        generator = torch.Generator().manual_seed(self.seed)

        def passes() -> Iterator[list[int]]:
            while True:
                if self.shuffle:
                    yield torch.randperm(self.n, generator=generator).tolist()
                else:
                    yield list(range(self.n))

        if self.epochs is not None:
            for _, order in zip(range(self.epochs), passes()):
                for start in range(0, self.n, self.batch_size):
                    yield order[start : start + self.batch_size]
            return
        buffer: list[int] = []
        produced = 0
        for order in passes():
            buffer.extend(order)
            while len(buffer) >= self.batch_size and produced < self.num_batches:
                yield buffer[: self.batch_size]
                buffer = buffer[self.batch_size :]
                produced += 1
            if produced == self.num_batches:
                return

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        for _ in zip(range(self.skip), batches):  # consumed before a resumed run's checkpoint
            pass
        for batch in batches:
            share = batch[self.rank :: self.world_size]
            if share:
                yield share


def _as_specs(specs: list[DatasetSpec | dict] | None) -> list[DatasetSpec]:
    return [s if isinstance(s, DatasetSpec) else DatasetSpec(**s) for s in (specs or [])]


class MixtureDataModule(pl.LightningDataModule):
    """Training and test datasets by name, served for training, leave-out,
    unlearning and evaluation.

    Args:
        train: The training datasets.
        test: The test datasets.
        tokenizer: A tokenizer name or folder (``bytes`` for the byte-level
            one). By default the tokenizer of the LightningModule being
            trained (its ``tokenizer`` attribute).
        block_size: Tokens per block for ``text`` datasets.
        max_length: Longest prompt-completion example; longer prompts are cut
            from the left. Defaults to the model's positions.
        batch_size: Batch size of the training mixture.
        train_steps: Steps of the training mixture; by default one pass over
            the included examples.
        exclude: A training dataset to leave out of the mixture.
        unlearn: A dataset (training or test, or ``test/subset``) to serve
            alone as the training data, for unlearning.
        unlearn_batch_size: Batch size when unlearning.
        unlearn_epochs: Passes over the unlearned dataset.
        eval_batch_size: Examples per evaluation batch.
        attribution_samples: If set, attribution uses a seeded sample of this
            many examples of each training dataset (unlearned by UnTrac,
            evaluated by UnTrac-Inv); the mixture always uses them all.
        sample_seed: The seed of that sample (a different one per run).
        seed: The seed of the data order.
        num_workers: DataLoader workers.
        cache_dir: Keep each tokenised dataset here, keyed by its spec, the
            tokenizer and the block size, so that later jobs of an
            experiment read it instead of tokenising again.
    """

    def __init__(
        self,
        train: list[DatasetSpec],
        test: list[DatasetSpec] | None = None,
        tokenizer: str | None = None,
        block_size: int = 1024,
        max_length: int | None = None,
        batch_size: int = 8,
        train_steps: int | None = None,
        exclude: str | None = None,
        unlearn: str | None = None,
        unlearn_batch_size: int = 1,
        unlearn_epochs: int = 1,
        eval_batch_size: int = 32,
        attribution_samples: int | None = None,
        sample_seed: int = 0,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.train_specs = _as_specs(train)
        self.test_specs = _as_specs(test)
        if not self.train_specs:
            raise UserError("the mixture needs at least one training dataset")
        names = [s.name for s in self.train_specs + self.test_specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UserError(
                f"dataset name(s) {duplicates} appear more than once; a test set cannot also be "
                "a training set, and every name must be unique"
            )
        for name, value in (
            ("batch_size", batch_size),
            ("unlearn_batch_size", unlearn_batch_size),
            ("unlearn_epochs", unlearn_epochs),
            ("eval_batch_size", eval_batch_size),
        ):
            if value < 1:
                raise UserError(f"{name}={value} must be >= 1")
        if train_steps is not None and train_steps < 1:
            raise UserError(f"train_steps={train_steps} must be >= 1")
        self.tokenizer_name = tokenizer
        self.block_size = block_size
        self.max_length = max_length
        self.batch_size = batch_size
        self.train_steps = train_steps
        self.unlearn_batch_size = unlearn_batch_size
        self.unlearn_epochs = unlearn_epochs
        self.eval_batch_size = eval_batch_size
        self.attribution_samples = attribution_samples
        self.sample_seed = sample_seed
        self.seed = seed
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self._unsaved: dict[str, list[dict]] = {}
        self.exclude: str | None = None
        self.unlearn: str | None = None
        self.configure(exclude=exclude, unlearn=unlearn)
        self.tokenizer = None
        self.encoder_decoder = False
        self._examples: dict[str, Examples] = {}

    # ---- what to serve -------------------------------------------------

    @property
    def train_names(self) -> list[str]:
        return [s.name for s in self.train_specs]

    @property
    def test_names(self) -> list[str]:
        return [s.name for s in self.test_specs]

    def configure(
        self, exclude: str | None = None, unlearn: str | None = None
    ) -> MixtureDataModule:
        """Choose what ``train_dataloader`` serves: the mixture (without
        ``exclude``) or one dataset alone (``unlearn``)."""
        if exclude is not None and exclude not in self.train_names:
            raise UserError(
                f"cannot exclude unknown dataset {exclude!r}; the training datasets are {self.train_names}"
            )
        if unlearn is not None:
            base = unlearn.split("/", 1)[0]
            if base not in self.train_names + self.test_names:
                raise UserError(
                    f"cannot unlearn unknown dataset {unlearn!r}; the datasets are "
                    f"{self.train_names + self.test_names}"
                )
            if exclude is not None:
                raise UserError(
                    f"unlearning {unlearn!r} and excluding {exclude!r} contradict each other: "
                    "unlearning starts from a model trained on the whole mixture"
                )
        if exclude is not None and len(self.train_names) == 1:
            raise UserError(f"excluding {exclude!r} would leave an empty mixture")
        self.exclude, self.unlearn = exclude, unlearn
        return self

    # ---- tokenisation ---------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is None:
            module = self.trainer.lightning_module if self.trainer is not None else None
            if self.tokenizer_name is None and getattr(module, "tokenizer", None) is None:
                raise UserError(
                    "the datamodule needs a tokenizer: set data.tokenizer, or train a module "
                    "with a 'tokenizer' attribute"
                )
            model = getattr(module, "model", None)
            self.prepare(
                tokenizer=self.tokenizer_name or module.tokenizer,
                encoder_decoder=bool(
                    getattr(getattr(model, "config", None), "is_encoder_decoder", False)
                ),
                max_positions=_max_positions(model),
            )
        self._save_cache()

    def _save_cache(self) -> None:
        """Write the datasets tokenised since the last call to the cache. This
        waits for a Trainer's ``setup``, so that input refused before any job
        starts leaves nothing on disk."""
        for key, rows in self._unsaved.items():
            _write_cache(self.cache_dir, key, rows)
        self._unsaved = {}

    def prepare(
        self, tokenizer, encoder_decoder: bool = False, max_positions: int | None = None
    ) -> MixtureDataModule:
        """Read and tokenise every dataset once. ``tokenizer`` is a tokenizer
        object or a name for :func:`lit_untrac.models.load_tokenizer`."""
        if isinstance(tokenizer, str):
            from lit_untrac.models import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        if (
            max_positions is not None
            and self.block_size > max_positions
            and any(s.format == "text" for s in self.train_specs + self.test_specs)
        ):
            raise UserError(
                f"block_size={self.block_size} is larger than the model's {max_positions} positions"
            )
        max_length = self.max_length or max_positions
        self.tokenizer, self.encoder_decoder = tokenizer, encoder_decoder
        for spec in self.train_specs + self.test_specs:
            if spec.name not in self._examples:
                key = _cache_key(spec, tokenizer, self.block_size, encoder_decoder, max_length)
                rows = _read_cache(self.cache_dir, key)
                if rows is None:
                    raw = load_raw(spec)
                    rows = tokenize(
                        raw, spec, tokenizer, self.block_size, encoder_decoder, max_length
                    )
                    rows = [rows[i] for i in seeded_sample(len(rows), spec.max_examples, spec.seed)]
                    if not rows:
                        raise UserError(
                            f"dataset {spec.name!r} has no examples after tokenisation "
                            f"(texts shorter than block_size={self.block_size}?)"
                        )
                    self._unsaved[key] = rows
                self._examples[spec.name] = Examples(rows, spec.name)
        return self

    def _require_prepared(self) -> None:
        if self.tokenizer is None:
            raise RuntimeError("call setup() or prepare(tokenizer) before asking for data")

    @property
    def collator(self) -> Collator:
        self._require_prepared()
        return Collator(pad_token_id=self.tokenizer.pad_token_id)

    def examples(self, name: str) -> Examples:
        """All examples of a dataset, or of one subset (``name/subset``)."""
        self._require_prepared()
        base, _, subset = name.partition("/")
        if base not in self._examples:
            raise UserError(f"unknown dataset {name!r}; the datasets are {list(self._examples)}")
        examples = self._examples[base]
        if subset:
            subsets = examples.subsets() if examples.rows and "subset" in examples.rows[0] else {}
            if subset not in subsets:
                raise UserError(
                    f"dataset {base!r} has no subset {subset!r}; it has {sorted(subsets)}"
                )
            return subsets[subset]
        return examples

    def attribution_examples(self, name: str) -> Examples:
        """The examples attribution uses: a training dataset's seeded sample
        (``attribution_samples``), or all of a test dataset."""
        examples = self.examples(name)
        if name.split("/", 1)[0] in self.train_names:
            return examples.select(
                seeded_sample(len(examples), self.attribution_samples, self.sample_seed)
            )
        return examples

    def eval_sets(self, group: str = "test") -> dict[str, Examples]:
        """Named evaluation sets: every test (or training) dataset, a dataset
        with subsets as one set per subset (``name/subset``)."""
        if group not in ("test", "train"):
            raise UserError(f"unknown evaluation group {group!r}; expected 'test' or 'train'")
        names = self.test_names if group == "test" else self.train_names
        sets: dict[str, Examples] = {}
        for name in names:
            examples = self.attribution_examples(name)
            if examples.rows and "subset" in examples.rows[0]:
                sets.update({f"{name}/{key}": subset for key, subset in examples.subsets().items()})
            else:
                sets[name] = examples
        return sets

    def mixture_names(self) -> list[str]:
        return [n for n in self.train_names if n != self.exclude]

    def mixture_size(self, exclude: str | None = None) -> int:
        """Examples in the mixture without ``exclude``."""
        self._require_prepared()
        return sum(len(self._examples[n]) for n in self.train_names if n != exclude)

    # ---- loaders ------------------------------------------------------------

    def _distribution(self) -> tuple[int, int, int]:
        """(rank, world size, global batches already consumed by a resumed run,
        over all its epochs)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1, 0
        restoring = trainer.fit_loop.restarting  # a fit resumed from a checkpoint
        consumed = trainer.global_step * trainer.accumulate_grad_batches if restoring else 0
        if consumed:
            import warnings

            # Lightning warns that a plain dataloader cannot resume mid-epoch;
            # this one skips the batches the checkpoint has consumed.
            warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
        return trainer.global_rank, trainer.world_size, consumed

    def _loader(
        self, dataset, batch_size: int | None = None, batch_sampler: Sampler | None = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size if batch_sampler is None else 1,
            batch_sampler=batch_sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """The mixture (without ``exclude``), or the ``unlearn`` dataset alone.

        The loader shards every global batch across processes itself, so set
        ``use_distributed_sampler=False`` on a distributed trainer (the
        lit-untrac commands do).
        """
        self._require_prepared()
        rank, world_size, consumed = self._distribution()
        if self.unlearn is not None:
            examples = self.attribution_examples(self.unlearn)
            sampler = SeededBatchSampler(
                len(examples),
                self.unlearn_batch_size,
                self.seed,
                epochs=self.unlearn_epochs,
                rank=rank,
                world_size=world_size,
            )
            sampler.skip = consumed % len(sampler)  # within the current epoch
            return self._loader(examples, batch_sampler=sampler)
        mixture = ConcatDataset([self._examples[n] for n in self.mixture_names()])
        steps = self.train_steps or -(-len(mixture) // self.batch_size)
        sampler = SeededBatchSampler(
            len(mixture),
            self.batch_size,
            self.seed,
            num_batches=steps,
            rank=rank,
            world_size=world_size,
        )
        sampler.skip = consumed % len(sampler)  # within the current epoch
        return self._loader(mixture, batch_sampler=sampler)

    def val_dataloader(self) -> dict[str, DataLoader] | list:
        """Every test set (and subset), for ``validate`` and validation in ``fit``."""
        if not self.test_specs:
            return []
        return {
            name: self._loader(examples, self.eval_batch_size)
            for name, examples in self.eval_sets("test").items()
        }

    def test_dataloader(self) -> dict[str, DataLoader] | list:
        """The same as :meth:`val_dataloader`, for ``lit-untrac test``."""
        return self.val_dataloader()


def _cache_key(
    spec: DatasetSpec, tokenizer, block_size: int, encoder_decoder: bool, max_length
) -> str:
    """A hash of everything a dataset's tokenised examples depend on."""
    import dataclasses
    import hashlib
    import json

    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = (
        backend.to_str()
        if backend is not None
        else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    )
    text = json.dumps(
        {
            "spec": dataclasses.asdict(spec),
            "files": _file_stamps(spec.files),
            "tokenizer": hashlib.sha256(vocabulary.encode()).hexdigest(),
            "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
            "block_size": block_size,
            "encoder_decoder": encoder_decoder,
            "max_length": max_length,
            "version": 1,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _file_stamps(files) -> list:
    """Size and modification time of local source files: an edited file is
    tokenised again rather than read stale from the cache."""
    import os

    if not files:
        return []
    paths = [files] if isinstance(files, str) else list(files)
    return [
        (path, os.path.getsize(path), os.path.getmtime(path))
        for path in paths
        if os.path.isfile(path)
    ]


def _read_cache(cache_dir: str | None, key: str) -> list[dict] | None:
    if cache_dir is None:
        return None
    import os

    path = os.path.join(cache_dir, f"{key}.pt")
    if not os.path.isfile(path):
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged cache file is tokenised again
        return None
    return [{k: (v.long() if torch.is_tensor(v) else v) for k, v in row.items()} for row in stored]


def _write_cache(cache_dir: str | None, key: str, rows: list[dict]) -> None:
    """Store int32 token ids (half the bytes), through a temporary file and a rename."""
    if cache_dir is None:
        return
    import os
    import tempfile

    os.makedirs(cache_dir, exist_ok=True)
    stored = [{k: (v.int() if torch.is_tensor(v) else v) for k, v in row.items()} for row in rows]
    handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir)
    os.close(handle)
    torch.save(stored, temporary)
    os.replace(temporary, os.path.join(cache_dir, f"{key}.pt"))


def _max_positions(model) -> int | None:
    if model is None:
        return None
    from lit_untrac.models import max_positions

    return max_positions(model)
