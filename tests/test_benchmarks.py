"""The benchmark command runs and prints one ratio row per benchmark (no
timing assertions: speed is measured by `python -m benchmarks`, not here)."""

from __future__ import annotations

import re

from benchmarks.__main__ import BENCHMARKS, main


def test_the_benchmarks_run_and_print_their_ratios(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["--repeats", "1", "--steps", "2", "--warmup", "1", "--examples", "8"])
    assert list(tmp_path.iterdir()) == []  # nothing written where it runs
    printed = capsys.readouterr().out
    assert printed.startswith("lit-untrac benchmarks: model tiny, cpu")
    rows = re.findall(r"^(B\d+) .*?(\d+\.\d+)\s+<= (\d\.\d\d)\s+(ok|OVER)$", printed, re.M)
    assert [key for key, *_ in rows] == list(BENCHMARKS) == ["B1", "B2"]
    assert all(float(ratio) > 0 for _, ratio, _, _ in rows)
    assert [target for _, _, target, _ in rows] == ["1.10", "1.05"]
