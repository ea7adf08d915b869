"""Sweeps: settings crossed, overrides applied, one table of correlations."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml

from lit_untrac.cli import main
from lit_untrac.config import experiment_parser
from lit_untrac.errors import UserError
from lit_untrac.results import read_csv
from lit_untrac.sweep import Variant, set_path, settings
from tests.experiments import write_experiment


def test_variants_are_crossed_with_the_grid():
    combined = settings(
        [
            Variant("sgd", {"untrac.optimizer": "SGD"}),
            Variant("adam", {"untrac.optimizer": "Adam"}),
        ],
        {"untrac.optimizer_args.lr": [1e-3, 1e-2]},
    )
    assert [v.name for v in combined] == [
        "sgd_lr=0.001",
        "sgd_lr=0.01",
        "adam_lr=0.001",
        "adam_lr=0.01",
    ]
    assert combined[1].set == {"untrac.optimizer": "SGD", "untrac.optimizer_args.lr": 1e-2}


def test_set_path_reaches_dict_entries_and_refuses_unknown_paths():
    cfg = experiment_parser().parse_args(["--data.train=[{name: a, generator: synthetic_a}]"])
    set_path(cfg, "untrac.optimizer_args.lr", 0.5)
    set_path(cfg, "untrac.epochs", 3)
    assert cfg.untrac.optimizer_args["lr"] == 0.5 and cfg.untrac.epochs == 3
    with pytest.raises(UserError, match="the config has no 'untrac.colour'"):
        set_path(cfg, "untrac.colour", 1)
    with pytest.raises(UserError, match="the config has no 'nothing'"):
        set_path(cfg, "nothing.here", 1)


def test_a_sweep_writes_one_table_of_correlations(tmp_path):
    base = write_experiment(
        str(tmp_path),
        untrac={"every_n_steps": 4, "optimizer_args": {"lr": 1e-3}},
        baselines={"methods": ["graddot"]},
    )
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "base": "experiment.yaml",
                "name": "lr",
                "methods": ["untrac"],
                "variants": [
                    {
                        "name": "sgd",
                        "set": {"untrac.optimizer": "SGD", "untrac.optimizer_args": {}},
                    },
                    {"name": "adam", "set": {"untrac.optimizer": "Adam"}},
                ],
                "grid": {"untrac.optimizer_args.lr": [1e-3, 1e-2]},
            }
        )
    )
    main(["sweep", "--config", str(sweep)])
    output = os.path.join(os.path.dirname(base), "experiment", "sweeps", "lr")
    table = read_csv(os.path.join(output, "sweep.csv"))
    assert sorted(table.setting) == sorted(
        ["sgd_lr=0.001", "sgd_lr=0.01", "adam_lr=0.001", "adam_lr=0.01"]
    )
    truth = read_csv(
        os.path.join(os.path.dirname(base), "experiment", "ground_truth", "influence.csv")
    )
    truth = truth.set_index("train_dataset")["influence"]
    for row in table.itertuples():
        influence = read_csv(os.path.join(output, row.setting, "untrac", "influence.csv"))
        values = influence.set_index("train_dataset")["influence"].loc[truth.index]
        assert row.pearson == pytest.approx(np.corrcoef(values, truth)[0, 1], rel=1e-9)
    with open(os.path.join(output, "sgd_lr=0.01", "untrac", "config.yaml")) as handle:
        resolved = yaml.safe_load(handle)
    assert resolved["untrac"]["optimizer"] == "SGD" and resolved["untrac"]["optimizer_args"] == {
        "lr": 0.01
    }
    assert "| adam_lr=0.01 | UnTrac |" in open(os.path.join(output, "sweep.md")).read()
    assert os.path.getsize(os.path.join(output, "correlation_by_step.png")) > 1000


SWEEP_CONFIGS = sorted(
    __import__("glob").glob(
        os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "sweeps", "*.yaml")
    )
)


@pytest.mark.parametrize("path", SWEEP_CONFIGS, ids=os.path.basename)
def test_every_sweep_config_parses_and_applies_to_its_base(path):
    import copy

    from lit_untrac.sweep import _base_path, sweep_parser

    parser = sweep_parser()
    cfg = parser.instantiate(parser.parse_args(["--config", path]))
    base = experiment_parser().parse_args(["--config", _base_path(path, cfg.base)])
    variants = settings(cfg.variants, cfg.grid)
    assert len(variants) >= 4
    for variant in variants:
        changed = copy.deepcopy(base)
        for key, value in variant.set.items():
            set_path(changed, key, value)


def test_the_default_experiment_config_is_shipped_in_the_package():
    from lit_untrac.experiment import default_config

    root = os.path.dirname(os.path.dirname(__file__))
    with (
        open(default_config()) as packaged,
        open(os.path.join(root, "configs", "experiments", "default.yaml")) as shipped,
    ):
        assert packaged.read() == shipped.read()
