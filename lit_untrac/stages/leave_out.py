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

With ``ground_truth.seeds: k``, theta_0 and every leave-out model are
trained k times, seed s changing the data order and dropout (and, with
``vary_init``, the initialisation); seed 0 is theta_0's own. Seed s gives
I_truth^s = L(theta_-Z^s) - L(theta_0^s); ``influence.csv`` holds the mean
over seeds and ``influence_seeds.csv`` each seed's values.

Layout of ``<output_dir>/ground_truth``: ``influence.csv`` (method
``ground_truth``), ``influence_seeds.csv``, ``theta0_losses.json``,
``config.yaml``, one folder per training dataset (its training run, not
exported, and a ``done.json`` with its test losses, so a rerun skips it),
``seed_<s>/`` with ``theta_0/`` and the same folders for every further
seed, and ``done.json`` once every job is done.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lit_untrac.errors import UserError, choose
from lit_untrac.stages.common import (
    Context,
    build_trainer,
    discard_checkpoints,
    is_global_zero,
    parse,
)

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
    target: str | None,
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
        run_name=f"leave_out/{target or THETA0}/seed_{seed_offset}",
        trainer_overrides={"enable_checkpointing": False},
        checkpoint_every_n_steps=ctx.cfg.ground_truth.checkpoint_every_n_steps,
    )
    return evaluate_losses(module.model.to(device), eval_sets), module.trainer.global_step


THETA0 = "theta_0"


def seed_folder(folder: str, seed: int) -> str:
    """Seed 0 is theta_0's own seed: its jobs sit in the stage folder; seed
    s > 0 has ``seed_<s>/``."""
    return folder if seed == 0 else os.path.join(folder, f"seed_{seed}")


@dataclass
class GroundTruthSetup:
    """What every ground-truth job of one experiment shares."""

    folder: str
    datamodule: Any
    eval_sets: dict[str, Any]
    device: Any
    steps: int
    targets: list[str]


def prepare_ground_truth(ctx: Context) -> GroundTruthSetup:
    """Check the settings, tokenise the data once, and evaluate theta_0 (seed 0).

    Everything that can be wrong with the input is checked before anything
    is written.
    """
    from lit_untrac.config import require_theta0
    from lit_untrac.models import max_positions
    from lit_untrac.modules import build_model
    from lit_untrac.modules.losses import EvalSet
    from lit_untrac.results import write_json
    from lit_untrac.stages.common import build_datamodule

    cfg, settings = ctx.cfg, ctx.cfg.ground_truth
    choose("ground-truth variant", settings.variant, VARIANTS)
    choose("ground-truth reduction", settings.reduction, ("sum", "mean"))
    if settings.seeds < 1:
        raise UserError(f"ground_truth.seeds={settings.seeds} must be >= 1")
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
    if not os.path.isfile(theta0_file):
        write_json(
            theta0_file,
            {"model": theta0_path, "losses": evaluate_losses(model.to(device), eval_sets)},
        )
    return GroundTruthSetup(folder, datamodule, eval_sets, device, steps, targets)


def ground_truth_jobs(setup: GroundTruthSetup, seeds: int) -> list[tuple[str, int]]:
    """``(target, seed)`` of every job: per seed s > 0 theta_0 retrained
    (``theta_0``), then one leave-out model per target."""
    jobs = []
    for seed in range(seeds):
        if seed > 0:
            jobs.append((THETA0, seed))
        jobs += [(target, seed) for target in setup.targets]
    return jobs


def job_folder(setup: GroundTruthSetup, target: str, seed: int) -> str:
    return os.path.join(seed_folder(setup.folder, seed), target)


