"""UnTrac and UnTrac-Inv: unlearn each dataset in turn from the same theta_0
and track how the loss of the datasets on the other side moves.

* ``lit-untrac untrac`` unlearns each training dataset (or those named with
  ``--targets``) and evaluates every test dataset and subset: I(Z', Z) of the
  paper's Eq. 2. Paper defaults: batch 1, one epoch.
* ``lit-untrac untrac-inv`` unlearns each test set (each subset of a test
  dataset that has subsets, so that its rows line up with UnTrac's) and
  evaluates every training dataset: I'(Z', Z) of Eq. 4. Paper defaults: one
  batch of 256, five epochs.

Each command writes one folder, ``<output_dir>/untrac`` or
``<output_dir>/untrac_inv``, with the resolved ``config.yaml``,
``influence.csv``, ``curves.csv``, ``curves.png`` (influence against step,
like the paper's Figure 2) and ``done.json`` once every target is finished.
Each target runs in ``targets/<name>/`` with its own files and marker, so an
interrupted command keeps the finished targets and a rerun skips them
(unless the settings changed). W&B runs, when a ``WandbLogger`` is
configured, go to the folder's ``wandb/``, one run per target, grouped by
``<name>/<method>``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lit_untrac.errors import UserError
from lit_untrac.stages.common import (
    Context,
    build_datamodule,
    build_trainer,
    discard_checkpoints,
    finish_loggers,
    is_global_zero,
    parse,
    resumable,
)


@dataclass(frozen=True)
class Method:
    """UnTrac or UnTrac-Inv: what it unlearns and what it evaluates."""

    name: str  # the method column, the config section and the folder
    command: str
    unlearns: str  # "train" or "test"
    description: str

    @property
    def evaluates(self) -> str:
        return "test" if self.unlearns == "train" else "train"


UNTRAC = Method(
    "untrac",
    "untrac",
    "train",
    "UnTrac: unlearn each training dataset from theta_0 and track the test losses (Eq. 2).",
)
UNTRAC_INV = Method(
    "untrac_inv",
    "untrac-inv",
    "test",
    "UnTrac-Inv: unlearn each test set from theta_0 and track the training losses (Eq. 4).",
)


def untrac_command(args: Sequence[str]) -> str:
    """``lit-untrac untrac``: returns the stage folder."""
    return run_method(UNTRAC, args)


def untrac_inv_command(args: Sequence[str]) -> str:
    """``lit-untrac untrac-inv``: returns the stage folder."""
    return run_method(UNTRAC_INV, args)


def run_method(method: Method, args: Sequence[str]) -> str:
    ctx = parse(args, prog=f"lit-untrac {method.command}", description=method.description)
    return unlearn_each(ctx, method)


def unlearn_each(ctx: Context, method: Method, stage: str | None = None) -> str:
    """Unlearn every target of ``method`` in turn; write and return the stage folder
    (by default ``<output_dir>/<method>``).

    Everything that can be wrong with the input is checked before anything
    is written.
    """
    from lit_untrac.callbacks import InfluenceTracker
    from lit_untrac.config import require_theta0
    from lit_untrac.modules.unlearning import check_no_clipping

    cfg = ctx.cfg
    settings = getattr(cfg, method.name)
    check_no_clipping(cfg.trainer.gradient_clip_val)
    InfluenceTracker(group=method.evaluates, **_tracker_settings(settings))  # checks them
    theta0 = require_theta0(cfg)
    datamodule = build_datamodule(
        ctx, unlearn_batch_size=settings.batch_size, unlearn_epochs=settings.epochs
    )
    module = _unlearning_module(ctx, settings, theta0)
    _prepare(datamodule, module)
    known = _unlearnable(datamodule, method)
    targets = _choose_targets(cfg.targets, known, method)
    stage = stage or os.path.join(cfg.output_dir, method.name)
    ctx.save_config(stage)
    fingerprint = _fingerprint(ctx, method)
    for number, target in enumerate(targets, 1):
        folder = _target_folder(stage, target)
        if _finished(folder, fingerprint):
            print(f"{method.command}: {target!r} already unlearned in {folder}; skipping")
            continue
        print(f"{method.command}: unlearning {target!r} ({number}/{len(targets)})")
        module = module or _unlearning_module(ctx, settings, theta0)
        _unlearn_one(ctx, method, module, datamodule, target, folder, stage, known, fingerprint)
        module = None
    if not is_global_zero():
        return stage
    finished = _collect(stage, method, known, fingerprint)
    if finished == known:
        from lit_untrac.results import mark_done

        mark_done(stage, targets=known, fingerprint=fingerprint)
    _print_influence(stage)
    return stage


def target_done(ctx: Context, method: Method, stage: str, target: str) -> bool:
    """Whether ``target`` finished in ``stage`` with the current settings."""
    return _finished(_target_folder(stage, target), _fingerprint(ctx, method))


def collect_targets(ctx: Context, method: Method, stage: str, known: list[str]) -> list[str]:
    """Merge the finished targets' files into the stage's files without
    running anything; mark the stage done when every target is."""
    from lit_untrac.results import mark_done

    fingerprint = _fingerprint(ctx, method)
    finished = _collect(stage, method, known, fingerprint)
    if finished == known:
        mark_done(stage, targets=known, fingerprint=fingerprint)
    return finished


def _tracker_settings(settings) -> dict:
    return {
        "every_n_steps": settings.every_n_steps,
        "reduction": settings.reduction,
        "eval_batch_size": settings.eval_batch_size,
        "eval_max_tokens": settings.eval_max_tokens,
    }


def _unlearning_module(ctx: Context, settings, theta0: str):
    from lit_untrac.modules import UnlearningModule

    return UnlearningModule(
        model=theta0,
        optimizer=settings.optimizer,
        optimizer_args=settings.optimizer_args,
        scheduler=settings.scheduler,
        gradient_checkpointing=ctx.cfg.model.gradient_checkpointing,
        compile=ctx.cfg.model.compile,
    )


def _prepare(datamodule, module) -> None:
    """Tokenise every dataset once, with theta_0's tokenizer, before any target."""
    from lit_untrac.models import max_positions

    datamodule.prepare(
        tokenizer=datamodule.tokenizer_name or module.tokenizer,
        encoder_decoder=bool(getattr(module.model.config, "is_encoder_decoder", False)),
        max_positions=max_positions(module.model),
    )


