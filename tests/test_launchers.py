"""The Ray launcher gives the same tables as the local one."""

from __future__ import annotations

import os

import pytest

from lit_untrac.experiment import run_experiment
from lit_untrac.stages.common import parse
from tests.experiments import write_experiment

pytest.importorskip("ray")

FILES = [
    "ground_truth/influence.csv",
    "untrac/influence.csv",
    "untrac/curves.csv",
    "untrac_inv/influence.csv",
    "baselines/graddot/influence.csv",
    "report/correlations.csv",
]


def config(folder: str, launcher: str) -> str:
    os.makedirs(folder, exist_ok=True)
    return write_experiment(
        folder,
        launcher=launcher,
        ray={"num_cpus": 2, "cpus_per_job": 1},
        untrac={"every_n_steps": 2, "optimizer_args": {"lr": 1e-3}},
        untrac_inv={"batch_size": 8, "epochs": 2, "optimizer_args": {"lr": 1e-3}},
        baselines={"methods": ["graddot"]},
    )


@pytest.mark.slow
def test_ray_on_two_cpus_gives_the_local_tables(tmp_path):
    local = parse(["--config", config(str(tmp_path / "local"), "local")], prog="test")
    run_experiment(local, show_progress=False)
    ray_ctx = parse(["--config", config(str(tmp_path / "ray"), "ray")], prog="test")
    run_experiment(ray_ctx, show_progress=False)
    for name in FILES:
        with (
            open(os.path.join(local.output_dir, name), "rb") as a,
            open(os.path.join(ray_ctx.output_dir, name), "rb") as b,
        ):
            assert a.read() == b.read(), name
    assert not os.path.exists(os.path.join(ray_ctx.output_dir, "failures.csv"))
