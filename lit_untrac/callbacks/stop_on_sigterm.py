"""Stop a fit at the end of the step in which SIGTERM arrived.

Lightning notes a SIGTERM as soon as it arrives but, in a single process,
acts on it only when the epoch ends. Every lit-untrac job is one long epoch
(hundreds of steps), so a ``kill`` or a scheduler's preemption would go
unheeded for minutes. With this callback the fit stops after the current
step instead: it first writes the resume checkpoint of the fit's
``ModelCheckpoint`` (``last.ckpt``, when one keeps it), so that running the
same command again continues from that step, and then exits with status
143 (128 + SIGTERM), as a process killed by the signal would.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

#: The exit status of a process ended by SIGTERM.
EXIT_STATUS = 128 + signal.SIGTERM


class StopOnSigterm(pl.Callback):
    """End the fit after the step in which SIGTERM arrived, keeping a resume checkpoint."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if not getattr(trainer, "received_sigterm", False):
            return
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last and callback.dirpath:
                path = os.path.join(callback.dirpath, callback.CHECKPOINT_NAME_LAST + ".ckpt")
                trainer.save_checkpoint(path)
                print(f"SIGTERM: stopped at step {trainer.global_step}; {path} resumes it")
        raise SIGTERMException(EXIT_STATUS)
