"""The analysis notebook runs on a tiny experiment that the test runs first."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

from lit_untrac.experiment import run_experiment
from lit_untrac.stages.common import parse
from tests.conftest import ROOT
from tests.experiments import write_experiment


@pytest.mark.slow
def test_analysis_notebook_runs_on_an_experiment(tmp_path, monkeypatch):
    config = write_experiment(
        str(tmp_path),
        ground_truth={"seeds": 2},
        untrac={"every_n_steps": 4, "optimizer_args": {"lr": 1e-3}},
        untrac_inv={"batch_size": 8, "epochs": 2, "optimizer_args": {"lr": 1e-3}},
        baselines={"methods": ["graddot", "gradcos"]},
    )
    ctx = parse(["--config", config], prog="test")
    run_experiment(ctx, show_progress=False)
    monkeypatch.setenv("LIT_UNTRAC_EXPERIMENT", ctx.output_dir)
    monkeypatch.setenv("PYTHONPATH", ROOT)
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", "analysis.ipynb"), as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = [
        o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
    ]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs) + "".join(
        str(o.get("data", {}).get("text/plain", "")) for o in outputs
    )
    assert "GradDot" in text and "UnTrac-Inv" in text  # the tables name every method
    assert "pearson_ceiling" in text  # two ground-truth seeds: the noise ceiling is shown
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # Figure 2 for UnTrac and UnTrac-Inv, Figure 3


def test_the_notebook_is_committed_without_outputs():
    notebook = nbformat.read(os.path.join(ROOT, "notebooks", "analysis.ipynb"), as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")
