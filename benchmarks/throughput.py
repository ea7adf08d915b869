"""Throughput on an NVIDIA GPU: the OPT-125M-sized model (random weights) in
bf16-mixed, on blocks of ``--seq-len`` tokens.

* Unlearning: tokens per second of UnlearningModule steps under a Lightning
  Trainer (batch ``--batch-size``), and model FLOPs utilisation, 6 x
  parameters x tokens per second over the GPU's peak dense bf16 FLOPs
  (looked up from its name, or ``--peak-tflops``).
* Evaluation: tokens per second of an InfluenceTracker evaluation of the test
  set (``--eval-examples`` blocks) inside that training, and of a bare
  ``torch.no_grad()`` loop over the same batches.

Run by ``benchmarks/gpu.sh``; also ``python -m benchmarks.throughput --device cpu``
for a (slow) dry run anywhere.
"""

from __future__ import annotations

import argparse
import copy

import torch

from benchmarks import Settings, benchmark_data, median
from benchmarks.__main__ import OPT_125M

#: Dense bf16 peak TFLOPS (no sparsity) by a substring of the device name,
#: from the vendors' data sheets; the first match wins.
PEAK_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
]


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def unlearning(settings: Settings, batch_size: int) -> tuple[float, int]:
    """(median seconds per step, tokens per step) of UnlearningModule steps."""
    from benchmarks.unlearning_step import lightning_steps
    from lit_untrac.modules import UnlearningModule

    module = UnlearningModule(settings.model)
    steps = settings.warmup + settings.steps + 1
    data = benchmark_data(
        settings, steps * batch_size, unlearn="train_1", unlearn_batch_size=batch_size
    ).prepare(module.tokenizer)
    times = []
    for _ in range(settings.repeats):
        data.trainer = None
        times += lightning_steps(settings, copy.deepcopy(module), data)
    return median(times), batch_size * settings.block_size


def evaluation(settings: Settings) -> tuple[float, float, int]:
    """(tracker seconds, bare seconds, tokens) of one evaluation of the test set."""
    from benchmarks.tracker_eval import side_by_side
    from lit_untrac.modules import LanguageModel

    timings, batches = side_by_side(settings, LanguageModel(settings.model, export=False))
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    return median(timings.ours), median(timings.bare), tokens


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8, help="Unlearning batch size.")
    parser.add_argument("--eval-examples", type=int, default=256, help="Blocks evaluated.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args(argv)

    import logging
    import tempfile
    import warnings

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks.throughput: no CUDA device (use --device cpu for a dry run)")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if args.device == "cuda" else None)
    with tempfile.TemporaryDirectory(prefix="lit-untrac-throughput-") as workdir:
        settings = Settings(
            model=OPT_125M,
            model_name="opt125m",
            data="text",
            block_size=args.seq_len,
            examples=args.eval_examples,
            steps=args.steps,
            repeats=args.repeats,
            warmup=args.warmup,
            device=args.device,
            workdir=workdir,
            precision=args.precision,
        )
        from lit_untrac.models import load_model

        n = parameters(load_model(OPT_125M)[0])
        step, step_tokens = unlearning(settings, args.batch_size)
        tracker, bare, eval_tokens = evaluation(settings)
    rate = step_tokens / step
    print(f"throughput: {name}, {args.precision}, OPT-125M-sized ({n / 1e6:.1f} M parameters)")
    print(
        f"  unlearning: batch {args.batch_size} x {args.seq_len} tokens, {step * 1e3:.1f} ms/step"
    )
    print(f"    {rate:,.0f} tokens/s; {6 * n * rate / 1e12:.1f} TFLOPS (6 x parameters x tokens)")
    if peak:
        print(
            f"    model FLOPs utilisation {6 * n * rate / (peak * 1e12):.1%} of {peak:.0f} TFLOPS"
        )
    else:
        print("    model FLOPs utilisation: unknown peak for this device (pass --peak-tflops)")
    print(f"  evaluation: {args.eval_examples} blocks, {eval_tokens:,} tokens")
    print(f"    InfluenceTracker {eval_tokens / tracker:,.0f} tokens/s ({tracker * 1e3:.1f} ms)")
    print(f"    bare no_grad loop {eval_tokens / bare:,.0f} tokens/s ({bare * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
