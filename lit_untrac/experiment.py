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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lit_untrac.results import read_csv, write_csv

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
