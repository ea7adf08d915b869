"""Results on disk: one schema per file, written atomically.

Every method writes the same shapes (see DESIGN.md), so the report, the
notebooks and users' own scripts read them one way:

* ``influence.csv``: ``method,train_dataset,test_dataset,influence``;
* ``curves.csv``: ``method,unlearned,evaluated,step,loss,delta``;
* ``correlations.csv``: ``method,test_dataset,run,pearson,spearman``.

A file is written to a temporary name in its folder, flushed to disk, then
renamed over the old one, so a reader finds the old file or the new one,
never a torn one. A stage folder that finished holds ``done.json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

INFLUENCE_COLUMNS = ("method", "train_dataset", "test_dataset", "influence")
CURVE_COLUMNS = ("method", "unlearned", "evaluated", "step", "loss", "delta")
CORRELATION_COLUMNS = ("method", "test_dataset", "run", "pearson", "spearman")
DONE_MARKER = "done.json"


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # the shortest text that reads back as the same float
    return value


def write_csv(
    path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write rows with exactly ``columns``, atomically. Floats keep full precision."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), extrasaction="raise", lineterminator="\n"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format(row[key]) for key in columns})
    atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | os.PathLike):
    """A results CSV as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def mark_done(folder: str | os.PathLike, **info: Any) -> None:
    """Mark a stage folder as finished (``done.json``, with ``info``)."""
    write_json(
        os.path.join(folder, DONE_MARKER), {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    )


def is_done(folder: str | os.PathLike) -> bool:
    return os.path.isfile(os.path.join(folder, DONE_MARKER))


def influence_rows(method: str, values: Mapping[tuple[str, str], float]) -> list[dict[str, Any]]:
    """Rows of ``influence.csv`` from ``{(train_dataset, test_dataset): influence}``."""
    return [
        {"method": method, "train_dataset": train, "test_dataset": test, "influence": float(value)}
        for (train, test), value in values.items()
    ]
