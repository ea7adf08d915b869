"""Agreement with the ground truth: the paper's Tables 3 and 5.

For every method, run and test set (or subset), the influence values across
training datasets are correlated with the ground truth's (Pearson and
Spearman, from ``scipy.stats``). A test dataset split into subsets gets the
mean over its subsets, as the paper does for ToxiGen, WinoBias and
TruthfulQA. The tables then give the mean and standard deviation over runs.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

TRUTH = "ground_truth"


def dataset_of(test_set: str) -> str:
    """``toxigen/asian`` -> ``toxigen``; a set without subsets is its own dataset."""
    return test_set.split("/", 1)[0]


def _correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan  # undefined for constant vectors
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(stats.pearsonr(x, y).statistic), float(stats.spearmanr(x, y).statistic)


def truth_table(influence: pd.DataFrame, truth: str = TRUTH) -> pd.DataFrame:
    """The ground truth as a ``test_dataset x train_dataset`` table."""
    rows = influence[influence["method"] == truth]
    if rows.empty:
        raise ValueError(f"no {truth!r} rows in the influence table")
    return rows.pivot_table(
        index="test_dataset", columns="train_dataset", values="influence", aggfunc="mean"
    )


def correlations_per_set(influence: pd.DataFrame, truth: str = TRUTH) -> pd.DataFrame:
    """Pearson and Spearman with the ground truth per method, run and test set.

    Args:
        influence: Rows ``method, train_dataset, test_dataset, influence`` and
            optionally ``run`` (one ground truth serves every run).

    Returns:
        Columns ``method, test_set, run, pearson, spearman``.
    """
    truth_values = truth_table(influence, truth)
    methods = influence[influence["method"] != truth]
    if "run" not in methods:
        methods = methods.assign(run=0)
    rows = []
    for (method, run, test_set), group in methods.groupby(
        ["method", "run", "test_dataset"], sort=True
    ):
        if test_set not in truth_values.index:
            continue
        reference = truth_values.loc[test_set]
        values = group.set_index("train_dataset")["influence"]
        common = [
            name
            for name in reference.index
            if name in values.index and not pd.isna(reference[name])
        ]
        pearson, spearman = _correlation(
            values[common].to_numpy(float), reference[common].to_numpy(float)
        )
        rows.append(
            {
                "method": method,
                "test_set": test_set,
                "run": int(run),
                "pearson": pearson,
                "spearman": spearman,
            }
        )
    return pd.DataFrame(rows, columns=["method", "test_set", "run", "pearson", "spearman"])


def correlations(influence: pd.DataFrame, truth: str = TRUTH) -> pd.DataFrame:
    """Correlations per method, test dataset (mean over its subsets) and run:
    the rows of ``correlations.csv`` (``method,test_dataset,run,pearson,spearman``)."""
    per_set = correlations_per_set(influence, truth)
    per_set["test_dataset"] = per_set["test_set"].map(dataset_of)
    table = per_set.groupby(["method", "test_dataset", "run"], as_index=False)[
        ["pearson", "spearman"]
    ].mean()
    return table[["method", "test_dataset", "run", "pearson", "spearman"]]


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over runs (sample std; 0 for one run)."""
    grouped = table.groupby(["method", "test_dataset"])
    summary = grouped[["pearson", "spearman"]].agg(["mean", "std", "count"])
    summary.columns = [f"{stat}_{agg}" for stat, agg in summary.columns]
    for stat in ("pearson", "spearman"):
        summary[f"{stat}_std"] = summary[f"{stat}_std"].fillna(0.0)
    return summary.reset_index()


def spearman_brown(r: float, k: int) -> float:
    """The reliability of the mean of ``k`` measurements whose pairwise
    correlation is ``r``: k r / (1 + (k - 1) r)."""
    if math.isnan(r):
        return math.nan
    return k * r / (1 + (k - 1) * r)


def standardized(influence: pd.DataFrame) -> pd.DataFrame:
    """Influence standardised per method, run and test set across training
    datasets (zero mean, unit population standard deviation): the paper's
    Table 2. Adds a ``standardized`` column."""
    frame = influence.copy()
    keys = ["method", "test_dataset"] + (["run"] if "run" in frame else [])

    def zscore(values: pd.Series) -> pd.Series:
        spread = values.std(ddof=0)
        if not spread or np.isnan(spread):
            return values * 0.0
        return (values - values.mean()) / spread

    frame["standardized"] = frame.groupby(keys)["influence"].transform(zscore)
    return frame


def curve_influence(curves: pd.DataFrame) -> pd.DataFrame:
    """``curves.csv`` rows as influence rows with a ``step`` column.

    UnTrac unlearns a training dataset and evaluates test sets; UnTrac-Inv
    unlearns a test set and evaluates training datasets. Either way the delta
    at a step is the influence of (train_dataset, test_dataset) so far.
    """
    inverse = curves["method"] == "untrac_inv"
    frame = pd.DataFrame(
        {
            "method": curves["method"],
            "train_dataset": np.where(inverse, curves["evaluated"], curves["unlearned"]),
            "test_dataset": np.where(inverse, curves["unlearned"], curves["evaluated"]),
            "influence": curves["delta"],
            "step": curves["step"],
            "run": curves["run"] if "run" in curves else 0,
        }
    )
    return frame


def correlation_by_step(curves: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Correlation with the ground truth against unlearning step (the paper's
    Figure 3): columns ``method, test_dataset, run, step, pearson, spearman``.

    Steps where some training dataset has no value (runs of different
    lengths) are left out.
    """
    steps = curve_influence(curves)
    truth_rows = truth[truth["method"] == TRUTH][
        ["method", "train_dataset", "test_dataset", "influence"]
    ]
    tables = []
    for step, at_step in steps[steps["step"] > 0].groupby("step"):
        table = correlations(
            pd.concat([truth_rows, at_step.drop(columns="step")], ignore_index=True)
        )
        tables.append(table.assign(step=int(step)))
    if not tables:
        return pd.DataFrame(
            columns=["method", "test_dataset", "run", "step", "pearson", "spearman"]
        )
    return pd.concat(tables, ignore_index=True)[
        ["method", "test_dataset", "run", "step", "pearson", "spearman"]
    ]
