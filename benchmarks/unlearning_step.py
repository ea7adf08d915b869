"""B2: an UnlearningModule step under Lightning against a plain PyTorch
gradient-ascent step.

Both unlearn the same dataset with the same DataLoader (batch size 1, the
paper's UnTrac) and the same optimizer (Adam, lr 5e-5). A step's time is the
time from the end of one optimizer step to the end of the next: data
loading, forward, backward, optimizer step and, under Lightning, every hook
and the logging of the loss. The two runs alternate within each repeat.
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import torch

from benchmarks import (
    Row,
    Settings,
    autocast,
    benchmark_data,
    clock,
    median,
    plain_adam,
    quiet_trainer,
)

TARGET = 1.05


class StepTimes(pl.Callback):
    def __init__(self, device: str) -> None:
        self.clock = clock(device)
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.ends.append(self.clock())


def lightning_steps(settings: Settings, module, data) -> list[float]:
    times = StepTimes(settings.device)
    quiet_trainer(settings, [times]).fit(module, datamodule=data)
    return [b - a for a, b in zip(times.ends, times.ends[1:])][settings.warmup :]


def plain_steps(settings: Settings, model, loader) -> list[float]:
    now = clock(settings.device)
    device = torch.device(settings.device)
    model.train()
    optimizer = plain_adam(model)
    ends = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(settings):
            loss = model(**batch).loss
        optimizer.zero_grad()
        (-loss).backward()
        optimizer.step()
        ends.append(now())
    return [b - a for a, b in zip(ends, ends[1:])][settings.warmup :]


def benchmark(settings: Settings) -> list[Row]:
    from lit_untrac.modules import UnlearningModule

    steps = settings.warmup + settings.steps + 1
    start = UnlearningModule(settings.model)
    data = benchmark_data(settings, steps, unlearn="train_1", unlearn_batch_size=1)
    data.prepare(start.tokenizer)
    ours: list[float] = []
    plain: list[float] = []
    for _ in range(settings.repeats):
        ours += lightning_steps(settings, copy.deepcopy(start), data)
        model = copy.deepcopy(start.model).to(settings.device)
        data.trainer = None  # the same batches from the start, not a resumed run's rest
        plain += plain_steps(settings, model, data.train_dataloader())
    what = "UnlearningModule step under Lightning / plain ascent step (batch 1)"
    return [Row("B2", what, median(ours), median(plain), TARGET)]
