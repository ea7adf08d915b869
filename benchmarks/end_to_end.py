"""B6: the default experiment end to end: the wall time of the whole
experiment and of each stage, and the compute of UnTrac and UnTrac-Inv
relative to the leave-dataset-out ground truth's.

The default experiment takes several minutes on 2 CPU cores, too long to run
inside the benchmark command with the rest, so B6 reads a finished
experiment folder (``--experiment``; by default ``runs/default`` when it
holds a finished experiment). Without one, it runs a reduced default
experiment (``runs: 1``, ``ground_truth.seeds: 1``) in a temporary folder
and says so.

* Wall time: each job's ``done.json`` holds its seconds (theta_0, every
  leave-out model, every UnTrac and UnTrac-Inv target, every baseline); the
  whole experiment runs from theta_0's start to the report's marker. Each
  stage's row gives its share of the whole; the last row the whole over the
  sum of its jobs (the rest: loading data, aggregating, the report).
* Compute, counted from the experiment's own config and data rather than
  measured: a forward pass over T tokens costs T, a backward pass 2T (the
  usual ratio of their FLOPs), counting padded tokens, which the hardware
  computes too. The ground truth (one seed): each leave-out model's training
  batches (3T each) and one evaluation of the test sets. UnTrac (one run):
  for each training dataset, its unlearning batches (3T each, ``epochs``
  passes over its attribution sample) and the test sets' evaluation at every
  evaluated step (step 0, every ``every_n_steps``, the last). UnTrac-Inv:
  the same with the test sets unlearned and the training datasets'
  attribution samples evaluated.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import time
from datetime import datetime

from benchmarks import Row, Settings

DEFAULT_FOLDER = os.path.join("runs", "default")


def finished(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "report", "done.json"))


def read(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def job_seconds(pattern: str) -> list[float]:
    """The ``seconds`` of every job marker that matches ``pattern``."""
    markers = [read(path) for path in sorted(glob.glob(pattern, recursive=True))]
    return [m["seconds"] for m in markers if "seconds" in m]


def reduced_default(workdir: str) -> str:
    """Run the default experiment with one run and one ground-truth seed."""
    from lit_untrac.experiment import default_config, run_experiment
    from lit_untrac.stages.common import parse

    folder = os.path.join(workdir, "default")
    args = ["--config", default_config(), "--output_dir", folder, "--runs", "1"]
    ctx = parse(args + ["--ground_truth.seeds", "1"], prog="benchmarks")
    with open(os.path.join(workdir, "default.log"), "w") as log, contextlib.redirect_stdout(log):
        run_experiment(ctx, show_progress=False)
    return folder


def experiment_context(folder: str):
    from lit_untrac.stages.common import parse

    config = os.path.join(folder, "config.yaml")
    return parse(["--config", config, "--output_dir", folder], prog="benchmarks")


def tokens(batches) -> int:
    return sum(int(b["input_ids"].numel()) for b in batches)


def evaluated_steps(steps: int, every: int) -> int:
    """Evaluations of an InfluenceTracker: step 0, every ``every``, and the last."""
    return 1 + sum(1 for s in range(1, steps + 1) if s % every == 0 or s == steps)


class Compute:
    """Forward-and-backward token counts of an experiment's jobs."""

    def __init__(self, ctx) -> None:
        from lit_untrac.config import require_theta0
        from lit_untrac.models import load_tokenizer
        from lit_untrac.stages.common import build_datamodule

        self.cfg = ctx.cfg
        self.data = build_datamodule(ctx).prepare(load_tokenizer(require_theta0(ctx.cfg)))

    def eval_tokens(self, group: str, settings) -> int:
        from lit_untrac.modules.losses import EvalSet

        collator = self.data.collator
        return sum(
            tokens(
                EvalSet.build(
                    name,
                    examples,
                    collator,
                    settings.eval_batch_size,
                    getattr(settings, "eval_max_tokens", None),
                ).batches
            )
            for name, examples in self.data.eval_sets(group).items()
        )

    def training(self) -> tuple[int, int]:
        """(token passes, steps) of the ``train_dataloader`` as configured."""
        batches = list(self.data.train_dataloader())
        return 3 * tokens(batches), len(batches)

    def ground_truth(self) -> int:
        """One seed: every leave-out model, trained and evaluated once."""
        from lit_untrac.stages.leave_out import leave_out_steps

        settings = self.cfg.ground_truth
        steps = self.cfg.data.train_steps
        total = 0
        for name in self.data.train_names:
            self.data.configure(exclude=name)
            self.data.train_steps = leave_out_steps(
                settings.variant, steps, self.data.mixture_size(), self.data.mixture_size(name)
            )
            total += self.training()[0] + self.eval_tokens("test", settings)
        self.data.configure()
        self.data.train_steps = steps
        return total

    def unlearning(self, method: str) -> int:
        """One run of UnTrac (``untrac``) or UnTrac-Inv (``untrac_inv``)."""
        settings = getattr(self.cfg, method)
        unlearned, evaluated = ("train", "test") if method == "untrac" else ("test", "train")
        targets = self.data.train_names if unlearned == "train" else list(self.data.eval_sets())
        self.data.unlearn_batch_size, self.data.unlearn_epochs = (
            settings.batch_size,
            settings.epochs,
        )
        evaluation = self.eval_tokens(evaluated, settings)
        total = 0
        for target in targets:
            self.data.configure(unlearn=target)
            passes, steps = self.training()
            total += passes + evaluation * evaluated_steps(steps, settings.every_n_steps)
        self.data.configure()
        return total


