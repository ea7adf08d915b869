"""The experiment runner: one command from a config to the paper's tables.

``lit-untrac experiment --config <yaml>`` composes the stages of one
experiment in its folder (DESIGN.md's layout):

1. ``model``: train theta_0 (with TracIn checkpoints when TracIn is asked
   for), or use ``pretrained``;
2. ``ground_truth``: one leave-dataset-out retraining per training dataset
   (per seed, ``ground_truth.seeds``);
3. ``untrac``: unlearn each training dataset (per run);
4. ``untrac_inv``: unlearn each test set (per run);
5. ``baselines``: each gradient baseline (per run);
6. ``report``: tables, correlations and figures.

Every per-dataset job writes its own results and a marker when it finishes;
a finished job is never run again, so an interrupted experiment, run again,
completes only what is missing. A job that fails (a diverging ascent, a
dataset that cannot be read) is recorded in ``failures.csv`` with its reason
and the other jobs go on; the next run retries it. With ``runs: N`` the
attribution stages are repeated with different sampled examples
(``data.sample_seed`` = run), in ``<stage>/run_<r>/`` folders.

Jobs run one after another (``launcher: local``) or on a Ray cluster
(``launcher: ray``), one job per dataset, each with the CPUs and GPUs it
asks for.
"""

from __future__ import annotations

import copy
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lit_untrac.errors import UserError
from lit_untrac.launchers import RemoteJobError
from lit_untrac.results import is_done, mark_done, read_csv, write_csv

FAILURE_COLUMNS = ("stage", "target", "run", "seed", "reason")
ATTRIBUTION_STAGES = ("untrac", "untrac_inv", "baselines")


@dataclass(frozen=True)
class Job:
    """One independent unit of work: a dataset (or method) of a stage."""

    stage: str
    target: str
    run: int = 0
    seed: int = 0

    @property
    def label(self) -> str:
        extra = f" run {self.run}" if self.stage in ATTRIBUTION_STAGES else ""
        extra += f" seed {self.seed}" if self.stage == "ground_truth" else ""
        return f"{self.stage}{extra}: {self.target}"


def stage_folder(output_dir: str, stage: str, run: int, runs: int) -> str:
    """``<output_dir>/<stage>``, or ``<stage>/run_<r>`` when there are several runs."""
    folder = os.path.join(output_dir, stage)
    return (
        os.path.join(folder, f"run_{run}") if runs > 1 and stage in ATTRIBUTION_STAGES else folder
    )


def run_context(ctx, run: int):
    """The experiment context of one run: the attribution sample seeded by ``run``."""
    from lit_untrac.stages.common import Context

    cfg = copy.deepcopy(ctx.cfg)
    cfg.data.sample_seed = run
    return Context(ctx.parser, cfg)


# ---- failures ---------------------------------------------------------------


def failures_path(output_dir: str) -> str:
    return os.path.join(output_dir, "failures.csv")


def read_failures(output_dir: str) -> list[dict[str, Any]]:
    path = failures_path(output_dir)
    return read_csv(path).to_dict("records") if os.path.isfile(path) else []


def write_failures(output_dir: str, failures: Sequence[dict[str, Any]]) -> None:
    path = failures_path(output_dir)
    if failures:
        write_csv(path, failures, FAILURE_COLUMNS)
    elif os.path.isfile(path):
        os.unlink(path)


def failure_reason(error: BaseException) -> str:
    """One line: the error's own message, without a traceback."""
    if isinstance(error, RemoteJobError):  # already a reason, worked out on the worker
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip()


# ---- launchers ----------------------------------------------------------------


JobResult = tuple[Job, BaseException | None]


class LocalLauncher:
    """Runs jobs one after another in this process."""

    def run(
        self,
        jobs: Sequence[Job],
        execute: Callable[[Job], None],
        on_done: Callable[[JobResult], None],
    ) -> None:
        for job in jobs:
            try:
                execute(job)
                on_done((job, None))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # recorded, and the other jobs go on
                on_done((job, error))


