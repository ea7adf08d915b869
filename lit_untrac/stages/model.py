"""``lit-untrac train``: train theta_0 into ``<output_dir>/model``.

The folder holds the exported model (``model/export``, what every other
stage loads), Lightning checkpoints, the TracIn checkpoints when ``tracin``
is among ``baselines.methods`` (``model/tracin``, every
``baselines.tracin_every_n_steps`` steps), the resolved ``config.yaml`` and
``done.json``. A training killed part-way resumes from
``model/checkpoints/last.ckpt`` (kept every
``ground_truth.checkpoint_every_n_steps`` steps, as for the leave-out
retrainings). A finished model is not trained again; with ``pretrained``
set, theta_0 is given and there is nothing to train.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from lit_untrac.stages.common import Context, parse

MODEL_FOLDER = "model"


def model_folder(ctx: Context) -> str:
    return os.path.join(ctx.output_dir, MODEL_FOLDER)


def tracin_folder(ctx: Context) -> str:
    """Where theta_0's TracIn checkpoints are: ``baselines.tracin_dir`` or ``model/tracin``."""
    return ctx.cfg.baselines.tracin_dir or os.path.join(model_folder(ctx), "tracin")


def train_theta0(ctx: Context, callbacks: Sequence[Any] = ()) -> str | None:
    """Train theta_0 (unless it is given or done); returns the model folder,
    or ``None`` when ``pretrained`` is set."""
    from lit_untrac.attribution import resolve_methods
    from lit_untrac.callbacks.tracin_checkpoints import TracInCheckpoints
    from lit_untrac.results import is_done, mark_done
    from lit_untrac.stages.common import discard_checkpoints
    from lit_untrac.stages.training import train_language_model

    cfg = ctx.cfg
    if cfg.pretrained is not None:
        print(f"theta_0 is given (pretrained={cfg.pretrained!r}): nothing to train")
        return None
    folder = model_folder(ctx)
    if is_done(folder):
        print(f"theta_0 is already trained in {folder}")
        return folder
    methods = resolve_methods(cfg.baselines.methods)
    callbacks = list(callbacks)
    if "tracin" in methods:
        callbacks.append(
            TracInCheckpoints(tracin_folder(ctx), every_n_steps=cfg.baselines.tracin_every_n_steps)
        )
    ctx.save_config(folder)
    start = time.perf_counter()
    module, _ = train_language_model(
        ctx,
        folder,
        callbacks=callbacks,
        run_name="theta_0",
        checkpoint_every_n_steps=cfg.ground_truth.checkpoint_every_n_steps,
    )
    seconds = time.perf_counter() - start
    discard_checkpoints(folder)
    mark_done(
        folder,
        global_step=module.trainer.global_step,
        seconds=round(seconds, 3),
        tracin=tracin_folder(ctx) if "tracin" in methods else None,
    )
    print(f"theta_0 trained in {seconds:.1f} s ({module.trainer.global_step} steps): {folder}")
    return folder


def train_command(args: Sequence[str]) -> None:
    """Entry point of ``lit-untrac train``."""
    train_theta0(parse(args, prog="lit-untrac train", description=__doc__.splitlines()[0]))
