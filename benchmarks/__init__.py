"""Speed and memory benchmarks, each a ratio of lit-untrac's way against the
bare way, measured side by side in one run.

Each benchmark is a function ``benchmark(settings) -> list[Row]`` in its own
file, registered in :data:`benchmarks.__main__.BENCHMARKS`;
``python -m benchmarks`` runs them and prints one row per ratio.
"""

from __future__ import annotations

import contextlib
import os
import random
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
        model_name: Its label in the table (``tiny``, ``opt125m``, a name).
        data: ``synthetic`` (synthetic dataset A, prompt-completion) or
            ``text`` (blocks of ``block_size`` tokens cut from generated
            text, the pretraining format).
        block_size: Tokens per block of ``text`` data.
        examples: Examples per dataset (evaluation set, gradient dataset).
        steps: Timed steps (or evaluations, or gradients) per repeat.
        repeats: Repeats; each row reports medians over all timed steps.
        warmup: Untimed steps at the start of each repeat.
        device: ``cpu`` or ``cuda``.
        workdir: Where the trainers write (a temporary folder).
        experiment: An experiment folder for B6 (None: ``runs/default`` if
            it exists, else a reduced default experiment is run).
        arnoldi_iterations: Arnoldi's n for B4 (it keeps n + 1
            gradient-sized vectors).
        precision: The trainers' precision (``32-true`` or ``bf16-mixed``);
            the bare loops run under the same autocast.
    """

    model: dict[str, Any] | str
    model_name: str = "tiny"
    data: str = "synthetic"
    block_size: int = 512
    examples: int = 64
    steps: int = 8
    repeats: int = 3
    warmup: int = 2
    device: str = "cpu"
    workdir: str = "."
    experiment: str | None = None
    arnoldi_iterations: int = 25
    precision: str = "32-true"


#: How a row's two values print: seconds as milliseconds or seconds, bytes
#: as MiB, tokens as counts.
UNITS: dict[str, Callable[[float], str]] = {
    "ms": lambda v: f"{v * 1e3:.1f} ms",
    "s": lambda v: f"{v:.1f} s",
    "MiB": lambda v: f"{v / 2**20:.0f} MiB",
    "tok": lambda v: f"{v:,.0f}",
    "Mtok": lambda v: f"{v / 1e6:.2f} M",
}


@dataclass
class Row:
    """One ratio: ours over the baseline (medians), against its target
    (None: reported, no target)."""

    key: str
    what: str
    ours: float
    baseline: float
    target: float | None
    unit: str = "ms"
    model: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio <= self.target else "OVER"


def median(values: list[float]) -> float:
    return statistics.median(values)


def benchmark_data(settings: Settings, examples: int, **kwargs):
    """A training set ``train_1`` and a test set ``test`` of ``examples``
    examples each: synthetic dataset A, or text blocks (``settings.data``)."""
    from lit_untrac.data import MixtureDataModule

    if settings.data == "text":
        specs = [
            {
                "name": name,
                "files": generated_text(settings.workdir, name, examples * settings.block_size),
                "format": "text",
                "max_examples": examples,
            }
            for name in ("train_1", "test")
        ]
        kwargs.setdefault("block_size", settings.block_size)
    else:
        specs = [
            {
                "name": name,
                "generator": "synthetic_a",
                "generator_args": {"split": name, "n": examples},
            }
            for name in ("train_1", "test")
        ]
    return MixtureDataModule(train=specs[:1], test=specs[1:], **kwargs)


def generated_text(folder: str, name: str, n_bytes: int) -> str:
    """A text file of sentences of common English words, at least
    ``n_bytes`` long (a byte tokenizer cuts it into as many tokens), seeded
    by ``name``. Speed does not depend on what the text says."""
    from lit_untrac.data.lexicon import plain_words

    path = os.path.join(folder, f"{name}-{n_bytes}.txt")
    if os.path.isfile(path):
        return path
    rng = random.Random(name)
    words = plain_words(min_len=2, max_len=10, common=True)
    lines, size = [], 0
    while size < n_bytes * 1.1 + 4096:
        line = " ".join(rng.choices(words, k=rng.randint(8, 40))).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def quiet_trainer(settings: Settings, callbacks: list, **kwargs):
    import lightning.pytorch as pl

    return pl.Trainer(
        **{
            "accelerator": settings.device,
            "devices": 1,
            "max_epochs": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_checkpointing": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "default_root_dir": settings.workdir,
            "precision": settings.precision,
            "callbacks": callbacks,
            **kwargs,
        }
    )


def plain_adam(model) -> torch.optim.Optimizer:
    """The bare loops' optimizer: the paper's Adam with the same fused
    implementation the UnlearningModule picks, so that a ratio measures
    Lightning's and lit-untrac's overhead, not the optimizer kernel."""
    from lit_untrac.modules.language_model import fast_implementation

    params = list(model.parameters())
    fast = fast_implementation(torch.optim.Adam, {}, params)
    return torch.optim.Adam(params, lr=5e-5, betas=(0.9, 0.999), **fast)


def autocast(settings: Settings):
    """The bare loops' counterpart of the trainers' precision."""
    if settings.precision == "bf16-mixed":
        return torch.autocast(settings.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    """One line per row: key, model, what, ours, bare, ratio, target, verdict."""
    what_width = max([len(row.what) for row in rows] + [4])
    model_width = max([len(row.model) for row in rows] + [5])
    lines = [
        f"{'':4}{'model':<{model_width}}  {'what':<{what_width}}{'ours':>13}{'bare':>13}"
        f"{'ratio':>8}{'target':>9}"
    ]
    for row in rows:
        show = UNITS[row.unit]
        target = "-" if row.target is None else "<= " + format(row.target, ".2f")
        lines.append(
            f"{row.key:<4}{row.model:<{model_width}}  {row.what:<{what_width}}"
            f"{show(row.ours):>13}{show(row.baseline):>13}{row.ratio:>8.3f}{target:>9}"
            f"  {row.verdict}".rstrip()
        )
    return "\n".join(lines)
