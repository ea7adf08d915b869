"""The command line: every shipped config parses, the runnable ones run, and
bad input is one line on stderr with exit status 2."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

from lit_untrac.cli import main
from tests.conftest import ROOT

FIT_CONFIGS = sorted(glob.glob(f"{ROOT}/configs/fit/*.yaml"))
#: Configs that run offline, with a model small enough for every test run.
OFFLINE = [c for c in FIT_CONFIGS if os.path.basename(c).startswith("tiny_")]
SMOLLM = [c for c in FIT_CONFIGS if os.path.basename(c).startswith("smollm2_")]


def run_cli(*args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-m", "lit_untrac", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=os.path.basename)
def test_every_fit_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "model:" in printed and "data:" in printed and "trainer:" in printed


@pytest.mark.parametrize("config", OFFLINE, ids=os.path.basename)
def test_offline_fit_configs_run(config, tmp_path):
    main(
        [
            "fit",
            "--config",
            config,
            "--trainer.fast_dev_run=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert (tmp_path / "export" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.smollm
@pytest.mark.parametrize("config", SMOLLM[:1], ids=os.path.basename)
def test_smollm_fit_config_takes_a_step(config, tmp_path):
    pytest.importorskip("gguf")
    main(
        [
            "fit",
            "--config",
            config,
            "--trainer.fast_dev_run=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--model.export=false",
            "--data.train_steps=1",
        ]
    )


def test_bad_input_is_one_line_without_traceback(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "model:\n  model: {config: {model_type: gpt2, n_layer: 1, n_head: 2, n_embd: 16}, tokenizer: bytes}\n"
        "data:\n  train:\n    - {name: a, files: /no/such/file.jsonl}\n"
        "trainer: {max_epochs: 1, logger: false}\n"
    )
    result = run_cli("fit", "--config", str(config), cwd=str(tmp_path))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lit-untrac: error:")]
    assert errors == ["lit-untrac: error: dataset 'a': file '/no/such/file.jsonl' does not exist"]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_unknown_command():
    result = run_cli("unlearn-everything")
    assert result.returncode == 2
    assert "unknown command 'unlearn-everything'" in result.stderr


def test_usage_lists_commands():
    result = run_cli("--help")
    assert result.returncode == 0 and "fit" in result.stdout