# ---- the runner ---------------------------------------------------------------------


class Progress:
    """A rich progress display: which stage and dataset runs, how far along."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.started = time.time()

    def stage(self, text: str) -> None:
        if self.enabled:
            self.console.print(
                f"[bold]▶ {text}[/bold]  [dim]{time.time() - self.started:.0f}s[/dim]"
            )

    def job(self, index: int, total: int, job: Job, status: str) -> None:
        if self.enabled:
            colour = {"done": "green", "failed": "red", "cached": "dim"}.get(status, "white")
            self.console.print(
                f"  [{index}/{total}] {job.label} [{colour}]{status}[/{colour}]"
                f"  [dim]{time.time() - self.started:.0f}s[/dim]"
            )


def plan_jobs(ctx, train_names: Sequence[str], test_sets: Sequence[str]) -> list[Job]:
    """Every per-dataset job of the experiment, in stage order."""
    cfg = ctx.cfg
    stages = set(cfg.stages)
    jobs: list[Job] = []
    if "ground_truth" in stages:
        from lit_untrac.stages.leave_out import THETA0

        for seed in range(cfg.ground_truth.seeds):
            if seed > 0:
                jobs.append(Job("ground_truth", THETA0, seed=seed))
            jobs += [Job("ground_truth", name, seed=seed) for name in train_names]
    for run in range(cfg.runs):
        if "untrac" in stages:
            jobs += [Job("untrac", name, run=run) for name in train_names]
        if "untrac_inv" in stages:
            jobs += [Job("untrac_inv", name, run=run) for name in test_sets]
        if "baselines" in stages:
            from lit_untrac.attribution import resolve_methods

            jobs += [
                Job("baselines", method, run=run)
                for method in resolve_methods(cfg.baselines.methods)
            ]
    return jobs


def _untrac_method(stage: str):
    from lit_untrac.stages.untrac import UNTRAC, UNTRAC_INV

    return UNTRAC if stage == "untrac" else UNTRAC_INV


def _job_context(ctx, job: Job):
    """A copy of the context for one job: its run's sample seed, its one target."""
    from lit_untrac.stages.common import Context

    job_ctx = (
        run_context(ctx, job.run)
        if job.stage in ATTRIBUTION_STAGES
        else Context(ctx.parser, copy.deepcopy(ctx.cfg))
    )
    job_ctx.cfg.targets = [job.target] if job.stage in ("untrac", "untrac_inv") else None
    return job_ctx


def job_done(ctx, job: Job) -> bool:
    """Whether a job finished in an earlier run of the experiment."""
    cfg = ctx.cfg
    if job.stage == "ground_truth":
        from lit_untrac.stages.leave_out import FOLDER, seed_folder

        return is_done(
            os.path.join(seed_folder(os.path.join(cfg.output_dir, FOLDER), job.seed), job.target)
        )
    folder = stage_folder(cfg.output_dir, job.stage, job.run, cfg.runs)
    if job.stage == "baselines":
        return is_done(os.path.join(folder, job.target))
    from lit_untrac.stages.untrac import target_done

    return target_done(_job_context(ctx, job), _untrac_method(job.stage), folder, job.target)


def execute_job(ctx, job: Job) -> None:
    """Run one job in this process (it skips itself when already done)."""
    job_ctx = _job_context(ctx, job)
    folder = stage_folder(ctx.cfg.output_dir, job.stage, job.run, ctx.cfg.runs)
    if job.stage == "ground_truth":
        from lit_untrac.stages.leave_out import prepare_ground_truth, run_job

        run_job(job_ctx, prepare_ground_truth(job_ctx), job.target, job.seed)
    elif job.stage in ("untrac", "untrac_inv"):
        from lit_untrac.stages.untrac import unlearn_each

        unlearn_each(job_ctx, _untrac_method(job.stage), stage=folder)
    elif job.stage == "baselines":
        from lit_untrac.stages.baselines import run_baselines

        run_baselines(job_ctx, [job.target], folder=folder)
    else:
        raise ValueError(f"unknown stage {job.stage!r}")


