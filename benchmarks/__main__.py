"""``python -m benchmarks``: run the speed benchmarks and print their ratios.

    python -m benchmarks                      # every benchmark, tiny model, CPU
    python -m benchmarks --only B1 --repeats 9
    python -m benchmarks --model smollm2-135m-instruct --examples 64

A new benchmark is a file with a ``benchmark(settings) -> list[Row]``
function, added to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

from benchmarks import Settings, table, tracker_eval, unlearning_step

#: Benchmark key -> (what it compares, its function).
BENCHMARKS = {
    "B1": ("InfluenceTracker evaluation vs a bare no_grad loop", tracker_eval.benchmark),
    "B2": ("UnlearningModule step vs a plain PyTorch step", unlearning_step.benchmark),
}

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "experiments", "tiny_synthetic_a.yaml")


def tiny_model() -> dict:
    """The model of the tiny experiment config (random weights: speed does not
    depend on them)."""
    import yaml

    with open(TINY_CONFIG) as handle:
        return yaml.safe_load(handle)["model"]["model"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="Run only these.")
    parser.add_argument("--model", default="tiny", help="'tiny' or a model name or path.")
    parser.add_argument("--examples", type=int, default=256, help="Examples per dataset.")
    parser.add_argument("--steps", type=int, default=16, help="Timed steps per repeat.")
    parser.add_argument("--repeats", type=int, default=5, help="Repeats (medians over all).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per repeat.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = tempfile.mkdtemp(prefix="lit-untrac-benchmarks-")
    settings = Settings(
        model=tiny_model() if args.model == "tiny" else args.model,
        examples=args.examples,
        steps=args.steps,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        workdir=workdir,
    )
    timer = "process CPU time" if args.device == "cpu" else "synchronised wall time"
    print(
        f"lit-untrac benchmarks: model {args.model}, {args.device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {timer}; medians over {args.repeats} repeats "
        f"of {args.steps} steps"
    )
    rows = []
    for key in args.only or list(BENCHMARKS):
        rows += BENCHMARKS[key][1](settings)
    print(table(rows))
    shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
