"""The untrac and untrac-inv commands against the paper's equations, computed
by a plain PyTorch loop: gradient ascent with the same optimizer, seed and
data order, and Eq. 2 / Eq. 4 evaluated one example at a time."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from lit_untrac.cli import main
from lit_untrac.data import MixtureDataModule
from tests.conftest import synthetic_specs

N = 6  # examples per synthetic set
LR = 1e-2  # large, so that influence is far above float32 rounding
DATA_SEED = 3


def write_config(folder, theta0: str, data: dict | None = None, **sections) -> str:
    config = {
        "name": "tiny",
        "output_dir": str(folder / "experiment"),
        "pretrained": theta0,
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "enable_progress_bar": False},
        "data": {**(data or synthetic_specs(n=N)), "seed": DATA_SEED},
        **sections,
    }
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def read_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---- the reference: a plain PyTorch loop ------------------------------------


def pad(examples: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(e["input_ids"]) for e in examples)
    batch = {
        "input_ids": torch.full((len(examples), width), pad_id),
        "attention_mask": torch.zeros((len(examples), width), dtype=torch.long),
        "labels": torch.full((len(examples), width), -100),
    }
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        batch["input_ids"][i, :n] = e["input_ids"]
        batch["attention_mask"][i, :n] = 1
        batch["labels"][i, :n] = e["labels"]
    return batch


def summed_losses(model, sets: dict[str, list[dict]]) -> dict[str, float]:
    """sum_j L(z_j, theta) per set, one example at a time (transformers' own loss)."""
    model.eval()
    with torch.no_grad():
        sums = {
            name: sum(
                model(input_ids=e["input_ids"][None], labels=e["labels"][None]).loss.double().item()
                for e in examples
            )
            for name, examples in sets.items()
        }
    model.train()
    return sums


def plain_unlearning(theta0, unlearn: list[dict], sets, batch_size, epochs, lr, seed):
    """Gradient ascent on ``unlearn`` with Adam; the summed losses of ``sets``
    before the first step and after every step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pad_id = AutoTokenizer.from_pretrained(theta0).pad_token_id
    model = AutoModelForCausalLM.from_pretrained(theta0, dtype=torch.float32)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    curve = [summed_losses(model, sets)]
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(unlearn), generator=generator).tolist()
        for start in range(0, len(unlearn), batch_size):
            batch = pad([unlearn[i] for i in order[start : start + batch_size]], pad_id)
            loss = model(**batch).loss  # the mean over the batch's label tokens
            optimizer.zero_grad()
            (-loss).backward()
            optimizer.step()
            curve.append(summed_losses(model, sets))
    return curve


def tokenised(theta0: str, data: dict) -> MixtureDataModule:
    from transformers import AutoTokenizer

    return MixtureDataModule(**data).prepare(AutoTokenizer.from_pretrained(theta0))


def assert_matches_reference(stage: str, method: str, references: dict[str, list[dict]], swap):
    """curves.csv and influence.csv of ``stage`` against the plain loop's curves."""
    curves = read_rows(os.path.join(stage, "curves.csv"))
    influence = read_rows(os.path.join(stage, "influence.csv"))
    assert {row["method"] for row in curves + influence} == {method}
    checked = 0
    for row in curves:
        expected = references[row["unlearned"]][int(row["step"])][row["evaluated"]]
        assert float(row["loss"]) == pytest.approx(expected, rel=1e-6), row
        if row["step"] == "0":
            assert float(row["delta"]) == 0.0  # exactly, at theta_0
        checked += 1
    assert checked == sum(len(curve) * len(curve[0]) for curve in references.values())
    assert len(influence) == sum(len(curve[0]) for curve in references.values())
    for row in influence:
        unlearned, evaluated = swap(row["train_dataset"], row["test_dataset"])
        curve = references[unlearned]
        expected = curve[-1][evaluated] - curve[0][evaluated]  # Eq. 2 / Eq. 4
        assert abs(expected) > 1e-2
        assert float(row["influence"]) == pytest.approx(expected, rel=1e-6), row


# ---- equivalence ------------------------------------------------------------


@pytest.fixture(scope="module")
def untrac_run(theta0, tmp_path_factory):
    folder = tmp_path_factory.mktemp("untrac")
    untrac = {"optimizer": "Adam", "optimizer_args": {"lr": LR, "betas": [0.9, 0.999]}}
    config = write_config(folder, theta0, untrac=untrac)
    main(["untrac", "--config", config])
    return config, str(folder / "experiment" / "untrac")


def test_untrac_equals_eq2_by_a_plain_loop(theta0, untrac_run):
    _, stage = untrac_run
    dm = tokenised(theta0, synthetic_specs(n=N))
    test = {"test": list(dm.examples("test"))}
    references = {
        name: plain_unlearning(
            theta0, list(dm.examples(name)), test, batch_size=1, epochs=1, lr=LR, seed=DATA_SEED
        )
        for name in dm.train_names
    }
    assert all(len(curve) == N + 1 for curve in references.values())  # batch 1, one epoch
    assert_matches_reference(stage, "untrac", references, swap=lambda train, test: (train, test))


def test_untrac_inv_equals_eq4_by_a_plain_loop(theta0, tmp_path):
    untrac_inv = {"optimizer_args": {"lr": LR}, "batch_size": N, "epochs": 3, "eval_batch_size": 4}
    config = write_config(tmp_path, theta0, untrac_inv=untrac_inv)
    main(["untrac-inv", "--config", config])
    dm = tokenised(theta0, synthetic_specs(n=N))
    train = {name: list(dm.examples(name)) for name in dm.train_names}
    reference = plain_unlearning(
        theta0, list(dm.examples("test")), train, batch_size=N, epochs=3, lr=LR, seed=DATA_SEED
    )
    assert len(reference) == 4  # one batch holds the whole test set: one step an epoch
    stage = str(tmp_path / "experiment" / "untrac_inv")
    assert_matches_reference(
        stage, "untrac_inv", {"test": reference}, swap=lambda train, test: (test, train)
    )


def test_the_stage_folder_holds_every_file_and_a_rerun_skips(untrac_run, capsys):
    config, stage = untrac_run
    for name in ("config.yaml", "influence.csv", "curves.csv", "curves.png", "done.json"):
        assert os.path.isfile(os.path.join(stage, name)), name
    with open(os.path.join(stage, "curves.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(stage, "config.yaml")) as handle:
        resolved = yaml.safe_load(handle)
    assert resolved["untrac"]["optimizer_args"]["lr"] == LR and resolved["untrac"]["epochs"] == 1
    with open(os.path.join(stage, "done.json")) as handle:
        assert json.load(handle)["targets"] == ["train_1", "train_2", "train_3", "train_4"]
    with open(os.path.join(stage, "targets", "train_1", "done.json")) as handle:
        assert json.load(handle)["seconds"] > 0  # each target's wall time, for the benchmarks
    before = {
        name: open(os.path.join(stage, name)).read() for name in ("influence.csv", "curves.csv")
    }
    main(["untrac", "--config", config])
    printed = capsys.readouterr().out
    assert printed.count("already unlearned") == 4 and "unlearning 'train" not in printed
    for name, text in before.items():
        assert open(os.path.join(stage, name)).read() == text


def test_changed_settings_rerun_a_finished_target(theta0, tmp_path, capsys):
    config = write_config(tmp_path, theta0)
    main(["untrac", "--config", config, "--targets", "train_2"])
    stage = tmp_path / "experiment" / "untrac"
    first = read_rows(stage / "influence.csv")
    assert [row["train_dataset"] for row in first] == ["train_2"]
    assert not (stage / "done.json").exists()  # three targets are missing
    main(
        ["untrac", "--config", config, "--targets", "train_2", "--untrac.optimizer_args.lr", "1e-3"]
    )
    assert capsys.readouterr().out.count("unlearning 'train_2'") == 2
    second = read_rows(stage / "influence.csv")
    assert float(second[0]["influence"]) != float(first[0]["influence"])


# ---- subsets and targets ------------------------------------------------------


@pytest.fixture
def subset_data(tmp_path) -> dict:
    rows = [
        {"prompt": f"Say {word}.", "completion": word, "kind": kind}
        for kind, words in (("a", ["one", "two", "three"]), ("b", ["red", "green"]))
        for word in words
    ]
    path = tmp_path / "probe.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = synthetic_specs(n=4)
    data["test"] = [{"name": "probe", "files": str(path), "subset_field": "kind"}]
    return data


def test_subsets_are_named_dataset_slash_subset_on_both_sides(theta0, tmp_path, subset_data):
    config = write_config(tmp_path, theta0, data=subset_data, untrac_inv={"batch_size": 3})
    main(["untrac", "--config", config, "--targets", "train_1"])
    main(["untrac-inv", "--config", config, "--targets", "probe"])  # a dataset: all its subsets
    experiment = tmp_path / "experiment"
    untrac = read_rows(experiment / "untrac" / "influence.csv")
    untrac_inv = read_rows(experiment / "untrac_inv" / "influence.csv")
    assert {(r["train_dataset"], r["test_dataset"]) for r in untrac} == {
        ("train_1", "probe/a"),
        ("train_1", "probe/b"),
    }
    pairs = {(r["train_dataset"], r["test_dataset"]) for r in untrac_inv}
    assert pairs == {(f"train_{i}", f"probe/{s}") for i in range(1, 5) for s in "ab"}
    assert (experiment / "untrac_inv" / "targets" / "probe" / "a" / "done.json").is_file()
    assert (experiment / "untrac_inv" / "done.json").is_file()


# ---- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["untrac", "--targets", "train_9"],
            "unknown target 'train_9' for untrac; the training "
            "datasets it can unlearn are ['train_1', 'train_2', 'train_3', 'train_4']",
        ),
        (
            ["untrac-inv", "--targets", "train_1"],
            "unknown target 'train_1' for untrac-inv; the test sets it can unlearn are ['test']",
        ),
        (["untrac", "--untrac.every_n_steps", "0"], "every_n_steps=0 must be an integer >= 1"),
        (
            ["untrac", "--trainer.gradient_clip_val", "1.0"],
            "gradient_clip_val=1.0 is set on the trainer; unlearning must not clip gradients",
        ),
        (
            ["untrac", "--pretrained", "/no/such/model"],
            "model folder '/no/such/model' does not exist",
        ),
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(theta0, tmp_path, capsys, args, message):
    config = write_config(tmp_path, theta0)
    with pytest.raises(SystemExit) as exit_info:
        main([args[0], "--config", config, *args[1:]])
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1].startswith("lit-untrac: error: ") and message in errors[-1]
    assert not (tmp_path / "experiment").exists()


def test_an_unknown_reduction_is_refused_by_the_parser(theta0, tmp_path, capsys):
    config = write_config(tmp_path, theta0)
    with pytest.raises(SystemExit) as exit_info:
        main(["untrac", "--config", config, "--untrac.reduction", "median"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "median" in error and "'sum', 'mean'" in error
    assert not (tmp_path / "experiment").exists()


def test_divergence_is_one_line_and_keeps_the_curves(theta0, tmp_path, capsys):
    untrac = {"optimizer": "SGD", "optimizer_args": {"lr": 1.0e30}}
    config = write_config(tmp_path, theta0, untrac=untrac)
    with pytest.raises(SystemExit) as exit_info:
        main(["untrac", "--config", config, "--targets", "train_1"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("lit-untrac: error: untrac of 'train_1' stopped: the unlearned loss")
    assert "gradient ascent diverged" in error
    stage = tmp_path / "experiment" / "untrac"
    steps = [int(row["step"]) for row in read_rows(stage / "curves.csv")]
    assert steps[:2] == [0, 1]  # theta_0 and the first (finite) step
    assert not (stage / "targets" / "train_1" / "done.json").exists()
    assert not (stage / "done.json").exists()


# ---- Weights & Biases ---------------------------------------------------------


def wandb_history(run_dir: str) -> tuple[dict, list[dict]]:
    """The run record and the history rows of an offline run, read back with
    wandb's own reader of the run's transaction log."""
    records = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", run_dir],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    parsed = [json.loads(line) for line in records if line.startswith("{")]
    run = next(r["run"] for r in parsed if r["type"] == "run")
    return run, [r["history"]["item"] for r in parsed if r["type"] == "history"]


def test_wandb_offline_run_holds_the_influence_series(theta0, tmp_path):
    trainer = {
        "accelerator": "cpu",
        "enable_progress_bar": False,
        "logger": {
            "class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"offline": True, "project": "lit-untrac"},
        },
    }
    config = write_config(tmp_path, theta0, untrac={"optimizer_args": {"lr": LR}})
    with open(config) as handle:
        loaded = yaml.safe_load(handle)
    loaded["trainer"] = trainer
    with open(config, "w") as handle:
        yaml.safe_dump(loaded, handle)
    main(["untrac", "--config", config, "--targets", "train_1", "train_2"])
    stage = tmp_path / "experiment" / "untrac"
    runs = sorted(glob.glob(str(stage / "wandb" / "offline-run-*")))
    assert len(runs) == 2  # one run per target
    curves = read_rows(stage / "curves.csv")
    for run_dir in runs:
        run, history = wandb_history(run_dir)
        assert run["run_group"] == "tiny/untrac"
        target = run["display_name"].removeprefix("untrac/")
        expected = {int(r["step"]): float(r["delta"]) for r in curves if r["unlearned"] == target}
        logged = {
            int(item["trainer/global_step"]): item["influence/test"]
            for item in history
            if "influence/test" in item
        }
        assert logged == pytest.approx(expected, rel=1e-12) and len(logged) == N + 1
        tables = glob.glob(os.path.join(run_dir, "files", "media", "table", "*.table.json"))
        names = sorted(os.path.basename(t).split("_")[0] for t in tables)
        assert names == ["influence", "influence"]  # the table and the line series' table
        with open(next(t for t in tables if "curves" not in t)) as handle:
            table = json.load(handle)
        assert table["columns"] == ["method", "train_dataset", "test_dataset", "influence"]
        assert table["data"][0][:3] == ["untrac", target, "test"]


def test_wandb_without_account_or_network_falls_back_to_offline(theta0, tmp_path, monkeypatch):
    """A config asking for online W&B, on a machine with neither account nor
    network: the run logs offline with a warning and finishes."""
    from lit_untrac.stages import common

    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setattr(common, "_WANDB_REASON", common._UNCHECKED)
    monkeypatch.setattr(common, "_WARNED", set())
    logger = {
        "class_path": "lightning.pytorch.loggers.WandbLogger",
        "init_args": {"offline": False, "project": "lit-untrac"},
    }
    config = write_config(
        tmp_path,
        theta0,
        trainer={"accelerator": "cpu", "enable_progress_bar": False, "logger": logger},
    )
    with pytest.warns(UserWarning, match="W&B logs offline: no W&B account here"):
        main(["untrac", "--config", config, "--targets", "train_1"])
    stage = tmp_path / "experiment" / "untrac"
    assert (stage / "targets" / "train_1" / "done.json").is_file()
    assert glob.glob(str(stage / "wandb" / "offline-run-*"))
