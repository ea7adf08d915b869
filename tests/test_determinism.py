"""The same config and seed give the same results files, byte for byte, on
CPU; and bf16-mixed precision runs, close to float32."""

from __future__ import annotations

import os

from lit_untrac.cli import main
from lit_untrac.results import read_csv
from tests.test_untrac import write_config

FILES = [
    "untrac/influence.csv",
    "untrac/curves.csv",
    "untrac_inv/influence.csv",
    "untrac_inv/curves.csv",
]


def run(folder, theta0, *extra):
    folder.mkdir()
    config = write_config(
        folder,
        theta0,
        untrac={"every_n_steps": 2, "optimizer_args": {"lr": 1e-2}},
        untrac_inv={"batch_size": 6, "epochs": 2, "optimizer_args": {"lr": 1e-2}},
    )
    main(["untrac", "--config", config, *extra])
    main(["untrac-inv", "--config", config, *extra])
    return folder / "experiment"


def test_twice_the_same_bytes(theta0, tmp_path):
    first, second = run(tmp_path / "first", theta0), run(tmp_path / "second", theta0)
    for name in FILES:
        with open(first / name, "rb") as a, open(second / name, "rb") as b:
            assert a.read() == b.read(), name


def test_bf16_mixed_precision_runs_close_to_float32(theta0, tmp_path):
    full = run(tmp_path / "full", theta0)
    mixed = run(tmp_path / "mixed", theta0, "--trainer.precision", "bf16-mixed")
    a = read_csv(os.path.join(full, "untrac", "curves.csv"))
    b = read_csv(os.path.join(mixed, "untrac", "curves.csv"))
    start_a, start_b = a[a.step == 0].loss.to_numpy(), b[b.step == 0].loss.to_numpy()
    assert (
        (abs(start_a - start_b) / start_a) < 0.02
    ).all()  # bfloat16 keeps about 3 significant digits
    assert (start_a != start_b).any()  # and it did run in bfloat16
