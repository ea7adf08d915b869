"""InfluenceTracker: the loss of every named evaluation set, and its change
since step 0, at every step of a training or unlearning run (the paper's
Eq. 2 for UnTrac, Eq. 4 for UnTrac-Inv)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from lit_untrac.data.formats import Collator
from lit_untrac.errors import UserError, choose
from lit_untrac.modules.losses import EvalSet, reduce_loss
from lit_untrac.results import CURVE_COLUMNS, INFLUENCE_COLUMNS, write_csv

REDUCTIONS = ("sum", "mean")
GROUPS = ("test", "train")

#: ``loss_fn(module, batch)``: per-example losses ``[B]`` of a collated batch.
LossFn = Callable[[pl.LightningModule, dict[str, torch.Tensor]], torch.Tensor]


class InfluenceTracker(Callback):
    r"""Evaluates named sets before the first step and every ``every_n_steps``
    steps, and records how their loss moved since step 0.

    At step ``t`` (``t = 0`` is the model before the first step, theta_0) the
    loss of a set Z is

    * ``reduction="sum"``: sum_{z in Z} L(z, theta_t), the paper's sum; with an
      evaluation batch of one example it is exactly the reference code's sum
      over batches of the batch-mean loss;
    * ``reduction="mean"``: that sum divided by the number of examples in Z;

    where L(z, theta) is an example's mean token loss. The *influence* at step
    ``t`` is ``loss(Z, theta_t) - loss(Z, theta_0)`` (exactly 0 at step 0).
    Unlearning a training dataset and tracking the test sets (``group="test"``)
    gives UnTrac's I(Z', Z) (Eq. 2); unlearning a test set and tracking the
    training datasets (``group="train"``) gives UnTrac-Inv's I'(Z', Z) (Eq. 4).

    Evaluation data is tokenised and collated once, in batches of similar
    length, and kept on the device; each evaluation runs the unwrapped module
    in eval mode, under ``torch.no_grad()`` and the trainer's precision, then
    restores the train mode. Sums are float64 over examples and tokens; under
    data parallelism each process evaluates its share of the batches and the
    sums are reduced across processes. The last step is always evaluated.

    The tracker logs ``eval_loss/<name>`` and ``influence/<name>`` to every
    logger of the trainer at the step they belong to, keeps its curves in its
    state (a run resumed from a checkpoint continues them), and when training
    ends writes ``curves.csv`` and ``influence.csv`` (the schemas of
    :mod:`lit_untrac.results`) to ``dirpath``. If training stops with an
    exception (a :class:`~lit_untrac.modules.NonFiniteLossError`, say),
    ``curves.csv`` holds the steps evaluated so far. With a ``WandbLogger``,
    the influence table and the curves as a line series are logged to W&B
    when training ends.

    Args:
        group: Which evaluation sets of the datamodule to track
            (``datamodule.eval_sets(group)``) and which side of
            ``influence.csv`` they stand on: ``test`` for UnTrac (the tracked
            sets are test sets, the unlearned dataset a training dataset),
            ``train`` for UnTrac-Inv.
        sets: Named sets to track instead of the datamodule's: each a sequence
            of examples, dicts of 1-D tensors ``input_ids`` and ``labels``
            (``-100`` where there is no loss). Needs ``collator`` or
            ``pad_token_id``.
        collator: Turns a list of examples into a batch; by default a
            :class:`~lit_untrac.data.formats.Collator` with ``pad_token_id``,
            or the datamodule's.
        pad_token_id: The padding token id, for the default collator.
        loss_fn: ``loss_fn(module, batch)`` returns the per-example losses
            ``[B]`` of a collated batch (``input_ids``, ``attention_mask``,
            ``labels``). By default the module's ``example_losses(batch)``; a
            module with only a scalar ``loss(batch)`` is evaluated one example
            per batch, where the batch loss is the example's loss.
        every_n_steps: Evaluate every this many optimizer steps.
        reduction: ``sum`` (the paper) or ``mean`` over examples.
        eval_batch_size: Examples per evaluation batch, at most.
        eval_max_tokens: Padded tokens per evaluation batch, at most.
        method: The ``method`` column of the files; ``untrac`` for
            ``group="test"`` and ``untrac_inv`` for ``group="train"`` by default.
        unlearned: The name of the dataset being unlearned (the ``unlearned``
            column); by default the datamodule's ``unlearn`` setting, else
            ``training``.
        dirpath: Where to write the files; ``trainer.default_root_dir`` by
            default.

    Example::

        import lightning.pytorch as pl
        from lit_untrac import MixtureDataModule, UnlearningModule
        from lit_untrac.callbacks import InfluenceTracker

        data = MixtureDataModule(train=[...], test=[...], unlearn="train_1")
        tracker = InfluenceTracker(group="test", every_n_steps=1)
        trainer = pl.Trainer(max_epochs=1, callbacks=[tracker])
        trainer.fit(UnlearningModule("runs/tiny/model/export"), datamodule=data)
        tracker.influence()  # {"test": I(test, train_1)}
    """

    def __init__(
        self,
        group: Literal["test", "train"] = "test",
        sets: Mapping[str, Sequence[dict]] | None = None,
        collator: Callable[[list[dict]], dict[str, torch.Tensor]] | None = None,
        pad_token_id: int | None = None,
        loss_fn: LossFn | None = None,
        every_n_steps: int = 1,
        reduction: Literal["sum", "mean"] = "sum",
        eval_batch_size: int = 64,
        eval_max_tokens: int | None = None,
        method: str | None = None,
        unlearned: str | None = None,
        dirpath: str | None = None,
    ) -> None:
        super().__init__()
        choose("evaluation group", group, GROUPS)
        choose("reduction", reduction, REDUCTIONS)
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise UserError(f"every_n_steps={every_n_steps!r} must be an integer >= 1")
        if eval_batch_size < 1:
            raise UserError(f"eval_batch_size={eval_batch_size} must be >= 1")
        if eval_max_tokens is not None and eval_max_tokens < 1:
            raise UserError(f"eval_max_tokens={eval_max_tokens} must be >= 1 or unset")
        if sets is not None:
            if not sets:
                raise UserError("sets is empty: give at least one named set to track")
            empty = sorted(name for name, examples in sets.items() if len(examples) == 0)
            if empty:
                raise UserError(f"set(s) {empty} have no examples")
            if collator is None and pad_token_id is None:
                raise UserError("explicit sets need a collator or a pad_token_id to batch them")
        if loss_fn is not None and not callable(loss_fn):
            raise UserError(f"loss_fn must be callable as loss_fn(module, batch), got {loss_fn!r}")
        self.group = group
        self.sets = sets
        self.collator = collator
        self.pad_token_id = pad_token_id
        self.loss_fn = loss_fn
        self.every_n_steps = every_n_steps
        self.reduction = reduction
        self.eval_batch_size = eval_batch_size
        self.eval_max_tokens = eval_max_tokens
        self.method = method or ("untrac" if group == "test" else "untrac_inv")
        self.unlearned = unlearned
        self.dirpath = dirpath
        #: The evaluated steps, and each set's loss at each of them.
        self.steps: list[int] = []
        self.losses: dict[str, list[float]] = {}
        self._eval_sets: list[EvalSet] = []
        self._counts: torch.Tensor | None = None
        self._evaluate_batch: LossFn | None = None
        self._total_steps = float("inf")

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            group=self.group,
            method=self.method,
            reduction=self.reduction,
            every_n_steps=self.every_n_steps,
        )

    # ---- results -------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.losses)

    def deltas(self, name: str) -> list[float]:
        """The influence curve of one set: its loss at each step minus at step 0."""
        losses = self.losses[name]
        return [loss - losses[0] for loss in losses]

    def influence(self) -> dict[str, float]:
        """Each set's loss at the last evaluated step minus at step 0."""
        return {name: self.deltas(name)[-1] for name in self.names if self.losses[name]}

    def curve_rows(self) -> list[dict[str, Any]]:
        """Rows of ``curves.csv``: ``method,unlearned,evaluated,step,loss,delta``."""
        return [
            {
                "method": self.method,
                "unlearned": self._unlearned_name(),
                "evaluated": name,
                "step": step,
                "loss": loss,
                "delta": delta,
            }
            for name in self.names
            for step, loss, delta in zip(self.steps, self.losses[name], self.deltas(name))
        ]

    def influence_rows(self) -> list[dict[str, Any]]:
        """Rows of ``influence.csv``: ``method,train_dataset,test_dataset,influence``."""
        unlearned = self._unlearned_name()
        rows = []
        for name, value in self.influence().items():
            train, test = (unlearned, name) if self.group == "test" else (name, unlearned)
            rows.append(
                {
                    "method": self.method,
                    "train_dataset": train,
                    "test_dataset": test,
                    "influence": value,
                }
            )
        return rows

    def write(self, dirpath: str, influence: bool = True) -> None:
        """Write ``curves.csv`` (and ``influence.csv``) to ``dirpath``, atomically."""
        write_csv(os.path.join(dirpath, "curves.csv"), self.curve_rows(), CURVE_COLUMNS)
        if influence:
            write_csv(
                os.path.join(dirpath, "influence.csv"), self.influence_rows(), INFLUENCE_COLUMNS
            )

    # ---- state ---------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "losses": {name: list(values) for name, values in self.losses.items()},
            "reduction": self.reduction,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("reduction", self.reduction) != self.reduction:
            raise UserError(
                f"the checkpoint's tracker used reduction={state_dict['reduction']!r}, this one "
                f"{self.reduction!r}; resume with the same reduction"
            )
        self.steps = list(state_dict["steps"])
        self.losses = {name: list(values) for name, values in state_dict["losses"].items()}

    # ---- hooks ---------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._evaluate_batch, batch_size = self._resolve_loss(pl_module)
        sets, collator = self._named_sets(trainer)
        device = trainer.strategy.root_device
        self._eval_sets = [
            EvalSet.build(name, examples, collator, batch_size, self.eval_max_tokens).to(device)
            for name, examples in sets.items()
        ]
        rank, world_size = trainer.global_rank, trainer.world_size
        self._counts = torch.tensor(
            [
                sum(int(b["input_ids"].size(0)) for b in s.batches[rank::world_size])
                for s in self._eval_sets
            ],
            dtype=torch.float64,
            device=device,
        )
        if self.unlearned is None:
            self.unlearned = getattr(trainer.datamodule, "unlearn", None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._total_steps = trainer.estimated_stepping_batches
        names = [eval_set.name for eval_set in self._eval_sets]
        if self.losses and sorted(self.losses) != sorted(names):
            raise UserError(
                f"the restored curves track {sorted(self.losses)} but the sets now are "
                f"{sorted(names)}; resume with the same evaluation sets"
            )
        if not self.steps:  # a resumed run keeps its step 0
            self._evaluate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self.steps and self.steps[-1] == step:
            return  # no optimizer step since the last evaluation (gradient accumulation)
        if step % self.every_n_steps == 0 or step >= self._total_steps:
            self._evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.steps and self.steps[-1] != trainer.global_step:  # stopped early
            self._evaluate(trainer, pl_module)
        if trainer.is_global_zero:
            self.write(self._dirpath(trainer))
            self._log_summary(trainer)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if trainer.is_global_zero and self.steps:
            self.write(self._dirpath(trainer), influence=False)

    # ---- evaluation ----------------------------------------------------

    def _resolve_loss(self, pl_module: pl.LightningModule) -> tuple[LossFn, int]:
        """The per-example loss function, and the evaluation batch size it allows."""
        if self.loss_fn is not None:
            return self.loss_fn, self.eval_batch_size
        if callable(getattr(pl_module, "example_losses", None)):
            return _module_example_losses, self.eval_batch_size
        if callable(getattr(pl_module, "loss", None)):
            return _module_loss_of_one, 1
        raise UserError(
            f"{type(pl_module).__name__} has neither example_losses(batch) nor loss(batch); "
            "give the tracker loss_fn=lambda module, batch: <per-example losses [B]>"
        )

    def _named_sets(self, trainer: pl.Trainer) -> tuple[Mapping[str, Sequence[dict]], Callable]:
        if self.sets is not None:
            return self.sets, self.collator or Collator(pad_token_id=self.pad_token_id)
        datamodule = trainer.datamodule
        if datamodule is None or not callable(getattr(datamodule, "eval_sets", None)):
            raise UserError(
                "the tracker needs named sets: train with a MixtureDataModule "
                "(its eval_sets) or give sets={name: examples} and a pad_token_id"
            )
        sets = datamodule.eval_sets(self.group)
        if not sets:
            raise UserError(f"the datamodule has no {self.group} datasets to track")
        return sets, self.collator or datamodule.collator

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.global_step
        totals, counts = self._sums(trainer, pl_module).tolist()
        self.steps.append(step)
        metrics: dict[str, float] = {}
        for eval_set, total, count in zip(self._eval_sets, totals, counts):
            curve = self.losses.setdefault(eval_set.name, [])
            curve.append(reduce_loss(total, int(count), self.reduction))
            metrics[f"eval_loss/{eval_set.name}"] = curve[-1]
            metrics[f"influence/{eval_set.name}"] = curve[-1] - curve[0]
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def _sums(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> torch.Tensor:
        """``[2, S]`` float64: each set's summed example losses and its example
        count, over this process's share of batches, reduced over processes."""
        modes = [(module, module.training) for module in pl_module.modules()]
        pl_module.eval()
        rank, world_size = trainer.global_rank, trainer.world_size
        totals = torch.zeros(len(self._eval_sets), dtype=torch.float64, device=self._counts.device)
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                for i, eval_set in enumerate(self._eval_sets):
                    for batch in eval_set.batches[rank::world_size]:
                        losses = self._evaluate_batch(pl_module, batch)
                        if losses.shape != batch["input_ids"].shape[:1]:
                            raise UserError(
                                f"loss_fn returned shape {tuple(losses.shape)} for a batch of "
                                f"{batch['input_ids'].size(0)}; it must return one loss per example"
                            )
                        totals[i] += losses.double().sum()
        finally:
            for module, training in modes:
                module.training = training
        return trainer.strategy.reduce(torch.stack([totals, self._counts]), reduce_op="sum")

    # ---- output --------------------------------------------------------

    def _unlearned_name(self) -> str:
        return self.unlearned or "training"

    def _dirpath(self, trainer: pl.Trainer) -> str:
        return self.dirpath or trainer.default_root_dir

    def _log_summary(self, trainer: pl.Trainer) -> None:
        """The influence table and the curves as a line series, to W&B."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            import wandb

            rows = self.influence_rows()
            logger.log_table(
                key="influence",
                columns=list(INFLUENCE_COLUMNS),
                data=[[row[c] for c in INFLUENCE_COLUMNS] for row in rows],
            )
            plot = wandb.plot.line_series(
                xs=self.steps,
                ys=[self.deltas(name) for name in self.names],
                keys=self.names,
                title=f"{self.method}: influence while unlearning {self._unlearned_name()}",
                xname="step",
            )
            logger.experiment.log({"influence_curves": plot})


def _module_example_losses(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return module.example_losses(batch)


def _module_loss_of_one(module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return module.loss(batch).reshape(1)
