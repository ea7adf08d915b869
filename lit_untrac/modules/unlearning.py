"""Gradient ascent on a dataset: the update rule of UnTrac and UnTrac-Inv."""

from __future__ import annotations

from typing import Any, Literal

import torch

from lit_untrac.errors import UserError
from lit_untrac.models import ModelSpec
from lit_untrac.modules.language_model import LanguageModel

PAPER_OPTIMIZER_ARGS = {"lr": 5e-5, "betas": (0.9, 0.999)}


class NonFiniteLossError(RuntimeError):
    """Gradient ascent diverged: the unlearned loss is no longer finite."""


def check_no_clipping(gradient_clip_val: float | None) -> None:
    """Refuse gradient clipping: it would silently change the unlearning method."""
    if gradient_clip_val is not None and gradient_clip_val > 0:
        raise UserError(
            f"gradient_clip_val={gradient_clip_val} is set on the trainer; unlearning must not "
            "clip gradients, since clipping silently changes the method: remove gradient_clip_val"
        )


class UnlearningModule(LanguageModel):
    """Unlearns a dataset by gradient ascent, starting from a trained model theta_0.

    The update minimises the negated loss, -L(z, theta), with any torch
    optimizer; the logged ``unlearn/loss`` is the true, positive loss, logged
    where the trainer's loggers write (every ``log_every_n_steps`` and at the
    last step). The defaults are the paper's: Adam with betas (0.9, 0.999)
    and a constant learning rate of 5e-5.

    Gradient clipping on the trainer is refused: it would silently change
    the method. A non-finite loss stops the run with
    :class:`NonFiniteLossError`; an attached InfluenceTracker keeps and writes
    the curves up to that step.

    Args:
        model: theta_0: a ``save_pretrained`` folder (the ``export`` of a
            :class:`LanguageModel`), a hub id, a packaged model or a
            Lightning ``.ckpt``.
        optimizer: A ``torch.optim`` class name or dotted path.
        optimizer_args: Its arguments.
        scheduler, warmup_steps, gradient_checkpointing, compile: As for
            :class:`LanguageModel`.
    """

    def __init__(
        self,
        model: ModelSpec | dict[str, Any] | str | None = None,
        optimizer: str = "Adam",
        optimizer_args: dict[str, Any] | None = None,
        scheduler: Literal["constant", "linear", "cosine"] = "constant",
        warmup_steps: int = 0,
        gradient_checkpointing: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            model=model,
            optimizer=optimizer,
            optimizer_args=dict(PAPER_OPTIMIZER_ARGS) if optimizer_args is None else optimizer_args,
            scheduler=scheduler,
            warmup_steps=warmup_steps,
            export=False,
            gradient_checkpointing=gradient_checkpointing,
            compile=compile,
        )
        self._total_steps = float("inf")

    def setup(self, stage: str) -> None:
        check_no_clipping(self.trainer.gradient_clip_val)

    def on_train_start(self) -> None:
        self._total_steps = self.trainer.estimated_stepping_batches

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the unlearned loss became {loss.item()} at step {self.global_step}: gradient ascent "
                "diverged; lower the learning rate or the number of steps"
            )
        if self._logs_this_step():
            self.log("unlearn/loss", loss, prog_bar=True, batch_size=batch["input_ids"].size(0))
        return -loss

    def _logs_this_step(self) -> bool:
        """Log where the loggers write (every ``log_every_n_steps``, and the
        last step): a ``self.log`` call costs about a tenth of a tiny model's
        step on CPU, and logging every step would add it to every step."""
        step = self.global_step + 1  # the step this batch makes
        every = self.trainer.log_every_n_steps
        return step % every == 0 or step >= self._total_steps
