"""Every bad input the product knows about, in one place, through the command
line: each stops the command with one line on stderr that names the value and
what was expected (exit status 2, no traceback), and nothing is written.

The data, model and method errors of the other modules, contradictory
configs, and missing or corrupt checkpoints."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from lit_untrac.attribution.tracin import INDEX_FORMAT
from lit_untrac.cli import main
from tests.conftest import TINY_GPT2, synthetic_specs

N = 4


def config(tmp_path, theta0: str, **sections) -> str:
    cfg = {
        "name": "bad",
        "output_dir": str(tmp_path / "out"),
        "pretrained": theta0,
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
        "model": {"model": dict(TINY_GPT2)},
        "data": {**synthetic_specs(n=N), "batch_size": 2, "train_steps": 2},
        "baselines": {"hessian_examples": 4, "arnoldi": {"iterations": 2, "top_k": 2}},
    }
    for key, value in sections.items():
        cfg[key] = (
            {**cfg[key], **value}
            if isinstance(value, dict) and isinstance(cfg.get(key), dict)
            else value
        )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("lit-untrac: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def tracin_without_lrs(tmp_path) -> str:
    folder = tmp_path / "tracin"
    folder.mkdir()
    (folder / "index.json").write_text(
        json.dumps(
            {
                "format": INDEX_FORMAT,
                "weights": "model",
                "checkpoints": [{"step": 4, "file": "step_0000004.pt", "lr": None}],
            }
        )
    )
    return str(folder)


def broken(tmp_path, **spec) -> dict:
    train = synthetic_specs(n=N)["train"]
    train[0] = {"name": "train_1", **spec}
    return {"train": train}


# (command, extra arguments, config sections (a function of tmp_path), expected fragment)
CASES = {
    # data
    "unknown dataset to exclude": (
        "fit",
        ["--data.exclude", "train_9"],
        None,
        "cannot exclude unknown dataset 'train_9'",
    ),
    "unknown target to unlearn": (
        "untrac",
        ["--targets", "train_9"],
        None,
        "unknown target 'train_9'",
    ),
    "unknown leave-out target": (
        "leave-out",
        ["--targets", "train_9"],
        None,
        "unknown target(s) ['train_9']",
    ),
    "unknown test set to unlearn": (
        "untrac-inv",
        ["--targets", "tset"],
        None,
        "unknown target 'tset'",
    ),
    "empty dataset": (
        "untrac",
        [],
        lambda t: {
            "data": broken(t, generator="synthetic_a", generator_args={"split": "train_1", "n": 0})
        },
        "dataset 'train_1' is empty",
    ),
    "missing prompt field": (
        "untrac",
        [],
        lambda t: {"data": broken(t, files=write(t, "q.jsonl", '{"q": "a", "completion": "b"}'))},
        "has no field 'prompt'; its fields are",
    ),
    "missing text field": (
        "untrac",
        [],
        lambda t: {
            "data": {
                **broken(t, files=write(t, "c.txt", "a line\n"), format="text", text_field="body"),
                "block_size": 64,
            }
        },
        "has no field 'body'",
    ),
    "missing file": (
        "untrac",
        [],
        lambda t: {"data": broken(t, files="/no/such/data.jsonl")},
        "file '/no/such/data.jsonl' does not exist",
    ),
    "unreadable file": (
        "untrac",
        [],
        lambda t: {"data": broken(t, files=write(t, "bad.jsonl", "{not json\n"))},
        "cannot read",
    ),
    "file of an unknown type": (
        "untrac",
        [],
        lambda t: {"data": broken(t, files=write(t, "data.xlsx", "x"))},
        "must share one of the extensions",
    ),
    # models
    "unknown model name": (
        "untrac",
        ["--pretrained", "nobody/no-such-model"],
        None,
        "cannot load model 'nobody/no-such-model'",
    ),
    "missing model folder": (
        "untrac",
        ["--pretrained", "./no/such/folder"],
        None,
        "model folder './no/such/folder' does not exist",
    ),
    "vocabulary smaller than the tokenizer's": (
        "train",
        ["--pretrained", "null"],
        lambda t: {
            "model": {
                "model": {
                    "config": {**TINY_GPT2["config"], "vocab_size": 100},
                    "tokenizer": "bytes",
                }
            }
        },
        "has 100 embedding rows but its tokenizer has 258 tokens",
    ),
    "block size larger than the positions": (
        "train",
        ["--pretrained", "null"],
        lambda t: {
            "data": {
                "block_size": 512,
                "train": [
                    {
                        "name": "text",
                        "generator": "synthetic_a",
                        "generator_args": {"split": "train_3", "n": 64},
                        "format": "text",
                        "text_field": "prompt",
                    }
                ],
            }
        },
        "block_size=512 is larger than the model's 256 positions",
    ),
    "missing checkpoint": (
        "untrac",
        ["--pretrained", "/no/such/theta0.ckpt"],
        None,
        "checkpoint '/no/such/theta0.ckpt' does not exist",
    ),
    "corrupt checkpoint": (
        "untrac",
        ["--pretrained", "CORRUPT"],
        None,
        "is not a readable lit-untrac checkpoint",
    ),
    # methods
    "evaluation every 0 steps": (
        "untrac",
        ["--untrac.every_n_steps", "0"],
        None,
        "every_n_steps=0 must be an integer >= 1",
    ),
    "gradient clipping while unlearning": (
        "untrac",
        ["--trainer.gradient_clip_val", "1.0"],
        None,
        "unlearning must not clip gradients",
    ),
    "unknown baseline method": ("baselines", ["--methods", "graddot,magic"], None, "magic"),
    "TracIn without checkpoints": (
        "baselines",
        ["--methods", "tracin", "--baselines.tracin_dir", "/no/tracin"],
        None,
        "no TracIn checkpoints: folder '/no/tracin' does not exist",
    ),
    "TracIn checkpoints without learning rates": (
        "baselines",
        ["--methods", "tracin", "--baselines.tracin_dir", "TRACIN"],
        None,
        "has no learning rate",
    ),
    "Arnoldi p larger than n": (
        "baselines",
        ["--methods", "hif_arnoldi"],
        lambda t: {"baselines": {"arnoldi": {"iterations": 2, "top_k": 5}}},
        "top_k (p=5) cannot exceed iterations (n=2)",
    ),
    "LiSSA scale too small": (
        "baselines",
        ["--methods", "hif_lissa"],
        lambda t: {"baselines": {"lissa": {"depth": 30, "scale": 1e-4}}},
        "scale",
    ),
    "no ground-truth seed": (
        "leave-out",
        [],
        lambda t: {"ground_truth": {"seeds": 0}},
        "ground_truth.seeds=0 must be >= 1",
    ),
    # contradictory configs
    "a test set that is also a training set": (
        "untrac",
        [],
        lambda t: {
            "data": {
                "test": [
                    {
                        "name": "train_1",
                        "generator": "synthetic_a",
                        "generator_args": {"split": "test", "n": N},
                    }
                ]
            }
        },
        "['train_1'] appear more than once",
    ),
    "unlearning a dataset that is also excluded": (
        "untrac",
        [],
        lambda t: {"data": {"exclude": "train_1", "unlearn": "train_1"}},
        "contradict",
    ),
    "an experiment with an excluded dataset": (
        "experiment",
        [],
        lambda t: {"data": {"exclude": "train_2"}},
        "data.exclude='train_2'",
    ),
    "an unknown stage": (
        "experiment",
        ["--stages", "[model, unlearn]"],
        None,
        "unknown stage(s) ['unlearn']",
    ),
    "no runs": ("experiment", ["--runs", "0"], None, "runs=0 must be >= 1"),
    "report of a missing folder": (
        "report",
        ["/no/such/experiment"],
        None,
        "experiment folder '/no/such/experiment' does not exist",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, theta0, capsys):
    command, extra, sections, fragment = CASES[case]
    path = config(tmp_path, theta0, **(sections(tmp_path) if sections else {}))
    corrupt = write(tmp_path, "theta0.ckpt", "not a checkpoint")
    extra = [
        corrupt if a == "CORRUPT" else tracin_without_lrs(tmp_path) if a == "TRACIN" else a
        for a in extra
    ]
    if command == "report":
        argv = [command, *extra]
    elif command == "fit":  # LightningCLI's fit reads the model, data and trainer sections
        fit = yaml.safe_load(open(path))
        fit_config = write(
            tmp_path,
            "fit.yaml",
            yaml.safe_dump(
                {
                    "model": fit["model"],
                    "data": fit["data"],
                    "trainer": {**fit["trainer"], "default_root_dir": str(tmp_path / "out")},
                }
            ),
        )
        argv = [command, "--config", fit_config, *extra]
    else:
        argv = [command, "--config", path, *extra]
    error = one_line_error(capsys, argv)
    assert fragment in error, error
    written = [os.path.join(root, f) for root, _, files in os.walk(tmp_path / "out") for f in files]
    assert not [f for f in written if f.endswith((".csv", "done.json", ".pt", ".safetensors"))], (
        written
    )
