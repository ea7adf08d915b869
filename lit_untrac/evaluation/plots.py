"""Report figures: correlation with the ground truth against unlearning step
(the paper's Figure 3, with the noise ceiling as a band)."""

from __future__ import annotations

import os

import pandas as pd

METHOD_LABELS = {
    "untrac": "UnTrac",
    "untrac_inv": "UnTrac-Inv",
    "graddot": "GradDot",
    "gradcos": "GradCos",
    "tracin": "TracIn",
    "hif_lissa": "HIF (LiSSA)",
    "hif_arnoldi": "HIF (Arnoldi)",
    "ground_truth": "Ground truth",
}


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_correlation_by_step(
    by_step: pd.DataFrame,
    path: str | os.PathLike,
    statistic: str = "pearson",
    ceiling: pd.DataFrame | None = None,
) -> str:
    """One panel per test dataset: the correlation of UnTrac and UnTrac-Inv
    with the ground truth at each unlearning step (mean over runs, with a
    band of one standard deviation), and the noise ceiling as a grey band.

    Args:
        by_step: Rows of :func:`~lit_untrac.evaluation.correlations.correlation_by_step`.
        ceiling: Optional rows ``test_dataset, <statistic>_ceiling_low,
            <statistic>_ceiling`` from :func:`~lit_untrac.evaluation.noise.noise_ceiling`.
    """
    plt = _pyplot()
    datasets = sorted(by_step["test_dataset"].unique())
    fig, axes = plt.subplots(
        1, max(len(datasets), 1), figsize=(4.5 * max(len(datasets), 1), 3.4), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets):
        rows = by_step[by_step["test_dataset"] == dataset]
        for method, group in rows.groupby("method"):
            stats = group.groupby("step")[statistic].agg(["mean", "std"]).fillna(0.0)
            ax.plot(stats.index, stats["mean"], label=label(method))
            ax.fill_between(
                stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2
            )
        if ceiling is not None and dataset in set(ceiling["test_dataset"]):
            row = ceiling[ceiling["test_dataset"] == dataset].iloc[0]
            low, high = row.get(f"{statistic}_pairs"), row.get(f"{statistic}_ceiling")
            if pd.notna(low) and pd.notna(high):
                ax.axhspan(
                    min(low, high), max(low, high), color="grey", alpha=0.2, label="noise ceiling"
                )
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(dataset)
        ax.set_xlabel("unlearning step")
        ax.set_ylabel(f"{statistic.capitalize()} with ground truth")
        ax.legend(fontsize="small")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return os.fspath(path)
