"""B3: dataset-level gradient extraction against a plain loop of backward
passes over the same data.

Ours is what every gradient baseline calls: :class:`GradientExtractor`'s
``dataset_gradient`` under a Lightning Trainer (``Trainer.predict``, the
batches served by a DataLoader, moved to the device by the strategy, the
gradient reduced across processes and taken out of ``.grad``). The plain
loop computes the same g(D) = sum_z grad L(z) (each example's mean token
loss) by hand over the same collated batches, the model already on the
device, and takes the gradients out of ``.grad``. The two alternate, in
turns first; each is first run once, untimed, on one batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks import Row, Settings, autocast, benchmark_data, clock, median, quiet_trainer

TARGET = 1.20
#: Examples per backward pass: the baselines' default batch size.
BATCH_SIZE = 8


def plain_gradient(model, batches, settings: Settings) -> list[torch.Tensor]:
    """sum over the batches' examples of the gradient of the example's mean
    token loss, in bare PyTorch."""
    device = torch.device(settings.device)
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    for batch in batches:
        input_ids = batch["input_ids"].to(device)
        with autocast(settings):
            out = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device))
        logits = out.logits[:, :-1]
        targets = batch["labels"].to(device)[:, 1:]
        nll = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(),
            targets.reshape(-1),
            ignore_index=-100,
            reduction="none",
        ).view(targets.shape)
        (nll.sum(1) / (targets != -100).sum(1).clamp(min=1)).sum().backward()
    gradient = [p.grad for p in params]
    for p in params:
        p.grad = None
    return gradient


def benchmark(settings: Settings) -> list[Row]:
    from lit_untrac.models import load_model
    from lit_untrac.modules.gradients import GradientExtractor
    from lit_untrac.modules.losses import EvalSet

    model, tokenizer = load_model(settings.model)
    device = torch.device(settings.device)
    model.to(device).eval()
    data = benchmark_data(settings, settings.examples).prepare(tokenizer)
    batch_size = min(BATCH_SIZE, settings.examples)
    batches = EvalSet.build("train_1", data.examples("train_1"), data.collator, batch_size).batches
    extractor = GradientExtractor(model)
    trainer = quiet_trainer(settings, [], inference_mode=False)
    now = clock(settings.device)

    def ours() -> None:
        extractor.dataset_gradient(trainer, batches)

    def plain() -> None:
        plain_gradient(model, batches, settings)

    extractor.dataset_gradient(trainer, batches[:1])
    plain_gradient(model.to(device), batches[:1], settings)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for i in range(settings.repeats * settings.steps):
        for name, run in sorted((("ours", ours), ("plain", plain)), reverse=i % 2 == 1):
            model.to(device).eval()  # Lightning's predict may hand it back on the CPU
            start = now()
            run()
            times[name].append(now() - start)
    what = f"dataset gradient (Trainer.predict) / plain backward loop, {settings.examples} examples"
    return [Row("B3", what, median(times["ours"]), median(times["plain"]), TARGET)]
