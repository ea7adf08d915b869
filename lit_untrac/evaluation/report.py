"""The experiment report: the paper's Tables 2, 3 and 5 and Figures 2 and 3,
rebuilt from the results files of an experiment folder.

``lit-untrac report <folder>`` writes ``<folder>/report/``: ``report.md``,
``correlations.csv``, ``influence.csv`` (every method and run, with
standardised values), and PNG figures.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field

import pandas as pd

from lit_untrac.errors import UserError
from lit_untrac.evaluation.correlations import (
    TRUTH,
    correlation_by_step,
    correlations,
    dataset_of,
    standardized,
    summarize,
)
from lit_untrac.evaluation.noise import critical_correlation, noise_ceiling
from lit_untrac.evaluation.plots import label, plot_correlation_by_step
from lit_untrac.results import CORRELATION_COLUMNS, atomic_write_text, read_csv, write_csv

ATTRIBUTION_STAGES = ("untrac", "untrac_inv")


@dataclass
class Results:
    """Everything an experiment folder holds, read back as tables."""

    influence: pd.DataFrame
    curves: pd.DataFrame
    truth_seeds: pd.DataFrame | None = None
    failures: list[dict] = field(default_factory=list)


def _run_folders(stage_dir: str) -> list[tuple[int, str]]:
    """``[(run, folder)]``: ``stage/run_<r>/`` folders, or the stage folder as run 0."""
    runs = sorted(glob.glob(os.path.join(stage_dir, "run_*")))
    if runs:
        return [(int(os.path.basename(r).split("_", 1)[1]), r) for r in runs]
    return [(0, stage_dir)] if os.path.isdir(stage_dir) else []


def _read_with_run(path: str, run: int) -> pd.DataFrame | None:
    if not os.path.isfile(path):
        return None
    return read_csv(path).assign(run=run)


def collect(experiment_dir: str) -> Results:
    """Read every stage's ``influence.csv`` and ``curves.csv``."""
    influence, curves = [], []
    truth_path = os.path.join(experiment_dir, "ground_truth", "influence.csv")
    if os.path.isfile(truth_path):
        influence.append(read_csv(truth_path).assign(run=0))
    for stage in ATTRIBUTION_STAGES:
        for run, folder in _run_folders(os.path.join(experiment_dir, stage)):
            for frames, name in ((influence, "influence.csv"), (curves, "curves.csv")):
                frame = _read_with_run(os.path.join(folder, name), run)
                if frame is not None:
                    frames.append(frame)
    baselines_dir = os.path.join(experiment_dir, "baselines")
    for run, folder in _run_folders(baselines_dir):
        for path in sorted(glob.glob(os.path.join(folder, "*", "influence.csv"))):
            influence.append(read_csv(path).assign(run=run))
    if not influence:
        raise UserError(
            f"no influence.csv found under {experiment_dir!r}: is it an experiment folder?"
        )
    seeds_path = os.path.join(experiment_dir, "ground_truth", "influence_seeds.csv")
    truth_seeds = read_csv(seeds_path) if os.path.isfile(seeds_path) else None
    failures_path = os.path.join(experiment_dir, "failures.csv")
    failures = read_csv(failures_path).to_dict("records") if os.path.isfile(failures_path) else []
    return Results(
        influence=pd.concat(influence, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        truth_seeds=truth_seeds,
        failures=failures,
    )


def _fmt(mean: float, std: float | None = None, digits: int = 2) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean:.{digits}f}"
    if std is not None and not math.isnan(std) and std > 0:
        text += f" ± {std:.{digits}f}"
    return text


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _method_order(methods) -> list[str]:
    known = ["untrac", "untrac_inv", "graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi"]
    return [m for m in known if m in methods] + sorted(
        m for m in methods if m not in known and m != TRUTH
    )


