"""How much agreement with the ground truth is even possible: the noise ceiling.

Leave-dataset-out retraining is itself noisy: two retrainings that differ
only in seed (data order, dropout, initialisation) give different influence
values. With ground truths from k seeds, per test dataset (mean over its
subsets, as for the methods):

* ``r_pairs``: the correlation between the ground truths of two seeds,
  across training datasets, averaged over all pairs of seeds;
* ``r_k``: the Spearman-Brown estimate of the reliability of the mean of k
  seeds, k r / (1 + (k - 1) r), with r taken as 0 when seeds disagree
  (r < 0: a reliability cannot be negative);
* ``ceiling``: sqrt(r_k), the correlation that a method free of noise of its
  own can expect with the k-seed mean (classical test theory: an observed
  score correlates with its true score by the square root of its
  reliability). A method at or above it agrees with the ground truth as well
  as the ground truth's noise allows.

A method is *within noise of zero* when its mean correlation lies below
the two-sided 5% critical value of a correlation of n training datasets,
t / sqrt(n - 2 + t^2) with t the 97.5% quantile of Student's t with n - 2
degrees of freedom.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from lit_untrac.evaluation.correlations import _correlation, dataset_of, spearman_brown


def noise_ceiling(per_seed: pd.DataFrame) -> pd.DataFrame:
    """The noise ceiling per test dataset.

    Args:
        per_seed: Ground-truth rows with a ``seed`` column:
            ``seed, train_dataset, test_dataset, influence``.

    Returns:
        Columns ``test_dataset, seeds, pearson_pairs, spearman_pairs,
        pearson_k, spearman_k, pearson_ceiling, spearman_ceiling``; NaN where
        fewer than two seeds exist.
    """
    seeds = sorted(per_seed["seed"].unique())
    k = len(seeds)
    tables = {
        seed: group.pivot_table(index="test_dataset", columns="train_dataset", values="influence")
        for seed, group in per_seed.groupby("seed")
    }
    test_sets = sorted(set(per_seed["test_dataset"]))
    rows = []
    for dataset in sorted({dataset_of(t) for t in test_sets}):
        members = [t for t in test_sets if dataset_of(t) == dataset]
        pair_values = {"pearson": [], "spearman": []}
        for a, b in itertools.combinations(seeds, 2):
            per_member = [
                _correlation(tables[a].loc[t].to_numpy(float), tables[b].loc[t].to_numpy(float))
                for t in members
            ]
            pair_values["pearson"].append(
                np.nanmean([p for p, _ in per_member]) if per_member else math.nan
            )
            pair_values["spearman"].append(
                np.nanmean([s for _, s in per_member]) if per_member else math.nan
            )
        row = {"test_dataset": dataset, "seeds": k}
        for statistic, values in pair_values.items():
            r = float(np.nanmean(values)) if values and not np.all(np.isnan(values)) else math.nan
            r_k = spearman_brown(max(r, 0.0), k) if not math.isnan(r) else math.nan
            row[f"{statistic}_pairs"] = r
            row[f"{statistic}_k"] = r_k
            row[f"{statistic}_ceiling"] = (
                math.sqrt(max(r_k, 0.0)) if not math.isnan(r_k) else math.nan
            )
        rows.append(row)
    columns = ["test_dataset", "seeds"] + [
        f"{s}_{part}" for part in ("pairs", "k", "ceiling") for s in ("pearson", "spearman")
    ]
    return pd.DataFrame(rows, columns=columns)


def critical_correlation(n: int, alpha: float = 0.05) -> float:
    """The smallest |r| of n pairs that is significant at ``alpha`` (two-sided)."""
    if n < 3:
        return math.inf
    t = stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))