def _unlearnable(datamodule, method: Method) -> list[str]:
    """The targets ``method`` can unlearn, after checking it has sets to evaluate."""
    group_words = {"train": "training datasets", "test": "test datasets"}
    if not datamodule.eval_sets(method.evaluates):
        raise UserError(
            f"{method.command} evaluates the {group_words[method.evaluates]}, and the config has "
            f"none: add data.{method.evaluates}"
        )
    if method.unlearns == "train":
        return list(datamodule.train_names)
    return list(datamodule.eval_sets("test"))


def _choose_targets(requested: Sequence[str] | None, known: list[str], method: Method) -> list[str]:
    """``--targets``, each a name of ``known`` or a dataset whose subsets are known."""
    if not requested:
        return known
    chosen: list[str] = []
    for name in requested:
        matches = [k for k in known if k == name or k.startswith(f"{name}/")]
        if not matches:
            kind = "training datasets" if method.unlearns == "train" else "test sets"
            raise UserError(
                f"unknown target {name!r} for {method.command}; the {kind} it can unlearn are {known}"
            )
        chosen += [m for m in matches if m not in chosen]
    return chosen


def _unlearn_one(
    ctx: Context, method: Method, module, datamodule, target, folder, stage, known, fingerprint
):
    import lightning.pytorch as pl

    from lit_untrac.callbacks import InfluenceTracker
    from lit_untrac.modules import NonFiniteLossError
    from lit_untrac.results import mark_done

    cfg = ctx.cfg
    settings = getattr(cfg, method.name)
    tracker = InfluenceTracker(
        group=method.evaluates, method=method.name, unlearned=target, **_tracker_settings(settings)
    )
    overrides = {}
    if cfg.trainer.log_every_n_steps is None:  # log the unlearned loss where the tracker evaluates
        overrides["log_every_n_steps"] = settings.every_n_steps
    checkpointing, resume_from = resumable(folder, settings.checkpoint_every_n_steps)
    trainer = build_trainer(
        ctx,
        folder,
        callbacks=[tracker, *checkpointing],
        run_name=f"{method.name}/{target}",
        group=f"{cfg.name}/{method.name}",
        logger_dir=stage,
        max_epochs=1,  # the datamodule serves the unlearning epochs as one pass
        max_steps=-1,
        enable_checkpointing=bool(checkpointing),
        **overrides,
    )
    datamodule.configure(unlearn=target)
    pl.seed_everything(cfg.seed_everything, verbose=False)
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    except NonFiniteLossError as err:
        _collect(stage, method, known, fingerprint, partial=folder)
        raise UserError(
            f"{method.command} of {target!r} stopped: {err}; the curves up to that step are in "
            f"{os.path.join(stage, 'curves.csv')}"
        ) from err
    finally:
        finish_loggers(trainer)
    seconds = time.perf_counter() - start
    if not trainer.is_global_zero:
        return
    discard_checkpoints(folder)
    mark_done(folder, target=target, fingerprint=fingerprint, seconds=round(seconds, 3))


