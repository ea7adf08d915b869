"""A run killed part-way resumes from its checkpoint: the tracker's curves
continue where they were and the results equal an uninterrupted run's. A
SIGTERM stops a run after the current step, with a checkpoint of that step."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT
from tests.experiments import write_experiment

KILL = [{"class_path": "tests.experiments.KillAfter", "init_args": {"step": 5}}]
TERM = [{"class_path": "tests.experiments.TermAt", "init_args": {"step": 4}}]


def lit_untrac(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "lit_untrac", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("resume"))
    config = write_experiment(
        folder,
        train_steps=8,
        untrac={"every_n_steps": 1, "checkpoint_every_n_steps": 3, "optimizer_args": {"lr": 1e-3}},
        ground_truth={"checkpoint_every_n_steps": 3},
        baselines={"methods": ["graddot"]},
    )
    assert lit_untrac("train", "--config", config).returncode == 0
    with open(config) as handle:
        killing = yaml.safe_load(handle)
    killing["trainer"]["callbacks"] = KILL
    killing_path = os.path.join(folder, "killing.yaml")
    with open(killing_path, "w") as handle:
        yaml.safe_dump(killing, handle)
    killing["trainer"]["callbacks"] = TERM
    terminating_path = os.path.join(folder, "terminating.yaml")
    with open(terminating_path, "w") as handle:
        yaml.safe_dump(killing, handle)
    return {
        "config": config,
        "killing": killing_path,
        "terminating": terminating_path,
        "theta0": os.path.join(folder, "experiment", "model", "export"),
    }


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, stage, files",
    [
        ("untrac", "untrac", ["curves.csv", "influence.csv"]),
        ("leave-out", "ground_truth", ["influence.csv"]),
    ],
)
def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(
    setup, tmp_path, command, stage, files
):
    common = ["--pretrained", setup["theta0"], "--targets", "train_2"]
    whole = str(tmp_path / "whole")
    assert (
        lit_untrac(command, "--config", setup["config"], "--output_dir", whole, *common).returncode
        == 0
    )

    resumed = str(tmp_path / "resumed")
    killed = lit_untrac(command, "--config", setup["killing"], "--output_dir", resumed, *common)
    assert killed.returncode == -9  # SIGKILL after 5 steps; the last checkpoint is at step 3
    job = (
        os.path.join(resumed, stage, "targets", "train_2")
        if stage == "untrac"
        else os.path.join(resumed, stage, "train_2")
    )
    assert os.path.isfile(os.path.join(job, "checkpoints", "last.ckpt"))
    assert not os.path.exists(os.path.join(job, "done.json"))

    finished = lit_untrac(command, "--config", setup["config"], "--output_dir", resumed, *common)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Restoring states from the checkpoint" in finished.stderr + finished.stdout
    assert not os.path.exists(os.path.join(job, "checkpoints"))
    for name in files:
        assert read(os.path.join(resumed, stage, name)) == read(os.path.join(whole, stage, name)), (
            name
        )


@pytest.mark.slow
def test_a_killed_theta0_training_resumes_and_exports_the_uninterrupted_model(setup, tmp_path):
    import torch

    from lit_untrac.models import load_model

    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    assert lit_untrac("train", "--config", setup["config"], "--output_dir", whole).returncode == 0
    killed = lit_untrac("train", "--config", setup["killing"], "--output_dir", resumed)
    assert killed.returncode == -9  # SIGKILL after 5 of 8 steps; the last checkpoint is at step 3
    folder = os.path.join(resumed, "model")
    assert os.path.isfile(os.path.join(folder, "checkpoints", "last.ckpt"))
    finished = lit_untrac("train", "--config", setup["config"], "--output_dir", resumed)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Restoring states from the checkpoint" in finished.stderr + finished.stdout
    assert not os.path.exists(os.path.join(folder, "checkpoints"))
    expected, _ = load_model(os.path.join(whole, "model", "export"))
    got, _ = load_model(os.path.join(folder, "export"))
    for (name, a), (_, b) in zip(expected.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_sigterm_stops_after_the_step_with_a_checkpoint_of_it_and_the_rerun_matches(
    setup, tmp_path
):
    """Lightning alone would heed SIGTERM only at the epoch's end (after all
    its steps); the job stops after step 5, not at the step-3 checkpoint."""
    import torch

    common = ["--pretrained", setup["theta0"], "--targets", "train_2"]
    whole, resumed = str(tmp_path / "whole"), str(tmp_path / "resumed")
    assert (
        lit_untrac("untrac", "--config", setup["config"], "--output_dir", whole, *common).returncode
        == 0
    )
    stopped = lit_untrac(
        "untrac", "--config", setup["terminating"], "--output_dir", resumed, *common
    )
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    job = os.path.join(resumed, "untrac", "targets", "train_2")
    checkpoint = torch.load(os.path.join(job, "checkpoints", "last.ckpt"), weights_only=False)
    assert checkpoint["global_step"] == 5  # the step that was running when SIGTERM came
    assert not os.path.exists(os.path.join(job, "done.json"))
    finished = lit_untrac("untrac", "--config", setup["config"], "--output_dir", resumed, *common)
    assert finished.returncode == 0, finished.stderr[-2000:]
    for name in ("curves.csv", "influence.csv"):
        assert read(os.path.join(resumed, "untrac", name)) == read(
            os.path.join(whole, "untrac", name)
        )
