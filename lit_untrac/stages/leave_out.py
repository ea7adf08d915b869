"""``lit-untrac leave-out``: the leave-dataset-out ground truth (the paper's Eq. 1).

For each training dataset Z, a model theta_-Z is retrained from the same
initialisation, seed and config as theta_0 on the mixture without Z, and

    I_truth(Z', Z) = sum_j L(z'_j, theta_-Z) - L(z'_j, theta_0)

on every test set Z' (each subset ``dataset/subset`` on its own):
positive when removing Z raises the test loss. ``ground_truth.variant``:

* ``paper``: theta_-Z takes the same number of steps T as theta_0
  (``data.train_steps``; if unset, one pass over the full mixture);
* ``classic``: all of D without Z for the same number of epochs, so the
  step count follows the data: ceil(|D without Z| * T / |D|) (Appendix A.1).

Layout of ``<output_dir>/ground_truth``: ``influence.csv`` (method
``ground_truth``), ``theta0_losses.json``, ``config.yaml``, one folder per
training dataset (its training run, not exported, and a ``done.json`` with
its test losses, so a rerun skips it), and ``done.json`` once every
training dataset is done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

from lit_untrac.errors import UserError, choose
from lit_untrac.stages.common import Context, build_trainer, parse

log = logging.getLogger(__name__)

VARIANTS = ("paper", "classic")
FOLDER = "ground_truth"
THETA0_LOSSES = "theta0_losses.json"

#: Per evaluation set: the summed example loss and the number of examples.
Losses = dict[str, dict[str, float]]


def leave_out_steps(variant: str, steps: int, mixture_size: int, remaining_size: int) -> int:
    """Steps of a leave-out model: T (``paper``) or the same epochs over the
    remaining data, ceil(remaining * T / mixture) (``classic``)."""
    choose("ground-truth variant", variant, VARIANTS)
    if variant == "paper":
        return steps
    return max(1, math.ceil(remaining_size * steps / mixture_size))


def evaluate_losses(model, eval_sets: dict[str, Any]) -> Losses:
    """sum_j L(z_j, theta) and the example count of every evaluation set."""
    from lit_untrac.modules.losses import summed_example_loss

    was_training = model.training
    model.eval()
    losses = {
        name: {"sum": float(summed_example_loss(model, s)), "n_examples": s.n_examples}
        for name, s in eval_sets.items()
    }
    model.train(was_training)
    return losses


def influence_values(theta0: Losses, left_out: dict[str, Losses], reduction: str):
    """Eq. 1 for every (training dataset, test set): reduced loss of theta_-Z
    minus that of theta_0."""
    from lit_untrac.modules.losses import reduce_loss

    def reduced(losses: dict[str, float]) -> float:
        return reduce_loss(losses["sum"], int(losses["n_examples"]), reduction)

    return {
        (train, test): reduced(losses[test]) - reduced(theta0[test])
        for train, losses in left_out.items()
        for test in theta0
    }


def check_targets(targets: Sequence[str] | None, train_names: Sequence[str]) -> list[str]:
    """The training datasets to leave out: ``targets`` checked, or all."""
    if not targets:
        return list(train_names)
    unknown = [t for t in targets if t not in train_names]
    if unknown:
        raise UserError(
            f"unknown target(s) {unknown}: the training datasets are {list(train_names)}"
        )
    return list(dict.fromkeys(targets))


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def retrain_without(
    ctx: Context,
    folder: str,
    target: str,
    steps: int,
    eval_sets: dict[str, Any],
    device: Any,
    seed_offset: int = 0,
    callbacks: Sequence[Any] = (),
) -> tuple[Losses, int]:
    """Train theta_-Z in ``folder`` (not exported, no checkpoints) and
    evaluate it; returns its losses and step count. ``seed_offset`` 0 is
    theta_0's seed (another one gives a run of the mean over seeds)."""
    from lit_untrac.stages.training import train_language_model

    module, _ = train_language_model(
        ctx,
        folder,
        exclude=target,
        train_steps=steps,
        seed_offset=seed_offset,
        vary_init=ctx.cfg.ground_truth.vary_init,
        callbacks=callbacks,
        export=False,
        run_name=f"leave_out/{target}",
        trainer_overrides={"enable_checkpointing": False},
    )
    return evaluate_losses(module.model.to(device), eval_sets), module.trainer.global_step


