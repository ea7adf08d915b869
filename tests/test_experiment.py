"""The experiment runner: every stage from one config, caching, interruption,
failures, the report and determinism."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from lit_untrac import experiment
from lit_untrac.cli import main
from lit_untrac.errors import UserError
from lit_untrac.experiment import Job, run_experiment
from lit_untrac.results import read_csv
from lit_untrac.stages.common import parse
from tests.experiments import write_experiment

METHODS = ["graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"]
RESULT_FILES = [
    "ground_truth/influence.csv",
    "ground_truth/influence_seeds.csv",
    "untrac/run_0/influence.csv",
    "untrac/run_1/curves.csv",
    "untrac_inv/run_1/influence.csv",
    "baselines/run_0/hif_lissa/influence.csv",
    "baselines/run_1/tracin/influence.csv",
    "report/correlations.csv",
]


def tiny_experiment(folder: str, **sections) -> str:
    """A full tiny experiment: 2 runs on 4 sampled examples of 8, 2 ground-truth seeds."""
    settings = dict(
        runs=2,
        data={"attribution_samples": 4},
        untrac={"every_n_steps": 2, "optimizer_args": {"lr": 1e-3}},
        untrac_inv={"batch_size": 8, "epochs": 2, "optimizer_args": {"lr": 1e-3}},
        ground_truth={"seeds": 2},
        baselines={
            "methods": METHODS,
            "tracin_every_n_steps": 3,
            "hessian_examples": 8,
            "batch_size": 4,
            "lissa": {"depth": 4, "scale": 100.0},
            "arnoldi": {"iterations": 6, "top_k": 4},
        },
    )
    settings.update(sections)
    return write_experiment(folder, **settings)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted experiment, run through the command line."""
    folder = str(tmp_path_factory.mktemp("whole"))
    config = tiny_experiment(folder)
    main(["experiment", "--config", config])
    return os.path.join(folder, "experiment")


def test_the_experiment_writes_every_stage_and_the_report(finished):
    for stage in (
        "model",
        "ground_truth",
        "untrac/run_0",
        "untrac/run_1",
        "untrac_inv/run_0",
        *[f"baselines/run_1/{m}" for m in METHODS],
        "report",
    ):
        assert os.path.isfile(os.path.join(finished, stage, "done.json")), stage
    report = open(os.path.join(finished, "report", "report.md")).read()
    for heading in ("Table 2", "Tables 3 and 5", "seed vs seed", "noise ceiling", "Figure 3"):
        assert heading in report
    for method in (
        "UnTrac",
        "UnTrac-Inv",
        "GradDot",
        "GradCos",
        "TracIn",
        "HIF (LiSSA)",
        "HIF (Arnoldi)",
    ):
        assert f"| {method} |" in report
    for figure in (
        "influence_curves_untrac.png",
        "influence_curves_untrac_inv.png",
        "correlation_by_step.png",
    ):
        assert os.path.getsize(os.path.join(finished, "report", figure)) > 1000


def test_correlations_match_the_influence_files(finished):
    """correlations.csv, recomputed from the stage files with numpy."""
    table = read_csv(os.path.join(finished, "report", "correlations.csv"))
    assert list(table.columns) == ["method", "test_dataset", "run", "pearson", "spearman"]
    truth = read_csv(os.path.join(finished, "ground_truth", "influence.csv")).set_index(
        "train_dataset"
    )["influence"]
    for run in (0, 1):
        untrac = read_csv(os.path.join(finished, "untrac", f"run_{run}", "influence.csv"))
        values = untrac.set_index("train_dataset")["influence"].loc[truth.index]
        row = table[(table.method == "untrac") & (table.run == run)].iloc[0]
        assert row["pearson"] == pytest.approx(np.corrcoef(values, truth)[0, 1], rel=1e-9)
    assert sorted(table.method.unique()) == sorted(["untrac", "untrac_inv", *METHODS])
    # Runs sample different examples: UnTrac's influence differs between runs.
    first, second = (
        read_csv(os.path.join(finished, "untrac", f"run_{r}", "influence.csv")) for r in (0, 1)
    )
    assert not np.allclose(first.influence, second.influence)


def test_rerunning_a_finished_experiment_recomputes_nothing(finished, tmp_path):
    stamps = {
        path: os.path.getmtime(path)
        for path in glob.glob(f"{finished}/**/done.json", recursive=True)
    }
    ctx = parse(
        ["--config", os.path.join(os.path.dirname(finished), "experiment.yaml")], prog="test"
    )
    jobs = experiment.plan_jobs(ctx, ["train_1", "train_2", "train_3", "train_4"], ["test"])
    assert all(experiment.job_done(ctx, job) for job in jobs)
    run_experiment(ctx, show_progress=False)
    assert {path: os.path.getmtime(path) for path in stamps} == stamps