def run_job(
    ctx: Context, setup: GroundTruthSetup, target: str, seed: int = 0, callbacks: Sequence[Any] = ()
) -> bool:
    """Train and evaluate one model of the ground truth, unless it is done.

    ``target`` is the training dataset left out, or ``theta_0`` for the full
    mixture (seeds s > 0 only: seed 0's theta_0 is the experiment's). Returns
    whether it ran.
    """
    from lit_untrac.results import is_done, mark_done

    folder = job_folder(setup, target, seed)
    if is_done(folder):
        return False
    settings = ctx.cfg.ground_truth
    exclude = None if target == THETA0 else target
    steps = leave_out_steps(
        settings.variant if exclude else "paper",
        setup.steps,
        setup.datamodule.mixture_size(),
        setup.datamodule.mixture_size(exclude=exclude),
    )
    start = time.perf_counter()
    losses, global_step = retrain_without(
        ctx,
        folder,
        exclude,
        steps,
        setup.eval_sets,
        setup.device,
        seed_offset=seed,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    discard_checkpoints(folder)
    mark_done(
        folder,
        exclude=exclude,
        seed=seed,
        variant=settings.variant,
        train_steps=steps,
        global_step=global_step,
        seconds=round(seconds, 3),
        losses=losses,
    )
    print(f"leave-out {target} (seed {seed}): {steps} steps, {seconds:.1f} s")
    return True


def _job_losses(setup: GroundTruthSetup, target: str, seed: int) -> Losses | None:
    if seed == 0 and target == THETA0:
        return _read_json(os.path.join(setup.folder, THETA0_LOSSES))["losses"]
    path = os.path.join(job_folder(setup, target, seed), "done.json")
    return _read_json(path)["losses"] if os.path.isfile(path) else None


def aggregate(ctx: Context, setup: GroundTruthSetup) -> str:
    """Write ``influence.csv`` (the mean over seeds, Eq. 1 per seed) and
    ``influence_seeds.csv`` (one row per seed) from the finished jobs."""
    from lit_untrac.results import INFLUENCE_COLUMNS, influence_rows, mark_done, write_csv

    settings = ctx.cfg.ground_truth
    per_seed: dict[int, dict[tuple[str, str], float]] = {}
    for seed in range(settings.seeds):
        theta0 = _job_losses(setup, THETA0, seed)
        if theta0 is None:
            continue
        left_out = {}
        for name in setup.datamodule.train_names:
            losses = _job_losses(setup, name, seed)
            if losses is not None:
                left_out[name] = losses
        per_seed[seed] = influence_values(theta0, left_out, settings.reduction)
    pairs = sorted({pair for values in per_seed.values() for pair in values})
    mean = {
        pair: sum(values[pair] for values in per_seed.values() if pair in values)
        / sum(pair in values for values in per_seed.values())
        for pair in pairs
    }
    path = os.path.join(setup.folder, "influence.csv")
    write_csv(path, influence_rows("ground_truth", mean), INFLUENCE_COLUMNS)
    seed_rows = [
        {"seed": seed, **row}
        for seed, values in per_seed.items()
        for row in influence_rows("ground_truth", values)
    ]
    write_csv(
        os.path.join(setup.folder, "influence_seeds.csv"), seed_rows, ("seed", *INFLUENCE_COLUMNS)
    )
    complete = all(
        len(values) == len(setup.datamodule.train_names) * len(setup.eval_sets)
        for values in per_seed.values()
    )
    if len(per_seed) == settings.seeds and complete:
        mark_done(
            setup.folder, variant=settings.variant, train_steps=setup.steps, seeds=settings.seeds
        )
    return path


def run_ground_truth(ctx: Context, callbacks: Sequence[Any] = ()) -> str:
    """Retrain theta_0 (seeds s > 0) and a leave-out model per target and
    seed, then write ``influence.csv``; returns its path."""
    setup = prepare_ground_truth(ctx)
    for target, seed in ground_truth_jobs(setup, ctx.cfg.ground_truth.seeds):
        if not run_job(ctx, setup, target, seed, callbacks=callbacks):
            print(f"leave-out {target} (seed {seed}): already done")
    if not is_global_zero():
        return os.path.join(setup.folder, "influence.csv")
    return aggregate(ctx, setup)


def leave_out_command(args: Sequence[str]) -> None:
    """Entry point of ``lit-untrac leave-out``."""
    from lit_untrac.results import read_csv

    ctx = parse(args, prog="lit-untrac leave-out", description=__doc__.splitlines()[0])
    path = run_ground_truth(ctx)
    print(f"{path}:\n{read_csv(path).to_string(index=False)}")
