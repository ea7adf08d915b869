"""Checkpoints with their learning rates, for the TracIn baseline."""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as pl
import torch

from lit_untrac.errors import UserError
from lit_untrac.results import write_json

#: The file that lists the checkpoints of a TracIn folder.
INDEX_FILE = "index.json"
#: The format tag of the index, for readers to check.
INDEX_FORMAT = "lit-untrac/tracin-checkpoints/1"


def checkpoint_file(step: int) -> str:
    return f"step_{step:07d}.pt"


class TracInCheckpoints(pl.Callback):
    """Saves the weights and the learning rate every ``every_n_steps``
    optimizer steps of any fit, for TracIn (Pruthi et al., 2020).

    Each checkpoint is ``<dirpath>/step_0000128.pt``, written with
    ``torch.save`` and readable with ``torch.load(..., weights_only=True)``:
    ``{"step": 128, "lr": 0.002, "lrs": [0.002], "weights": "model",
    "state_dict": {...}}``. ``<dirpath>/index.json`` lists them in order
    (``{"format": ..., "weights": ..., "checkpoints": [{"step", "file",
    "lr", "lrs"}]}``); :func:`lit_untrac.attribution.tracin.read_tracin_checkpoints`
    reads it.

    What is saved:

    * the weights: the state dict of ``pl_module.<submodule>`` (``model`` by
      default: lit-untrac's :class:`~lit_untrac.modules.LanguageModel` keeps
      its transformer there, so the weights load straight into the model),
      or of the whole LightningModule when it has no such submodule or
      ``submodule=None`` (``"weights": "module"`` in the index, keys as in
      ``pl_module.state_dict()``); ``torch.compile`` prefixes are removed;
    * the learning rate of the optimizer step that produced these weights
      (read before that step, so after the previous scheduler update):
      ``lrs`` has one entry per parameter group of every optimizer, ``lr``
      is the first, which TracIn uses.

    Only global rank zero writes; under data parallelism the weights are the
    same on every process. A resumed fit continues the index
    (:meth:`state_dict`).

    Args:
        dirpath: The folder; by default ``<trainer.default_root_dir>/tracin``.
        every_n_steps: Save after every n-th optimizer step (the paper: 128
            for finetuning, 10,000 for pretraining).
        save_last: Also save after the last step when it is not a multiple
            of ``every_n_steps``.
        submodule: The attribute of the LightningModule whose weights to
            save, or ``None`` for the whole module.

    Example::

        trainer = pl.Trainer(max_steps=512, callbacks=[TracInCheckpoints(every_n_steps=128)])
        trainer.fit(LanguageModel(spec), datamodule=data)
        # -> tracin/step_0000128.pt ... step_0000512.pt and tracin/index.json
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_steps: int = 128,
        save_last: bool = True,
        submodule: str | None = "model",
    ) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise UserError(f"every_n_steps={every_n_steps!r} must be an integer >= 1")
        self.dirpath = dirpath
        self.every_n_steps = every_n_steps
        self.save_last = save_last
        self.submodule = submodule
        self.checkpoints: list[dict[str, Any]] = []
        self._lrs: list[float] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "tracin")

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._lrs = [
            float(group["lr"])
            for optimizer in trainer.optimizers
            for group in optimizer.param_groups
        ]

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0:
            self._save(trainer, pl_module, step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and trainer.global_step > 0:
            self._save(trainer, pl_module, trainer.global_step)

    def _weights(self, pl_module: pl.LightningModule) -> tuple[str, dict[str, torch.Tensor]]:
        module = getattr(pl_module, self.submodule, None) if self.submodule else None
        kind = "model" if isinstance(module, torch.nn.Module) else "module"
        state = (module if kind == "model" else pl_module).state_dict()
        return kind, {
            key.replace("_orig_mod.", ""): value.detach().cpu() for key, value in state.items()
        }

    def _save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        if any(entry["step"] == step for entry in self.checkpoints):
            return
        kind, state = self._weights(pl_module)
        entry = {"step": step, "file": checkpoint_file(step), "lr": self._lrs[0], "lrs": self._lrs}
        self.checkpoints.append(entry)
        if trainer.is_global_zero:
            os.makedirs(self.dirpath, exist_ok=True)
            path = os.path.join(self.dirpath, entry["file"])
            temporary = path + ".tmp"
            torch.save(
                {
                    "step": step,
                    "lr": entry["lr"],
                    "lrs": entry["lrs"],
                    "weights": kind,
                    "state_dict": state,
                },
                temporary,
            )
            os.replace(temporary, path)
            write_json(
                os.path.join(self.dirpath, INDEX_FILE),
                {"format": INDEX_FORMAT, "weights": kind, "checkpoints": self.checkpoints},
            )

    def state_dict(self) -> dict[str, Any]:
        return {"checkpoints": [dict(entry) for entry in self.checkpoints]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.checkpoints = [dict(entry) for entry in state_dict.get("checkpoints", [])]
