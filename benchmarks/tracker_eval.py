"""B1: an InfluenceTracker evaluation against a bare ``torch.no_grad()``
forward loop over the same pre-collated batches.

The tracker runs inside a real Lightning training, evaluating the test set at
every step; its cost is the time its ``on_train_batch_end`` takes (the
evaluation with its mode switches, precision context, float64 sums,
reduction and logging). The bare loop is ``model(**batch)`` (the forward
pass with transformers' own loss) under ``torch.no_grad()`` over the same
length-grouped batches, already on the device, run at the same step, before
the tracker on odd steps and after it on even ones.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from benchmarks import Row, Settings, autocast, benchmark_data, clock, median, quiet_trainer

TARGET = 1.10


def bare_loop(model, batches, settings: Settings) -> None:
    model.eval()
    with torch.no_grad(), autocast(settings):
        for batch in batches:
            model(**batch)
    model.train()


class SideBySide(pl.Callback):
    """Times the callbacks between ``first`` and ``last``, and the bare loop."""

    def __init__(self, settings: Settings, batches) -> None:
        self.settings, self.batches = settings, batches
        self.clock = clock(settings.device)
        self.ours: list[float] = []
        self.bare: list[float] = []
        self.started = 0.0

    def timed_bare(self, module) -> None:
        start = self.clock()
        bare_loop(module.model, self.batches, self.settings)
        self.bare.append(self.clock() - start)

    def first(self, trainer, module) -> None:
        if trainer.global_step > self.settings.warmup and trainer.global_step % 2:
            self.timed_bare(module)
        self.started = self.clock()

    def last(self, trainer, module) -> None:
        elapsed = self.clock() - self.started
        if trainer.global_step > self.settings.warmup:
            self.ours.append(elapsed)
            if trainer.global_step % 2 == 0:
                self.timed_bare(module)


class Before(pl.Callback):
    def __init__(self, side_by_side: SideBySide) -> None:
        self.side_by_side = side_by_side

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.side_by_side.first(trainer, module)


class After(Before):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.side_by_side.last(trainer, module)


def side_by_side(settings: Settings, module) -> tuple[SideBySide, list]:
    """One training of ``settings.warmup + settings.steps`` steps whose tracker
    evaluates the test set at every step, timed against the bare loop; the
    timings and the evaluation batches."""
    from lit_untrac.callbacks import InfluenceTracker
    from lit_untrac.modules.losses import EvalSet

    steps = settings.warmup + settings.steps
    data = benchmark_data(settings, settings.examples, batch_size=1, train_steps=steps)
    data.prepare(module.tokenizer)
    tracker = InfluenceTracker(every_n_steps=1)
    batches = EvalSet.build(
        "test",
        data.eval_sets("test")["test"],
        data.collator,
        tracker.eval_batch_size,
        tracker.eval_max_tokens,
    ).to(settings.device)
    timings = SideBySide(settings, batches.batches)
    callbacks = [Before(timings), tracker, After(timings)]
    quiet_trainer(settings, callbacks).fit(module, datamodule=data)
    return timings, batches.batches


def benchmark(settings: Settings) -> list[Row]:
    from lit_untrac.modules import LanguageModel

    module = LanguageModel(settings.model, export=False)
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(settings.repeats):
        timings, _ = side_by_side(settings, module)
        ours += timings.ours
        bare += timings.bare
    what = f"InfluenceTracker evaluation / bare no_grad loop ({settings.examples} examples)"
    return [Row("B1", what, median(ours), median(bare), TARGET)]
