"""Influence against unlearning step, as in the paper's Figures 2 and 3."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any, Literal


def plot_influence_curves(
    rows: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    unlearned_group: Literal["train", "test"] = "train",
    title: str | None = None,
) -> None:
    """Plot ``curves.csv`` rows to a PNG: one panel per test dataset, one line
    per training dataset, the influence (loss minus loss at step 0) against
    the unlearning step.

    Args:
        rows: Rows with ``unlearned``, ``evaluated``, ``step`` and ``delta``.
        path: The PNG to write.
        unlearned_group: ``train`` when the unlearned datasets are training
            datasets (UnTrac), ``test`` when they are test datasets (UnTrac-Inv).
        title: The figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in rows:
        train, test = (
            (row["unlearned"], row["evaluated"])
            if unlearned_group == "train"
            else (row["evaluated"], row["unlearned"])
        )
        curves.setdefault(test, {}).setdefault(train, []).append(
            (int(row["step"]), float(row["delta"]))
        )
    panels = max(len(curves), 1)
    columns = min(panels, 3)
    lines = -(-panels // columns)
    figure, axes = plt.subplots(
        lines, columns, figsize=(4.5 * columns, 3.5 * lines), squeeze=False, sharex=False
    )
    for ax, (test, by_train) in zip(axes.flat, curves.items()):
        for train, points in by_train.items():
            points.sort()
            ax.plot([s for s, _ in points], [d for _, d in points], label=train)
        ax.axhline(0.0, color="grey", linewidth=0.5)
        ax.set_title(test)
        ax.set_xlabel("unlearning step")
        ax.set_ylabel("influence (loss - loss at step 0)")
        ax.legend(title="training dataset", fontsize="small")
    for ax in list(axes.flat)[len(curves) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    handle, temporary = tempfile.mkstemp(  # a name of its own: processes may plot at once
        prefix=f".{os.path.basename(os.fspath(path))}.",
        suffix=".png",
        dir=os.path.dirname(os.fspath(path)) or ".",
    )
    os.close(handle)
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
