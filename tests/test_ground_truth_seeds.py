"""A ground truth from several seeds: the mean over seeds, the per-seed file,
the noise ceiling it gives, and caching of finished seeds."""

from __future__ import annotations

import os

import lightning.pytorch as pl
import pandas as pd
import pytest

from lit_untrac.evaluation.noise import noise_ceiling
from lit_untrac.results import read_csv
from lit_untrac.stages.common import parse
from lit_untrac.stages.leave_out import run_ground_truth
from lit_untrac.stages.model import train_theta0
from tests.experiments import write_experiment


class CountFits(pl.Callback):
    def __init__(self) -> None:
        self.roots: list[str] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.roots.append(trainer.default_root_dir)


def experiment(tmp_path, seeds: int, **sections):
    path = write_experiment(
        str(tmp_path),
        ground_truth={"seeds": seeds, **sections.pop("ground_truth", {})},
        baselines={"methods": ["graddot"]},
        **sections,
    )
    ctx = parse(["--config", path], prog="test")
    if not os.path.isdir(os.path.join(ctx.output_dir, "model", "export")):
        train_theta0(ctx)
    return ctx


def test_mean_over_seeds_and_per_seed_file(tmp_path):
    ctx = experiment(tmp_path, seeds=2)
    path = run_ground_truth(ctx)
    mean = read_csv(path).set_index(["train_dataset", "test_dataset"])["influence"]
    per_seed = read_csv(os.path.join(os.path.dirname(path), "influence_seeds.csv"))
    assert sorted(per_seed["seed"].unique()) == [0, 1]
    by_hand = per_seed.groupby(["train_dataset", "test_dataset"])["influence"].mean()
    pd.testing.assert_series_equal(
        mean.sort_index(), by_hand.sort_index(), check_names=False, rtol=1e-12
    )
    # The two seeds trained different models.
    first, second = (per_seed[per_seed["seed"] == s]["influence"].to_numpy() for s in (0, 1))
    assert not (first == second).all()


def test_training_that_ignores_the_seed_gives_a_ceiling_of_one(tmp_path):
    """Full-batch training (a batch of 96 holds every example of the 32-example
    mixture 3 times and of each 24-example leave-out mixture 4 times, so the
    order cannot matter), no dropout, the same initialisation."""
    ctx = experiment(
        tmp_path,
        seeds=3,
        ground_truth={"vary_init": False},
        data={"batch_size": 96, "train_steps": 4},
    )
    path = run_ground_truth(ctx)
    per_seed = read_csv(os.path.join(os.path.dirname(path), "influence_seeds.csv"))
    ceiling = noise_ceiling(per_seed).iloc[0]
    assert ceiling["seeds"] == 3
    for statistic in ("pearson", "spearman"):
        assert ceiling[f"{statistic}_pairs"] == pytest.approx(1.0, abs=1e-9)
        assert ceiling[f"{statistic}_ceiling"] == pytest.approx(1.0, abs=1e-9)


def test_noisy_training_gives_a_lower_ceiling(tmp_path):
    ctx = experiment(tmp_path, seeds=2, data={"batch_size": 2, "train_steps": 12})
    path = run_ground_truth(ctx)
    ceiling = noise_ceiling(
        read_csv(os.path.join(os.path.dirname(path), "influence_seeds.csv"))
    ).iloc[0]
    assert ceiling["pearson_pairs"] < 0.999
    assert ceiling["pearson_ceiling"] < 0.9999


def test_adding_a_seed_trains_only_the_new_seeds_models(tmp_path):
    ctx = experiment(tmp_path, seeds=1)
    first = CountFits()
    run_ground_truth(ctx, callbacks=[first])
    assert len(first.roots) == 4
    ctx = experiment(tmp_path, seeds=2)
    second = CountFits()
    run_ground_truth(ctx, callbacks=[second])
    folder = os.path.join(ctx.output_dir, "ground_truth", "seed_1")
    assert sorted(second.roots) == sorted(
        os.path.join(folder, name)
        for name in ("theta_0", "train_1", "train_2", "train_3", "train_4")
    )
    third = CountFits()
    run_ground_truth(ctx, callbacks=[third])
    assert third.roots == []