def run_ground_truth(ctx: Context, callbacks: Sequence[Any] = ()) -> str:
    """Retrain a leave-out model per target and write ``influence.csv``.

    Args:
        ctx: The experiment config.
        callbacks: Extra callbacks for every leave-out training.

    Returns:
        The path of ``influence.csv``.
    """
    from lit_untrac.config import require_theta0
    from lit_untrac.models import max_positions
    from lit_untrac.modules import build_model
    from lit_untrac.modules.losses import EvalSet
    from lit_untrac.results import (
        INFLUENCE_COLUMNS,
        influence_rows,
        is_done,
        mark_done,
        write_csv,
        write_json,
    )
    from lit_untrac.stages.common import build_datamodule

    cfg, settings = ctx.cfg, ctx.cfg.ground_truth
    choose("ground-truth variant", settings.variant, VARIANTS)
    choose("ground-truth reduction", settings.reduction, ("sum", "mean"))
    if settings.seeds != 1:
        raise UserError(
            f"ground_truth.seeds={settings.seeds}: only one seed is supported so far; set it to 1"
        )
    theta0_path = require_theta0(cfg)
    if cfg.pretrained is not None:
        log.warning(
            "theta_0 is given (pretrained=%r): Eq. 1 assumes it was trained with this config's "
            "model, data and seed, as the leave-out models are",
            cfg.pretrained,
        )
    model, tokenizer = build_model(theta0_path)
    datamodule = build_datamodule(ctx).prepare(
        tokenizer,
        encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)),
        max_positions=max_positions(model),
    )
    targets = check_targets(cfg.targets, datamodule.train_names)
    test_sets = datamodule.eval_sets("test")
    if not test_sets:
        raise UserError("the ground truth needs test datasets: data.test is empty")

    folder = os.path.join(ctx.output_dir, FOLDER)
    device = build_trainer(ctx, folder, logger=False).strategy.root_device
    eval_sets = {
        name: EvalSet.build(name, examples, datamodule.collator, settings.eval_batch_size).to(
            device
        )
        for name, examples in test_sets.items()
    }
    steps = cfg.data.train_steps or math.ceil(datamodule.mixture_size() / datamodule.batch_size)
    ctx.save_config(folder)

    theta0_file = os.path.join(folder, THETA0_LOSSES)
    if os.path.isfile(theta0_file):
        theta0_losses = _read_json(theta0_file)["losses"]
    else:
        theta0_losses = evaluate_losses(model.to(device), eval_sets)
        write_json(theta0_file, {"model": theta0_path, "losses": theta0_losses})
    del model

    for target in targets:
        target_folder = os.path.join(folder, target)
        if is_done(target_folder):
            print(f"leave-out {target}: already done")
            continue
        target_steps = leave_out_steps(
            settings.variant,
            steps,
            datamodule.mixture_size(),
            datamodule.mixture_size(exclude=target),
        )
        start = time.perf_counter()
        losses, global_step = retrain_without(
            ctx, target_folder, target, target_steps, eval_sets, device, callbacks=callbacks
        )
        seconds = time.perf_counter() - start
        mark_done(
            target_folder,
            exclude=target,
            variant=settings.variant,
            train_steps=target_steps,
            global_step=global_step,
            seconds=round(seconds, 3),
            losses=losses,
        )
        print(f"leave-out {target}: {target_steps} steps, {seconds:.1f} s")

    left_out = {
        name: _read_json(os.path.join(folder, name, "done.json"))["losses"]
        for name in datamodule.train_names
        if is_done(os.path.join(folder, name))
    }
    path = os.path.join(folder, "influence.csv")
    values = influence_values(theta0_losses, left_out, settings.reduction)
    write_csv(path, influence_rows("ground_truth", values), INFLUENCE_COLUMNS)
    if len(left_out) == len(datamodule.train_names):
        mark_done(folder, variant=settings.variant, train_steps=steps)
    return path


def leave_out_command(args: Sequence[str]) -> None:
    """Entry point of ``lit-untrac leave-out``."""
    from lit_untrac.results import read_csv

    ctx = parse(args, prog="lit-untrac leave-out", description=__doc__.splitlines()[0])
    path = run_ground_truth(ctx)
    print(f"{path}:\n{read_csv(path).to_string(index=False)}")
