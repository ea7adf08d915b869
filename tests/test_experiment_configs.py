"""Every experiment config in configs/experiments parses with the experiment
parser, names a theta_0 and sets up both unlearning sections."""

from __future__ import annotations

import glob
import os

import pytest

from lit_untrac.config import experiment_parser
from tests.conftest import ROOT

EXPERIMENT_CONFIGS = sorted(glob.glob(f"{ROOT}/configs/experiments/*.yaml"))


def test_there_are_experiment_configs():
    names = {os.path.basename(c) for c in EXPERIMENT_CONFIGS}
    assert {"tiny_synthetic_a.yaml", "tiny_synthetic_b.yaml"} <= names
    assert {"smollm2_synthetic_a.yaml", "smollm2_synthetic_b.yaml"} <= names


@pytest.mark.parametrize("config", EXPERIMENT_CONFIGS, ids=os.path.basename)
def test_every_experiment_config_parses(config):
    cfg = experiment_parser().parse_args(["--config", config])
    name = os.path.basename(config).removesuffix(".yaml")
    assert cfg.name == name and cfg.output_dir == f"runs/{name}"
    assert cfg.model.model is not None and cfg.data.train and cfg.data.test
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    # the paper's UnTrac, or the smallest global batch that the processes can share
    assert (cfg.untrac.batch_size, cfg.untrac.epochs) == (
        max(1, devices * cfg.trainer.num_nodes),
        1,
    )
    assert (cfg.untrac_inv.batch_size, cfg.untrac_inv.epochs) == (256, 5)  # and UnTrac-Inv
    for section in (cfg.untrac, cfg.untrac_inv):
        assert section.optimizer_args["lr"] == 5.0e-5 and section.scheduler == "constant"
    assert cfg.trainer.gradient_clip_val is None
    assert cfg.trainer.logger.init_args.offline is True
