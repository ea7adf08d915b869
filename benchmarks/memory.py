"""B4: the peak memory of an UnTrac run against a plain finetuning run with
the same model, batch and optimizer, each in its own process; and the peak
of the Hessian baselines (HIF with LiSSA, HIF with Arnoldi) against the same
plain run.

* UnTrac: an UnlearningModule (Adam, batch 1) and an InfluenceTracker that
  evaluates the test set at every step, under a Lightning Trainer, for
  ``steps`` steps.
* Plain finetuning: a bare PyTorch loop over the same batches with the same
  optimizer, for as many steps.
* HIF-LiSSA and HIF-Arnoldi: the baselines' own code
  (:mod:`lit_untrac.stages.baselines`) on the same model: the gradients of
  the training and test sets, then LiSSA (depth 10) or Arnoldi (n
  iterations, which keeps n + 1 gradient-sized vectors, p = n eigenpairs),
  the Hessian on ``examples`` training examples.

On CPU a process's peak is its peak resident set size (``ru_maxrss``),
which includes the interpreter, torch, Lightning and transformers: every
process imports the same modules and builds the same model and data first,
and the row says how large the process was by then (its ``setup``). On
CUDA it is ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from types import SimpleNamespace

from benchmarks import Row, Settings, autocast, benchmark_data, plain_adam

TARGET = 1.10
MODES = ("plain", "untrac", "hif_lissa", "hif_arnoldi")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def plain_finetuning(settings: Settings, model, data) -> None:
    import torch

    device = torch.device(settings.device)
    model.to(device).train()
    optimizer = plain_adam(model)
    data.trainer = None
    for batch in data.train_dataloader():
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(settings):
            loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def untrac_run(settings: Settings, module, data) -> None:
    from benchmarks import quiet_trainer
    from lit_untrac.callbacks import InfluenceTracker

    tracker = InfluenceTracker(every_n_steps=1, dirpath=settings.workdir)
    quiet_trainer(settings, [tracker]).fit(module, datamodule=data)


def hif_run(settings: Settings, mode: str, module, data) -> None:
    from benchmarks import quiet_trainer
    from lit_untrac.modules.losses import EvalSet
    from lit_untrac.stages.baselines import RUNNERS, GradientJob

    # LiSSA's scale only has to keep the series from diverging on these random
    # weights (their Hessian is larger than a trained model's); memory does
    # not depend on it.
    options = SimpleNamespace(
        batch_size=8,
        lissa=SimpleNamespace(depth=10, damping=0.01, scale=1e4, repeats=1, batch_size=None),
        arnoldi=SimpleNamespace(
            iterations=settings.arnoldi_iterations, top_k=settings.arnoldi_iterations
        ),
    )

    def batches(name: str) -> list:
        return EvalSet.build(name, data.examples(name), data.collator, options.batch_size).batches

    model = module.model.eval()
    job = GradientJob(
        model,
        quiet_trainer(settings, [], inference_mode=False),
        train={"train_1": batches("train_1")},
        test={"test": batches("test")},
        hessian_rows=data.examples("train_1").rows,
        collator=data.collator,
    )
    RUNNERS[mode](job, options)


def measure(mode: str, settings: Settings) -> dict[str, int]:
    """Run one mode in this process; its setup size and its peak, in bytes."""
    import lightning.pytorch as pl  # noqa: F401  (every mode imports the same)
    import torch

    from lit_untrac.modules import UnlearningModule

    torch.set_num_threads(1 if settings.device == "cpu" else torch.get_num_threads())
    module = UnlearningModule(settings.model)
    data = benchmark_data(
        settings,
        settings.examples,
        unlearn="train_1",
        unlearn_batch_size=1,
        attribution_samples=settings.steps,  # UnTrac unlearns this many, one a step
    ).prepare(module.tokenizer)
    if settings.device == "cuda":
        module.to(settings.device)
        torch.cuda.reset_peak_memory_stats()
    setup = peak_bytes(settings.device)
    if mode == "plain":
        plain_finetuning(settings, module.model, data)
    elif mode == "untrac":
        untrac_run(settings, module, data)
    else:
        hif_run(settings, mode, module, data)
    return {"setup": setup, "peak": peak_bytes(settings.device)}


def in_subprocess(mode: str, settings: Settings) -> dict[str, int]:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    )
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", mode, json.dumps(dataclasses.asdict(settings))],
        capture_output=True,
        text=True,
        env=env,
        cwd=settings.workdir,
    )
    if done.returncode != 0:
        raise RuntimeError(f"B4 {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark(settings: Settings) -> list[Row]:
    peaks = {mode: in_subprocess(mode, settings) for mode in MODES}
    plain = peaks["plain"]["peak"]
    setup = max(p["setup"] for p in peaks.values()) / 2**20
    n = settings.arnoldi_iterations
    return [
        Row(
            "B4",
            f"peak memory: UnTrac run / plain finetuning, {settings.steps} steps "
            f"(process setup {setup:.0f} MiB)",
            peaks["untrac"]["peak"],
            plain,
            TARGET,
            unit="MiB",
        ),
        Row(
            "B4",
            "peak memory: HIF-LiSSA (depth 10) / plain finetuning",
            peaks["hif_lissa"]["peak"],
            plain,
            None,
            unit="MiB",
        ),
        Row(
            "B4",
            f"peak memory: HIF-Arnoldi (n = p = {n}) / plain finetuning",
            peaks["hif_arnoldi"]["peak"],
            plain,
            None,
            unit="MiB",
        ),
    ]


if __name__ == "__main__":
    result = measure(sys.argv[1], Settings(**json.loads(sys.argv[2])))
    print(json.dumps(result))