# ---- files -------------------------------------------------------------------


def _target_folder(stage: str, target: str) -> str:
    return os.path.join(stage, "targets", *target.split("/"))


def _fingerprint(ctx: Context, method: Method) -> str:
    """A hash of the settings a target's results depend on."""
    import yaml

    dumped = yaml.safe_load(ctx.parser.dump(ctx.cfg, skip_none=False))
    relevant = {
        key: dumped.get(key)
        for key in ("pretrained", "seed_everything", "model", "data", method.name)
    }
    relevant["precision"] = (dumped.get("trainer") or {}).get("precision")
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finished(folder: str, fingerprint: str) -> bool:
    from lit_untrac.results import DONE_MARKER, is_done

    if not is_done(folder):
        return False
    with open(os.path.join(folder, DONE_MARKER)) as handle:
        return json.load(handle).get("fingerprint") == fingerprint


def _read_rows(path: str) -> list[dict[str, str]]:
    """A results CSV as rows of text (floats keep their exact written form)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _collect(
    stage: str, method: Method, known: list[str], fingerprint: str, partial: str | None = None
) -> list[str]:
    """Merge the finished targets' files (and the curves of a ``partial``
    target) into the stage's ``influence.csv``, ``curves.csv`` and
    ``curves.png``; return the finished targets."""
    from lit_untrac.evaluation.curves import plot_influence_curves
    from lit_untrac.results import CURVE_COLUMNS, INFLUENCE_COLUMNS, write_csv

    finished = [t for t in known if _finished(_target_folder(stage, t), fingerprint)]
    influence: list[dict[str, str]] = []
    curves: list[dict[str, str]] = []
    for target in finished:
        folder = _target_folder(stage, target)
        influence += _read_rows(os.path.join(folder, "influence.csv"))
        curves += _read_rows(os.path.join(folder, "curves.csv"))
    if partial is not None and os.path.isfile(os.path.join(partial, "curves.csv")):
        curves += _read_rows(os.path.join(partial, "curves.csv"))
    write_csv(os.path.join(stage, "influence.csv"), influence, INFLUENCE_COLUMNS)
    write_csv(os.path.join(stage, "curves.csv"), curves, CURVE_COLUMNS)
    plot_influence_curves(
        curves,
        os.path.join(stage, "curves.png"),
        unlearned_group=method.unlearns,
        title=f"{method.command}: influence against unlearning step",
    )
    return finished


def _print_influence(stage: str) -> None:
    rows = _read_rows(os.path.join(stage, "influence.csv"))
    print(f"influence ({os.path.join(stage, 'influence.csv')}):")
    for row in rows:
        print(
            f"  {row['train_dataset']:>20}  {row['test_dataset']:>20}  {float(row['influence']):+.6g}"
        )