def _aggregate(ctx, train_names: list[str], test_sets: list[str]) -> None:
    """Merge the finished jobs' files into each stage's tables (stages already
    marked done are left as they are)."""
    from lit_untrac.stages.untrac import collect_targets

    cfg = ctx.cfg
    stages = set(cfg.stages)
    if "ground_truth" in stages and not is_done(os.path.join(cfg.output_dir, "ground_truth")):
        from lit_untrac.stages.leave_out import aggregate, prepare_ground_truth

        aggregate(ctx, prepare_ground_truth(ctx))
    for run in range(cfg.runs):
        run_ctx = run_context(ctx, run)
        for stage, known in (("untrac", train_names), ("untrac_inv", test_sets)):
            folder = stage_folder(cfg.output_dir, stage, run, cfg.runs)
            if stage in stages and not is_done(folder):
                run_ctx.save_config(folder)
                collect_targets(run_ctx, _untrac_method(stage), folder, known)


def _targets(ctx) -> tuple[list[str], list[str]]:
    """The training datasets and test sets (subsets named ``dataset/subset``)."""
    from lit_untrac.config import require_theta0
    from lit_untrac.models import load_tokenizer
    from lit_untrac.stages.common import build_datamodule

    datamodule = build_datamodule(ctx)
    theta0 = require_theta0(ctx.cfg)
    tokenizer_path = theta0 if not theta0.endswith(".ckpt") else None
    if tokenizer_path is None:
        from lit_untrac.modules import build_model

        _, tokenizer = build_model(theta0)
    else:
        tokenizer = load_tokenizer(datamodule.tokenizer_name or tokenizer_path)
    datamodule.prepare(tokenizer)
    return list(datamodule.train_names), list(datamodule.eval_sets("test"))


