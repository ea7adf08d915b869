"""Correlations, standardisation and the noise ceiling, checked against
formulas computed another way (numpy, by hand)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lit_untrac.evaluation.correlations import (
    correlation_by_step,
    correlations,
    correlations_per_set,
    spearman_brown,
    standardized,
    summarize,
)
from lit_untrac.evaluation.noise import critical_correlation, noise_ceiling

TRAIN = ["d1", "d2", "d3", "d4", "d5"]


def rows(method, test, values, run=0):
    return [
        {"method": method, "train_dataset": t, "test_dataset": test, "influence": v, "run": run}
        for t, v in zip(TRAIN, values)
    ]


def ranks(x):
    return np.argsort(np.argsort(x)).astype(float)


def test_pearson_and_spearman_match_numpy():
    truth, method = [1.0, 2.0, 3.0, 5.0, 4.0], [0.3, 0.1, 0.9, 2.0, 1.5]
    frame = pd.DataFrame(rows("ground_truth", "test", truth) + rows("untrac", "test", method))
    result = correlations_per_set(frame).iloc[0]
    assert result["pearson"] == pytest.approx(np.corrcoef(truth, method)[0, 1], rel=1e-12)
    assert result["spearman"] == pytest.approx(
        np.corrcoef(ranks(truth), ranks(method))[0, 1], rel=1e-12
    )


def test_subsets_are_averaged_and_runs_summarised():
    truth_a, truth_b = [1, 2, 3, 4, 5], [5, 1, 4, 2, 3]
    frame = pd.DataFrame(
        rows("ground_truth", "tox/a", truth_a)
        + rows("ground_truth", "tox/b", truth_b)
        + rows("m", "tox/a", [1, 2, 3, 5, 4], run=0)
        + rows("m", "tox/b", [5, 1, 4, 3, 2], run=0)
        + rows("m", "tox/a", [2, 1, 3, 4, 5], run=1)
        + rows("m", "tox/b", [1, 5, 4, 2, 3], run=1)
    )
    table = correlations(frame)
    assert list(table.columns) == ["method", "test_dataset", "run", "pearson", "spearman"]
    expected = [
        np.mean(
            [
                np.corrcoef(truth_a, [1, 2, 3, 5, 4])[0, 1],
                np.corrcoef(truth_b, [5, 1, 4, 3, 2])[0, 1],
            ]
        ),
        np.mean(
            [
                np.corrcoef(truth_a, [2, 1, 3, 4, 5])[0, 1],
                np.corrcoef(truth_b, [1, 5, 4, 2, 3])[0, 1],
            ]
        ),
    ]
    assert table["test_dataset"].tolist() == ["tox", "tox"]
    assert table["pearson"].tolist() == pytest.approx(expected)
    summary = summarize(table).iloc[0]
    assert summary["pearson_mean"] == pytest.approx(np.mean(expected))
    assert summary["pearson_std"] == pytest.approx(np.std(expected, ddof=1))
    assert summary["pearson_count"] == 2


def test_constant_influence_has_no_correlation():
    frame = pd.DataFrame(
        rows("ground_truth", "t", [1, 2, 3, 4, 5]) + rows("m", "t", [0, 0, 0, 0, 0])
    )
    assert math.isnan(correlations(frame)["pearson"].iloc[0])


def test_standardised_values_have_zero_mean_unit_std():
    frame = standardized(pd.DataFrame(rows("m", "t", [1.0, 2.0, 3.0, 4.0, 10.0])))
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert frame["standardized"].to_numpy() == pytest.approx(
        (values - values.mean()) / values.std()
    )


def test_spearman_brown_by_hand():
    assert spearman_brown(0.5, 2) == pytest.approx(2 * 0.5 / (1 + 0.5))
    assert spearman_brown(0.2, 4) == pytest.approx(0.8 / 1.6)
    assert spearman_brown(1.0, 7) == 1.0


def seeded_truth(seeds: dict[int, list[float]], test="t") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"seed": s, "train_dataset": t, "test_dataset": test, "influence": v}
            for s, values in seeds.items()
            for t, v in zip(TRAIN, values)
        ]
    )


def test_identical_seeds_give_a_ceiling_of_exactly_one():
    ceiling = noise_ceiling(
        seeded_truth({0: [1, 2, 3, 4, 5], 1: [1, 2, 3, 4, 5], 2: [1, 2, 3, 4, 5]})
    ).iloc[0]
    assert (
        ceiling["pearson_pairs"] == 1.0
        and ceiling["pearson_k"] == 1.0
        and ceiling["pearson_ceiling"] == 1.0
    )
    assert ceiling["seeds"] == 3


def test_noisy_seeds_lower_the_ceiling_as_the_formula_says():
    a, b = [1, 2, 3, 4, 5], [2, 1, 3, 5, 4]
    ceiling = noise_ceiling(seeded_truth({0: a, 1: b})).iloc[0]
    r = np.corrcoef(a, b)[0, 1]
    assert ceiling["pearson_pairs"] == pytest.approx(r)
    assert ceiling["pearson_k"] == pytest.approx(2 * r / (1 + r))
    assert ceiling["pearson_ceiling"] == pytest.approx(math.sqrt(2 * r / (1 + r)))
    assert ceiling["pearson_ceiling"] < 1.0


def test_critical_correlation_matches_tables():
    # Two-sided 5% critical values of Pearson's r (standard tables): n=5 -> 0.878, n=10 -> 0.632.
    assert critical_correlation(5) == pytest.approx(0.878, abs=1e-3)
    assert critical_correlation(10) == pytest.approx(0.632, abs=1e-3)


def test_correlation_by_step_reads_untrac_and_untrac_inv_curves():
    truth = pd.DataFrame(rows("ground_truth", "test", [1, 2, 3, 4, 5]))
    curves = []
    for i, t in enumerate(TRAIN):
        for step in (0, 1, 2):
            curves.append(
                {
                    "method": "untrac",
                    "unlearned": t,
                    "evaluated": "test",
                    "step": step,
                    "loss": 0.0,
                    "delta": step * (i if step == 2 else -i),
                }
            )
            curves.append(
                {
                    "method": "untrac_inv",
                    "unlearned": "test",
                    "evaluated": t,
                    "step": step,
                    "loss": 0.0,
                    "delta": step * i,
                }
            )
    table = correlation_by_step(pd.DataFrame(curves), truth)
    untrac = table[table["method"] == "untrac"].set_index("step")["pearson"]
    assert untrac[1] == pytest.approx(-1.0) and untrac[2] == pytest.approx(1.0)
    assert table[table["method"] == "untrac_inv"]["pearson"].tolist() == pytest.approx([1.0, 1.0])
