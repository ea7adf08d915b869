"""Training a language model from the experiment config: theta_0, and the
leave-out retrainings of the ground truth, which must match theta_0 in
everything but the data they leave out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lit_untrac.errors import UserError
from lit_untrac.stages.common import Context, build_datamodule, build_trainer, resumable


def training_seeds(ctx: Context, seed_offset: int = 0, vary_init: bool = True) -> tuple[int, int]:
    """(initialisation seed, data-order and dropout seed) of a training run.

    Seed offset 0 is theta_0 itself. Another offset changes the data order
    and dropout, and the initialisation too when ``vary_init``.
    """
    base = ctx.cfg.seed_everything
    return (base + seed_offset if vary_init else base), base + seed_offset


def train_language_model(
    ctx: Context,
    folder: str,
    exclude: str | None = None,
    train_steps: int | None = None,
    seed_offset: int = 0,
    vary_init: bool = True,
    callbacks: Sequence[Any] = (),
    export: bool = True,
    run_name: str | None = None,
    trainer_overrides: dict[str, Any] | None = None,
    checkpoint_every_n_steps: int | None = None,
):
    """Train the config's ``model`` on the ``data`` mixture (without ``exclude``).

    The same config, seed and step count as theta_0 give the same
    initialisation and, apart from the left-out data, the same training run.
    ``trainer_overrides`` replace Trainer settings of the config (for
    example ``enable_checkpointing=False`` for throw-away retrainings). With
    ``checkpoint_every_n_steps``, a run killed part-way resumes from
    ``<folder>/checkpoints/last.ckpt`` when called again.

    Returns:
        ``(module, datamodule)`` after training; the module in eval mode.
    """
    import lightning.pytorch as pl

    from lit_untrac.modules import LanguageModel

    if ctx.cfg.model.model is None:
        raise UserError("training needs a model section: model.model names the model to train")
    init_seed, run_seed = training_seeds(ctx, seed_offset, vary_init)
    datamodule = build_datamodule(
        ctx,
        exclude=exclude,
        train_steps=train_steps if train_steps is not None else ctx.cfg.data.train_steps,
        seed=ctx.cfg.data.seed + seed_offset,
    )
    model_kwargs = dict(vars(ctx.instantiate().model))
    model_kwargs.update(export=export, export_dir=os.path.join(folder, "export"))
    pl.seed_everything(init_seed, verbose=False)
    module = LanguageModel(**model_kwargs)
    pl.seed_everything(run_seed, verbose=False)
    checkpointing, resume_from = resumable(folder, checkpoint_every_n_steps)
    overrides = {"max_epochs": 1, "max_steps": -1, **(trainer_overrides or {})}
    if checkpointing:
        overrides["enable_checkpointing"] = True
    trainer = build_trainer(
        ctx,
        folder,
        callbacks=[*callbacks, *checkpointing],
        run_name=run_name,
        group=ctx.cfg.name,
        **overrides,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    module.eval()
    return module, datamodule