def standardized_tables(influence: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Table 2 per test dataset: methods x training datasets, standardised
    influence averaged over subsets and runs."""
    frame = standardized(influence)
    frame["dataset"] = frame["test_dataset"].map(dataset_of)
    tables = {}
    for dataset, rows in frame.groupby("dataset"):
        table = rows.pivot_table(
            index="method", columns="train_dataset", values="standardized", aggfunc="mean"
        )
        order = [TRUTH] + _method_order(table.index)
        tables[dataset] = table.loc[[m for m in order if m in table.index]]
    return tables


def agreement_table(
    summary: pd.DataFrame, ceiling: pd.DataFrame | None, n_train: int
) -> tuple[str, list[str]]:
    """Tables 3 and 5 as Markdown: mean ± std over runs, marked against noise."""
    datasets = sorted(summary["test_dataset"].unique())
    threshold = critical_correlation(n_train)
    header = ["method"] + [f"{d} {s}" for d in datasets for s in ("Pearson", "Spearman")]
    rows, notes = [], []
    for method in _method_order(summary["method"].unique()):
        cells = [label(method)]
        for dataset in datasets:
            row = summary[(summary["method"] == method) & (summary["test_dataset"] == dataset)]
            for statistic in ("pearson", "spearman"):
                if row.empty:
                    cells.append("n/a")
                    continue
                mean, std = (
                    float(row[f"{statistic}_mean"].iloc[0]),
                    float(row[f"{statistic}_std"].iloc[0]),
                )
                mark = ""
                if not math.isnan(mean) and abs(mean) < threshold:
                    mark = " °"
                if ceiling is not None and dataset in set(ceiling["test_dataset"]):
                    top = float(
                        ceiling.loc[
                            ceiling["test_dataset"] == dataset, f"{statistic}_ceiling"
                        ].iloc[0]
                    )
                    if top > 0 and not math.isnan(mean) and mean >= top:
                        mark += " ★"
                cells.append(_fmt(mean, std) + mark)
        rows.append(cells)
    if ceiling is not None and not ceiling.empty:
        for part, name in (
            ("pairs", "seed vs seed (mean over pairs)"),
            ("k", "mean of k seeds (Spearman-Brown)"),
            ("ceiling", "noise ceiling (√ of the above)"),
        ):
            cells = [f"*{name}*"]
            for dataset in datasets:
                match = ceiling[ceiling["test_dataset"] == dataset]
                for statistic in ("pearson", "spearman"):
                    cells.append(
                        _fmt(float(match[f"{statistic}_{part}"].iloc[0]))
                        if not match.empty
                        else "n/a"
                    )
            rows.append(cells)
    notes.append(
        f"° within noise of zero: |r| below {threshold:.2f}, the 5% critical value for "
        f"{n_train} training datasets."
        if math.isfinite(threshold)
        else "° cannot be judged: fewer than 3 training datasets."
    )
    if ceiling is not None and not ceiling.empty:
        notes.append(
            "★ at or above the noise ceiling: as good as the ground truth's own noise allows."
        )
    return _markdown_table(header, rows), notes


def ceiling_sentence(ceiling: pd.DataFrame, n_train: int) -> str:
    """How to read the tables, given how well the ground truth agrees with itself."""
    threshold = critical_correlation(n_train)
    text = (
        "How to read this: the ground truth is a retraining, and retrainings that differ only in "
        "their seed disagree. The seed rows show how well two seeds' ground truths agree and how "
        "reliable their mean is; no method can be expected to correlate with that mean above the "
        "ceiling, and differences between methods smaller than the gap between the ceiling and 1 "
        "are not evidence that one method is better."
    )
    for row in ceiling.itertuples():
        r = row.pearson_pairs
        if math.isnan(r) or r <= 0:
            text += (
                f" The ground truths of `{row.test_dataset}` from different seeds do not agree at "
                f"all (r = {_fmt(r)}): no method can be judged against them. More seeds, larger test "
                "sets or a model that learns the test task would give a ground truth worth comparing "
                "against."
            )
        elif r < threshold:
            text += (
                f" For `{row.test_dataset}`, two seeds' ground truths agree at r = {r:.2f}, below the "
                f"{threshold:.2f} that {n_train} training datasets need for significance: the ground "
                "truth is noisy, and so is every correlation with it."
            )
    return text


def build_report(
    experiment_dir: str, report_dir: str | None = None, title: str | None = None
) -> str:
    """Write the report of an experiment folder; returns the path of ``report.md``."""
    results = collect(experiment_dir)
    report_dir = report_dir or os.path.join(experiment_dir, "report")
    os.makedirs(report_dir, exist_ok=True)
    influence = results.influence
    if TRUTH not in set(influence["method"]):
        raise UserError(f"{experiment_dir!r} has no ground truth yet (ground_truth/influence.csv)")
    table = correlations(influence)
    write_csv(
        os.path.join(report_dir, "correlations.csv"), table.to_dict("records"), CORRELATION_COLUMNS
    )
    summary = summarize(table)
    seeds = results.truth_seeds
    ceiling = noise_ceiling(seeds) if seeds is not None and seeds["seed"].nunique() > 1 else None
    n_train = influence["train_dataset"].nunique()
    title = title or os.path.basename(os.path.abspath(experiment_dir))
    parts = [
        f"# {title}: which training datasets influence the test sets?",
        "",
        f"Experiment folder: `{experiment_dir}`. Training datasets: "
        + ", ".join(f"`{n}`" for n in sorted(influence["train_dataset"].unique()))
        + ". Test sets: "
        + ", ".join(f"`{n}`" for n in sorted(influence["test_dataset"].unique()))
        + f". Runs: {influence['run'].nunique()}."
        + (
            f" Ground-truth seeds: {int(ceiling['seeds'].iloc[0])}."
            if ceiling is not None and not ceiling.empty
            else ""
        ),
        "",
        "## Influence, standardised (Table 2)",
        "",
        "Per method and test set, influence across training datasets scaled to zero mean and unit "
        "standard deviation, then averaged over subsets and runs. Larger means that removing the "
        "training dataset raises the test loss more: the dataset helped the model on the test set.",
    ]
    for dataset, frame in standardized_tables(influence).items():
        header = ["method"] + list(frame.columns)
        rows = [[label(m)] + [_fmt(v) for v in frame.loc[m]] for m in frame.index]
        parts += ["", f"### {dataset}", "", _markdown_table(header, rows)]
    agreement, notes = agreement_table(summary, ceiling, n_train)
    parts += [
        "",
        "## Agreement with the ground truth (Tables 3 and 5)",
        "",
        "Pearson and Spearman correlation with the leave-dataset-out ground truth across training "
        "datasets, per test dataset (mean over its subsets), mean ± standard deviation over runs.",
        "",
        agreement,
        "",
        *[f"{note}  " for note in notes],
    ]
    if ceiling is not None and not ceiling.empty:
        parts += ["", ceiling_sentence(ceiling, n_train)]
    figures = _figures(results, report_dir, ceiling)
    if figures:
        parts += ["", "## Figures", ""] + [
            f"![{caption}]({os.path.basename(path)})\n" for caption, path in figures
        ]
    if results.failures:
        parts += ["", "## Failed jobs", ""]
        parts += [
            f"- `{f.get('stage')}` / `{f.get('target')}`: {f.get('reason')}"
            for f in results.failures
        ]
    path = os.path.join(report_dir, "report.md")
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def _figures(
    results: Results, report_dir: str, ceiling: pd.DataFrame | None
) -> list[tuple[str, str]]:
    figures = []
    if results.curves.empty:
        return figures
    from lit_untrac.evaluation.curves import plot_influence_curves

    for method, curves in results.curves.groupby("method"):
        path = os.path.join(report_dir, f"influence_curves_{method}.png")
        first_run = curves[curves["run"] == curves["run"].min()]
        group = "test" if method == "untrac_inv" else "train"
        plot_influence_curves(
            first_run.to_dict("records"), path, unlearned_group=group, title=label(method)
        )
        figures.append((f"{label(method)}: influence against unlearning step (Figure 2)", path))
    by_step = correlation_by_step(results.curves, results.influence)
    if not by_step.empty:
        path = plot_correlation_by_step(
            by_step, os.path.join(report_dir, "correlation_by_step.png"), ceiling=ceiling
        )
        figures.append(
            ("Correlation with the ground truth against unlearning step (Figure 3)", path)
        )
    return figures


def log_report_to_wandb(report_dir: str, wandb_kwargs: dict) -> str | None:
    """Send the report's tables and figures to one W&B run.

    Args:
        report_dir: A folder written by :func:`build_report`.
        wandb_kwargs: Arguments for ``wandb.init`` (``project``, ``group``,
            ``name``, ``dir``, ``mode``), taken from the experiment's
            WandbLogger settings.

    Returns:
        The run's local folder, or None when W&B is disabled.
    """
    import wandb

    kwargs = {"name": "report", "job_type": "report", **wandb_kwargs}
    run = wandb.init(reinit="finish_previous", **kwargs)
    try:
        data = {}
        for name in ("correlations", "influence"):
            path = os.path.join(report_dir, f"{name}.csv")
            if os.path.isfile(path):
                data[name] = wandb.Table(dataframe=read_csv(path))
        for path in sorted(glob.glob(os.path.join(report_dir, "*.png"))):
            data[f"figures/{os.path.splitext(os.path.basename(path))[0]}"] = wandb.Image(path)
        with open(os.path.join(report_dir, "report.md")) as handle:
            data["report"] = wandb.Html(f"<pre>{handle.read()}</pre>")
        run.log(data)
        return getattr(run, "dir", None)
    finally:
        run.finish()
