"""Results files: the schemas round-trip, and writes are atomic: a reader
finds the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lit_untrac import results
from lit_untrac.results import INFLUENCE_COLUMNS, atomic_write_text, read_csv, write_csv


def test_influence_rows_round_trip_with_full_precision(tmp_path):
    values = {("train_1", "test"): 0.1 + 0.2, ("train_2", "tox/asian"): -1e-17}
    path = tmp_path / "influence.csv"
    write_csv(path, results.influence_rows("untrac", values), INFLUENCE_COLUMNS)
    frame = read_csv(path)
    assert list(frame.columns) == list(INFLUENCE_COLUMNS)
    assert frame["influence"].tolist() == [0.1 + 0.2, -1e-17]  # exact, not rounded
    assert frame["test_dataset"].tolist() == ["test", "tox/asian"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "curves.csv"
    atomic_write_text(path, "old\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["curves.csv"]


WRITER = """
import sys
from lit_untrac.results import atomic_write_text
path = sys.argv[1]
i = 0
while True:
    i += 1
    atomic_write_text(path, (f"version {i}\\n" * 20000) + "end\\n")
"""


def test_killed_writers_never_leave_a_torn_file(tmp_path):
    path = tmp_path / "influence.csv"
    atomic_write_text(path, ("version 0\n" * 20000) + "end\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for delay in (0.3, 0.45, 0.6, 0.75):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env)
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        lines = path.read_text().splitlines()
        assert lines[-1] == "end" and len(lines) == 20001
        assert len(set(lines[:-1])) == 1  # one whole version, never a mix


def test_done_markers(tmp_path):
    assert not results.is_done(tmp_path)
    results.mark_done(tmp_path, targets=["a"])
    assert results.is_done(tmp_path)
