"""Two data-parallel CPU processes (``ddp``, gloo) give the influence values of
one process, for the same global batch: UnTrac, UnTrac-Inv and every
gradient baseline. ``ddp`` re-executes the command in each process, so the
commands run in subprocesses, as a user would run them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lit_untrac.results import read_csv
from tests.conftest import ROOT
from tests.experiments import write_experiment

METHODS = ["graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"]


def lit_untrac(*args: str) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "lit_untrac", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # the launcher's exit code is rank zero's: the other rank must not have failed either
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("ddp"))
    path = write_experiment(
        folder,
        untrac={"batch_size": 2, "every_n_steps": 2, "optimizer_args": {"lr": 1e-3}},
        untrac_inv={"batch_size": 8, "epochs": 2, "optimizer_args": {"lr": 1e-3}},
        baselines={
            "methods": METHODS,
            "tracin_every_n_steps": 3,
            "hessian_examples": 8,
            "batch_size": 4,
            "lissa": {"depth": 4, "scale": 100.0, "batch_size": 8},
            "arnoldi": {"iterations": 6, "top_k": 4},
        },
    )
    lit_untrac("train", "--config", path)
    return path


def run_both(config: str, command: str, *extra: str) -> tuple[str, str]:
    folder = os.path.dirname(config)
    theta0 = os.path.join(folder, "experiment", "model", "export")
    outputs = []
    for devices, strategy in ((1, "auto"), (2, "ddp")):
        output = os.path.join(folder, f"{command}_{devices}")
        lit_untrac(
            command,
            "--config",
            config,
            "--pretrained",
            theta0,
            "--output_dir",
            output,
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            str(devices),
            "--trainer.strategy",
            strategy,
            "--baselines.tracin_dir",
            os.path.join(folder, "experiment", "model", "tracin"),
            *extra,
        )
        outputs.append(output)
    return outputs[0], outputs[1]


def assert_same_influence(one: str, two: str) -> None:
    a = read_csv(one).sort_values(["train_dataset", "test_dataset"]).reset_index(drop=True)
    b = read_csv(two).sort_values(["train_dataset", "test_dataset"]).reset_index(drop=True)
    assert a[["method", "train_dataset", "test_dataset"]].equals(
        b[["method", "train_dataset", "test_dataset"]]
    )
    assert b["influence"].tolist() == pytest.approx(a["influence"].tolist(), rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("command, stage", [("untrac", "untrac"), ("untrac-inv", "untrac_inv")])
def test_unlearning_in_two_processes_matches_one(config, command, stage):
    one, two = run_both(config, command)
    assert_same_influence(
        os.path.join(one, stage, "influence.csv"), os.path.join(two, stage, "influence.csv")
    )


@pytest.mark.slow
def test_baselines_in_two_processes_match_one(config):
    one, two = run_both(config, "baselines")
    for method in METHODS:
        assert_same_influence(
            os.path.join(one, "baselines", method, "influence.csv"),
            os.path.join(two, "baselines", method, "influence.csv"),
        )