def run_experiment(ctx, show_progress: bool = True) -> str | None:
    """Run every stage that is not done yet; returns the report's path (or
    None when the report stage is not asked for)."""
    from lit_untrac.config import STAGES
    from lit_untrac.stages.model import train_theta0

    cfg = ctx.cfg
    unknown = [s for s in cfg.stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    if cfg.runs < 1:
        raise UserError(f"runs={cfg.runs} must be >= 1")
    _check_contradictions(cfg)
    progress = Progress(show_progress)
    os.makedirs(cfg.output_dir, exist_ok=True)
    ctx.save_config(cfg.output_dir)
    if "model" in cfg.stages:
        progress.stage("model: theta_0")
        train_theta0(ctx)
    train_names, test_sets = _targets(ctx)
    jobs = plan_jobs(ctx, train_names, test_sets)
    done = [job for job in jobs if job_done(ctx, job)]
    todo = [job for job in jobs if job not in done]
    progress.stage(
        f"{len(jobs)} jobs: {len(done)} done earlier, {len(todo)} to run ({cfg.launcher} launcher)"
    )
    failures: list[dict[str, Any]] = []
    count = {"n": len(done)}

    def on_done(result: JobResult) -> None:
        job, error = result
        count["n"] += 1
        if error is None:
            progress.job(count["n"], len(jobs), job, "done")
            return
        reason = failure_reason(error)
        failures.append(
            {
                "stage": job.stage,
                "target": job.target,
                "run": job.run,
                "seed": job.seed,
                "reason": reason,
            }
        )
        write_failures(cfg.output_dir, failures)
        progress.job(count["n"], len(jobs), job, "failed")
        progress.console.print(f"    [red]{reason}[/red]")
        if not isinstance(error, (UserError, RemoteJobError)):
            progress.console.print(
                "".join(traceback.format_exception(error)).rstrip(), style="dim", markup=False
            )

    launcher = make_launcher(ctx)
    launcher.run(todo, lambda job: execute_job(ctx, job), on_done)
    from lit_untrac.stages.common import is_global_zero

    if not is_global_zero():  # under ddp: the other processes took part in the jobs
        return None
    write_failures(cfg.output_dir, failures)
    _aggregate(ctx, train_names, test_sets)
    if "report" not in cfg.stages:
        return None
    progress.stage("report")
    from lit_untrac.evaluation.report import build_report

    report_dir = os.path.join(cfg.output_dir, "report")
    if todo or not is_done(report_dir):
        path = build_report(cfg.output_dir, title=cfg.name)
        _report_to_wandb(ctx, report_dir)
        mark_done(report_dir)
    path = os.path.join(report_dir, "report.md")
    progress.stage(
        f"report: {path}"
        + (f" ({len(failures)} failed jobs: see failures.csv)" if failures else "")
    )
    return path


def _check_contradictions(cfg) -> None:
    """Configs that cannot mean anything, refused before anything runs."""
    if cfg.data.exclude is not None:
        raise UserError(
            f"data.exclude={cfg.data.exclude!r}: an experiment trains theta_0 on the whole mixture "
            "and leaves each dataset out itself; remove data.exclude"
        )
    if cfg.data.unlearn is not None:
        raise UserError(
            f"data.unlearn={cfg.data.unlearn!r}: an experiment unlearns each dataset itself; remove data.unlearn"
        )


def _report_to_wandb(ctx, report_dir: str) -> None:
    """Send the report to one W&B run when the trainer has a WandbLogger."""
    from lit_untrac.stages.common import _is_wandb, wandb_offline_reason

    loggers = (
        ctx.cfg.trainer.logger
        if isinstance(ctx.cfg.trainer.logger, list)
        else [ctx.cfg.trainer.logger]
    )
    for logger in loggers:
        if _is_wandb(logger):
            from lit_untrac.evaluation.report import log_report_to_wandb

            init = logger.init_args
            log_report_to_wandb(
                report_dir,
                {
                    "project": getattr(init, "project", None) or "lit-untrac",
                    "group": ctx.cfg.name,
                    "dir": report_dir,
                    "mode": "offline"
                    if getattr(init, "offline", False) or wandb_offline_reason()
                    else None,
                },
            )
            return


def make_launcher(ctx):
    if ctx.cfg.launcher == "ray":
        from lit_untrac.launchers import RayLauncher

        return RayLauncher(ctx)
    return LocalLauncher()


def experiment_command(args: Sequence[str]) -> str | None:
    """Entry point of ``lit-untrac experiment``: with no ``--config``, the default experiment."""
    from lit_untrac.stages.common import parse

    args = list(args)
    if not any(a == "--config" or a.startswith("--config=") or a == "-c" for a in args):
        args = ["--config", default_config()] + args
    ctx = parse(args, prog="lit-untrac experiment", description="Run every stage of an experiment.")
    return run_experiment(ctx)


def default_config() -> str:
    """The default experiment's config, shipped inside the package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "defaults", "default.yaml")


def report_command(args: Sequence[str]) -> str:
    """Entry point of ``lit-untrac report <folder>``: rebuild the report from the results."""
    import argparse

    from lit_untrac.evaluation.report import build_report

    parser = argparse.ArgumentParser(
        prog="lit-untrac report", description="Rebuild an experiment's report."
    )
    parser.add_argument("folder", help="The experiment folder.")
    parser.add_argument(
        "--output", default=None, help="The report folder (default: <folder>/report)."
    )
    options = parser.parse_args(list(args))
    if not os.path.isdir(options.folder):
        raise UserError(f"experiment folder {options.folder!r} does not exist")
    path = build_report(options.folder, options.output)
    print(path)
    return path