def test_an_interrupted_experiment_completes_only_what_is_missing(finished, tmp_path, monkeypatch):
    config = tiny_experiment(str(tmp_path))
    ctx = parse(["--config", config], prog="test")
    real = experiment.execute_job
    ran: list[Job] = []

    def interrupt_at_untrac(ctx, job):
        if job.stage == "untrac":
            raise KeyboardInterrupt  # the user stops it after the ground truth
        ran.append(job)
        real(ctx, job)

    monkeypatch.setattr(experiment, "execute_job", interrupt_at_untrac)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(ctx, show_progress=False)
    assert [job.stage for job in ran] == ["ground_truth"] * 9
    truth_stamp = os.path.getmtime(
        os.path.join(ctx.output_dir, "ground_truth", "train_1", "done.json")
    )

    def record(ctx, job):
        ran.append(job)
        real(ctx, job)

    ran.clear()
    monkeypatch.setattr(experiment, "execute_job", record)
    run_experiment(parse(["--config", config], prog="test"), show_progress=False)
    assert "ground_truth" not in {job.stage for job in ran}
    assert (
        os.path.getmtime(os.path.join(ctx.output_dir, "ground_truth", "train_1", "done.json"))
        == truth_stamp
    )
    # The results equal the uninterrupted run's, byte for byte.
    for name in RESULT_FILES:
        with (
            open(os.path.join(finished, name), "rb") as a,
            open(os.path.join(ctx.output_dir, name), "rb") as b,
        ):
            assert a.read() == b.read(), name


def test_a_failing_job_is_recorded_and_retried_alone(tmp_path, monkeypatch):
    config = tiny_experiment(
        str(tmp_path),
        runs=1,
        ground_truth={"seeds": 1},
        stages=["model", "ground_truth", "untrac", "report"],
    )
    real = experiment.execute_job

    def broken_train_2(ctx, job):
        if job.target == "train_2" and job.stage == "untrac":
            raise UserError("dataset 'train_2': file '/gone.jsonl' does not exist")
        real(ctx, job)

    monkeypatch.setattr(experiment, "execute_job", broken_train_2)
    ctx = parse(["--config", config], prog="test")
    run_experiment(ctx, show_progress=False)
    failures = read_csv(os.path.join(ctx.output_dir, "failures.csv"))
    assert failures.to_dict("records") == [
        {
            "stage": "untrac",
            "target": "train_2",
            "run": 0,
            "seed": 0,
            "reason": "UserError: dataset 'train_2': file '/gone.jsonl' does not exist",
        }
    ]
    untrac = read_csv(os.path.join(ctx.output_dir, "untrac", "influence.csv"))
    assert sorted(untrac.train_dataset) == ["train_1", "train_3", "train_4"]
    report = open(os.path.join(ctx.output_dir, "report", "report.md")).read()
    assert "## Failed jobs" in report and "/gone.jsonl" in report

    ran: list[Job] = []

    def record(ctx, job):
        ran.append(job)
        real(ctx, job)

    monkeypatch.setattr(experiment, "execute_job", record)
    run_experiment(parse(["--config", config], prog="test"), show_progress=False)
    assert ran == [Job("untrac", "train_2")]
    assert not os.path.exists(os.path.join(ctx.output_dir, "failures.csv"))
    assert sorted(
        read_csv(os.path.join(ctx.output_dir, "untrac", "influence.csv")).train_dataset
    ) == ["train_1", "train_2", "train_3", "train_4"]


def test_report_command_rebuilds_the_report(finished, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(finished, copy)
    shutil.rmtree(os.path.join(copy, "report"))
    main(["report", copy])
    rebuilt = read_csv(os.path.join(copy, "report", "correlations.csv"))
    original = read_csv(os.path.join(finished, "report", "correlations.csv"))
    pd.testing.assert_frame_equal(rebuilt, original)


@pytest.mark.parametrize(
    "override, message",
    [
        (["--data.exclude", "train_1"], "data.exclude='train_1'"),
        (["--data.unlearn", "train_1"], "data.unlearn='train_1'"),
        (["--stages", "[model, unlearn]"], r"unknown stage\(s\) \['unlearn'\]"),
        (["--runs", "0"], "runs=0 must be >= 1"),
    ],
)
def test_contradictory_configs_are_refused(tmp_path, override, message):
    ctx = parse(["--config", tiny_experiment(str(tmp_path)), *override], prog="test")
    with pytest.raises(UserError, match=message):
        run_experiment(ctx, show_progress=False)
    assert not os.path.exists(ctx.output_dir)
