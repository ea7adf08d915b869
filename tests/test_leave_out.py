"""The leave-dataset-out ground truth: what each leave-out model saw, its
step count, Eq. 1 against losses computed one example at a time, reruns,
and bad input."""

from __future__ import annotations

import json
import math
import os

import pytest

from lit_untrac.data import MixtureDataModule
from lit_untrac.errors import UserError
from lit_untrac.models import byte_tokenizer
from lit_untrac.results import read_csv
from lit_untrac.stages.common import parse
from lit_untrac.stages.leave_out import leave_out_steps, run_ground_truth
from lit_untrac.stages.model import train_theta0
from tests.conftest import synthetic_specs
from tests.experiments import DataRecorder, sequences, write_experiment

TRAIN = ["train_1", "train_2", "train_3", "train_4"]


@pytest.fixture(scope="module")
def examples():
    datamodule = MixtureDataModule(**synthetic_specs(n=8)).prepare(byte_tokenizer())
    return {name: list(datamodule.examples(name)) for name in [*TRAIN, "test"]}


@pytest.fixture(scope="module")
def theta0(tmp_path_factory, examples):
    """theta_0 trained once (6 steps of batch 4), with a recorder."""
    folder = str(tmp_path_factory.mktemp("theta0"))
    recorder = DataRecorder(examples["test"])
    ctx = parse(["--config", write_experiment(folder)], prog="test")
    train_theta0(ctx, callbacks=[recorder])
    model_folder = os.path.join(ctx.output_dir, "model")
    return {
        "export": os.path.join(model_folder, "export"),
        "steps": recorder.steps[model_folder],
        "test_loss": recorder.test_loss[model_folder],
    }


def context(tmp_path, theta0, *args: str, **sections):
    path = write_experiment(str(tmp_path), **sections)
    return parse(["--config", path, "--pretrained", theta0["export"], *args], prog="test")


def test_leave_out_models_never_see_their_dataset_and_match_eq_1(tmp_path, theta0, examples):
    recorder = DataRecorder(examples["test"])
    ctx = context(tmp_path, theta0)
    path = run_ground_truth(ctx, callbacks=[recorder])
    folder = os.path.dirname(path)
    table = read_csv(path)
    assert list(table.columns) == ["method", "train_dataset", "test_dataset", "influence"]
    assert sorted(table.train_dataset) == TRAIN and set(table.test_dataset) == {"test"}
    assert set(table.method) == {"ground_truth"}
    for target in TRAIN:
        run = os.path.join(folder, target)
        seen = recorder.seen[run]
        assert not set(seen) & sequences(examples[target]), f"{target} leaked into its leave-out"
        # T = 6 steps of 4 = 24 examples: one pass over the other three datasets
        others = set().union(*(sequences(examples[n]) for n in TRAIN if n != target))
        assert set(seen) == others and len(seen) == 24
        assert recorder.steps[run] == theta0["steps"] == 6
        assert not os.path.exists(os.path.join(run, "export"))
        assert not os.path.exists(os.path.join(run, "checkpoints"))
        expected = recorder.test_loss[run] - theta0["test_loss"]
        ours = float(table[table.train_dataset == target].influence.iloc[0])
        assert ours == pytest.approx(expected, rel=1e-4, abs=1e-4)
    assert os.path.isfile(os.path.join(folder, "done.json"))
    assert os.path.isfile(os.path.join(folder, "theta0_losses.json"))
    assert os.path.isfile(os.path.join(folder, "config.yaml"))

    rerun = DataRecorder()
    run_ground_truth(ctx, callbacks=[rerun])
    assert rerun.seen == {}  # every target was done: nothing retrained
    assert read_csv(path).equals(table)


def test_classic_variant_takes_the_same_epochs_over_less_data(tmp_path, theta0):
    assert leave_out_steps("paper", 512, 1024, 768) == 512
    assert leave_out_steps("classic", 512, 1024, 768) == 384
    assert leave_out_steps("classic", 6, 32, 24) == math.ceil(24 * 6 / 32) == 5
    recorder = DataRecorder()
    ctx = context(
        tmp_path,
        theta0,
        "--targets",
        "train_3",
        ground_truth={"variant": "classic", "reduction": "mean"},
    )
    path = run_ground_truth(ctx, callbacks=[recorder])
    folder = os.path.dirname(path)
    assert recorder.steps == {os.path.join(folder, "train_3"): 5}
    table = read_csv(path)
    assert list(table.train_dataset) == ["train_3"]
    assert not os.path.exists(os.path.join(folder, "done.json"))  # three targets to go
    with open(os.path.join(folder, "train_3", "done.json")) as handle:
        done = json.load(handle)
    assert done["train_steps"] == 5 and done["variant"] == "classic"
    with open(os.path.join(folder, "theta0_losses.json")) as handle:
        theta0_losses = json.load(handle)["losses"]["test"]
    mean_delta = (done["losses"]["test"]["sum"] - theta0_losses["sum"]) / 8
    assert float(table.influence.iloc[0]) == pytest.approx(mean_delta, rel=1e-9)


@pytest.mark.parametrize(
    "args, sections, message",
    [
        (["--targets", "train_9"], {}, r"unknown target\(s\) \['train_9'\]"),
        ([], {"ground_truth": {"seeds": 0}}, "ground_truth.seeds=0 must be >= 1"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, theta0, args, sections, message):
    ctx = context(tmp_path, theta0, *args, **sections)
    with pytest.raises(UserError, match=message):
        run_ground_truth(ctx)
    assert not os.path.exists(os.path.join(ctx.output_dir, "ground_truth"))


def test_an_unknown_variant_is_refused(tmp_path, theta0):
    ctx = context(tmp_path, theta0)
    ctx.cfg.ground_truth.variant = "bootstrap"
    with pytest.raises(UserError, match="unknown ground-truth variant 'bootstrap'"):
        run_ground_truth(ctx)
    assert not os.path.exists(os.path.join(ctx.output_dir, "ground_truth"))