def stage_rows(folder: str, cfg) -> list[Row]:
    """Wall time: each stage's share of the whole experiment."""
    model = read(os.path.join(folder, "model", "done.json"))
    start = datetime.fromisoformat(model["finished"]).timestamp() - model["seconds"]
    end = datetime.fromisoformat(read(os.path.join(folder, "report", "done.json"))["finished"])
    whole = end.timestamp() - start
    stages = {
        "theta_0": [model["seconds"]],
        "ground truth": job_seconds(os.path.join(folder, "ground_truth", "**", "done.json")),
        "UnTrac": job_seconds(os.path.join(folder, "untrac", "**", "targets", "**", "done.json")),
        "UnTrac-Inv": job_seconds(
            os.path.join(folder, "untrac_inv", "**", "targets", "**", "done.json")
        ),
        "baselines": job_seconds(os.path.join(folder, "baselines", "**", "done.json")),
    }
    rows = [
        Row(
            "B6",
            f"wall: {stage} ({len(times)} jobs) / whole experiment",
            sum(times),
            whole,
            None,
            "s",
        )
        for stage, times in stages.items()
        if times
    ]
    missing = [stage for stage, times in stages.items() if not times]
    jobs = sum(sum(times) for times in stages.values())
    note = f", no timings for {', '.join(missing)}" if missing else ""
    rows.append(
        Row("B6", f"wall: whole experiment / sum of its jobs{note}", whole, jobs, None, "s")
    )
    truth = sum(job_seconds(os.path.join(folder, "ground_truth", "*", "done.json")))  # seed 0
    for stage in ("UnTrac", "UnTrac-Inv"):
        if stages[stage] and truth:
            what = f"wall: {stage}, 1 run / ground truth, 1 seed"
            rows.append(Row("B6", what, sum(stages[stage]) / cfg.runs, truth, None, "s"))
    return rows


def benchmark(settings: Settings) -> list[Row]:
    folder = settings.experiment or DEFAULT_FOLDER
    name = folder
    if not finished(folder):
        if settings.experiment:
            raise FileNotFoundError(f"B6: {folder} holds no finished experiment")
        started = time.perf_counter()
        folder = reduced_default(settings.workdir)
        name = "reduced default"
        print(
            f"B6: no finished experiment in {DEFAULT_FOLDER}; ran the default experiment with "
            f"runs: 1 and ground_truth.seeds: 1 in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    ctx = experiment_context(folder)
    rows = stage_rows(folder, ctx.cfg)
    compute = Compute(ctx)
    truth = compute.ground_truth()
    for method, label in (("untrac", "UnTrac"), ("untrac_inv", "UnTrac-Inv")):
        rows.append(
            Row(
                "B6",
                f"compute: {label}, 1 run / ground truth, 1 seed (token passes)",
                compute.unlearning(method),
                truth,
                None,
                "Mtok",
            )
        )
    for row in rows:
        row.model = name
    return rows
