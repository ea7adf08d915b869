"""``lit-untrac train`` and ``lit-untrac baselines`` end to end on a tiny
experiment: the tables, their values against a plain loop, reruns, and bad
input (one line, exit status 2, nothing written)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lit_untrac.attribution.gradients import dot
from lit_untrac.cli import main
from lit_untrac.data import MixtureDataModule
from lit_untrac.models import load_model
from lit_untrac.results import read_csv
from tests.conftest import synthetic_specs
from tests.experiments import write_experiment

METHODS = ["graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"]
TRAIN = ["train_1", "train_2", "train_3", "train_4"]
TESTS = ["grouped/even", "grouped/odd", "test"]

BASELINES = {
    "methods": METHODS,
    "batch_size": 4,
    "tracin_every_n_steps": 3,
    "hessian_examples": 12,
    "lissa": {"depth": 3, "scale": 1000.0},
    "arnoldi": {"iterations": 4, "top_k": 3},
}


def data_section(folder: str) -> dict:
    """Synthetic A plus a test set split into two subsets by a column."""
    path = os.path.join(folder, "grouped.jsonl")
    with open(path, "w") as handle:
        for n in range(6):
            row = {"prompt": f"What comes after {n}?", "completion": str(n + 1)}
            handle.write(json.dumps({**row, "group": "even" if n % 2 == 0 else "odd"}) + "\n")
    specs = synthetic_specs(n=6)
    specs["test"].append({"name": "grouped", "files": path, "subset_field": "group"})
    return {**specs, "attribution_samples": 4}


def run(capsys, *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("baselines"))
    config = write_experiment(folder, data=data_section(folder), baselines=BASELINES)
    main(["train", "--config", config])
    return config, os.path.join(folder, "experiment")


def test_train_writes_theta0_with_tracin_checkpoints_once(experiment, capsys):
    config, output = experiment
    model = os.path.join(output, "model")
    for path in ("export/config.json", "config.yaml", "done.json", "tracin/index.json"):
        assert os.path.isfile(os.path.join(model, path)), path
    with open(os.path.join(model, "tracin", "index.json")) as handle:
        assert [c["step"] for c in json.load(handle)["checkpoints"]] == [3, 6]
    code, out = run(capsys, "train", "--config", config)
    assert code == 0 and "already trained" in out
    code, out = run(
        capsys, "train", "--config", config, "--pretrained", os.path.join(model, "export")
    )
    assert code == 0 and "nothing to train" in out


def test_baselines_write_every_table_and_graddot_matches_a_plain_loop(experiment, capsys):
    config, output = experiment
    code, out = run(capsys, "baselines", "--config", config)
    assert code == 0, out
    for method in METHODS:
        folder = os.path.join(output, "baselines", method)
        table = read_csv(os.path.join(folder, "influence.csv"))
        assert list(table.columns) == ["method", "train_dataset", "test_dataset", "influence"]
        assert set(table.method) == {method}
        pairs = sorted(zip(table.train_dataset, table.test_dataset))
        assert pairs == sorted((train, test) for train in TRAIN for test in TESTS)
        assert table.influence.notna().all()
        with open(os.path.join(folder, "done.json")) as handle:
            assert json.load(handle)["seconds"] >= 0
        assert os.path.isfile(os.path.join(folder, "config.yaml"))

    # GradDot again, with a plain loop over single examples of theta_0
    model, tokenizer = load_model(os.path.join(output, "model", "export"))
    model.eval()
    dm = MixtureDataModule(**data_section(os.path.dirname(output))).prepare(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(examples):
        total = [torch.zeros_like(p) for p in params]
        for example in examples:
            loss = model(**dm.collator([example])).loss
            for t, g in zip(total, torch.autograd.grad(loss, params)):
                t.add_(g)
        return total

    tests = {name: gradient(examples) for name, examples in dm.eval_sets("test").items()}
    table = read_csv(os.path.join(output, "baselines", "graddot", "influence.csv"))
    for train in TRAIN:
        g = gradient(dm.attribution_examples(train))  # the 4-example attribution sample
        for test in TESTS:
            row = table[(table.train_dataset == train) & (table.test_dataset == test)]
            assert float(row.influence.iloc[0]) == pytest.approx(dot(g, tests[test]), rel=1e-4)

    code, out = run(capsys, "baselines", "--config", config, "--methods", "graddot,tracin")
    assert code == 0 and "graddot: already done" in out and "tracin: already done" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "graddot,gradfoo"], r"unknown baseline method\(s\) \['gradfoo'\]"),
        (
            ["--methods", "hif_arnoldi", "--baselines.arnoldi.iterations", "2"],
            r"top_k \(p=3\) cannot exceed iterations \(n=2\)",
        ),
        (["--methods", "tracin", "--baselines.tracin_dir", "EMPTY"], "no TracIn checkpoints"),
        (
            ["--methods", "graddot,hif_lissa", "--baselines.lissa.scale", "0.001"],
            "LiSSA diverged at iteration 1 with scale=0.001",
        ),
    ],
    ids=["unknown-method", "arnoldi-p-above-n", "tracin-without-checkpoints", "lissa-diverges"],
)
def test_bad_input_is_one_line_and_writes_no_table(experiment, capsys, tmp_path, args, message):
    config, output = experiment
    args = [str(tmp_path) if a == "EMPTY" else a for a in args]
    code, out = run(
        capsys,
        "baselines",
        "--config",
        config,
        "--pretrained",
        os.path.join(output, "model", "export"),
        "--output_dir",
        str(tmp_path / "other"),
        *args,
    )
    assert code == 2
    errors = [line for line in out.splitlines() if line.startswith("lit-untrac: error:")]
    assert len(errors) == 1 and __import__("re").search(message, errors[0]), out[-2000:]
    written = os.path.join(tmp_path, "other", "baselines")
    tables = [f for _, _, files in os.walk(written) for f in files if f == "influence.csv"]
    if "hif_lissa" in args[1]:
        assert tables == ["influence.csv"]  # graddot finished; LiSSA wrote nothing
        assert not os.path.exists(os.path.join(written, "hif_lissa"))
    else:
        assert tables == []


def test_theta0_gradients_are_computed_once_and_give_the_unshared_scores(
    experiment, tmp_path, monkeypatch
):
    """GradDot, GradCos and both HIF methods draw theta_0's gradients from one
    pass over each dataset; recomputing them per method gives the same scores."""
    from lit_untrac.modules.gradients import GradientExtractor
    from lit_untrac.stages.baselines import GradientJob, run_baselines
    from lit_untrac.stages.common import parse

    config, _ = experiment
    methods = ["graddot", "gradcos", "hif_lissa", "hif_arnoldi"]
    passes: list[int] = []
    original = GradientExtractor.dataset_gradient

    def counted(self, trainer, batches):
        passes.append(len(batches))
        return original(self, trainer, batches)

    monkeypatch.setattr(GradientExtractor, "dataset_gradient", counted)
    counts, tables = {}, {}
    for share in ("true", "false"):
        passes.clear()
        ctx = parse(["--config", config, "--baselines.share_gradients", share], prog="test")
        paths = run_baselines(ctx, methods, folder=str(tmp_path / share))
        counts[share] = len(passes)
        tables[share] = {
            m: read_csv(path).sort_values(["train_dataset", "test_dataset"])
            for m, path in paths.items()
        }
    datasets = len(TRAIN) + len(TESTS)
    assert counts == {"true": datasets, "false": len(methods) * datasets}
    for method in methods:
        shared, unshared = tables["true"][method], tables["false"][method]
        assert shared.influence.tolist() == pytest.approx(unshared.influence.tolist(), rel=1e-6)
    # one such method alone (beside TracIn) streams its training gradients, holding none
    jobs = []
    monkeypatch.setattr(GradientJob, "theta0_gradients", record(jobs, GradientJob.theta0_gradients))
    ctx = parse(["--config", config], prog="test")
    run_baselines(ctx, ["graddot", "tracin"], folder=str(tmp_path / "alone"))
    assert [job.share for job in jobs] == [False] and jobs[0]._theta0 is None


def record(jobs: list, method):
    def recorded(job):
        jobs.append(job)
        return method(job)

    return recorded
