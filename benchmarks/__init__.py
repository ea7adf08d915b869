"""Speed benchmarks, each a ratio of lit-untrac's way against the bare way,
measured side by side in one run.

Each benchmark is a function ``benchmark(settings) -> list[Row]`` in its own
file, registered in :data:`benchmarks.__main__.BENCHMARKS`;
``python -m benchmarks`` runs them and prints one row per ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Settings:
    """What every benchmark measures on.

    Attributes:
        model: A model spec for :func:`lit_untrac.models.load_model`.
        examples: Examples per synthetic dataset.
        steps: Timed steps (or evaluations) per repeat.
        repeats: Repeats; each row reports medians over all timed steps.
        warmup: Untimed steps at the start of each repeat.
        device: ``cpu`` or ``cuda``.
        workdir: Where the trainers write (a temporary folder).
    """

    model: dict[str, Any] | str
    examples: int = 256
    steps: int = 16
    repeats: int = 5
    warmup: int = 2
    device: str = "cpu"
    workdir: str = "."


@dataclass
class Row:
    """One ratio: ours over the baseline, medians in seconds."""

    key: str
    what: str
    ours: float
    baseline: float
    target: float

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline


def median(values: list[float]) -> float:
    return statistics.median(values)


def synthetic_data(examples: int, **kwargs):
    """Synthetic dataset A: one training set and the test set, ``examples`` each."""
    from lit_untrac.data import MixtureDataModule

    def spec(name: str, split: str) -> dict:
        return {
            "name": name,
            "generator": "synthetic_a",
            "generator_args": {"split": split, "n": examples},
        }

    return MixtureDataModule(
        train=[spec("train_1", "train_1")], test=[spec("test", "test")], **kwargs
    )


def quiet_trainer(settings: Settings, callbacks: list, **kwargs):
    import lightning.pytorch as pl

    return pl.Trainer(
        accelerator=settings.device,
        devices=1,
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=settings.workdir,
        callbacks=callbacks,
        **kwargs,
    )


def clock(device: str) -> Callable[[], float]:
    """The benchmarks' clock: on CPU the process's CPU time, which other
    programs sharing the cores do not disturb (wall time there swings by
    tens of percent on a busy machine); on CUDA the wall time after the
    device's queued work is done."""
    if device == "cuda":

        def wall() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()

        return wall
    return time.process_time


def table(rows: list[Row]) -> str:
    lines = [
        f"{'':4}{'what':<62}{'ours ms':>10}{'bare ms':>10}{'ratio':>8}{'target':>9}",
    ]
    for row in rows:
        verdict = "ok" if row.ratio <= row.target else "OVER"
        lines.append(
            f"{row.key:<4}{row.what:<62}{row.ours * 1e3:>10.3f}{row.baseline * 1e3:>10.3f}"
            f"{row.ratio:>8.3f}{'<= ' + format(row.target, '.2f'):>9}  {verdict}"
        )
    return "\n".join(lines)
