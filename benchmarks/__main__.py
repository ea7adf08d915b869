"""``python -m benchmarks``: run the speed and memory benchmarks and print their ratios.

    python -m benchmarks                      # the tiny model (B1-B6), then OPT-125M-sized (B1, B2, B3, B5)
    python -m benchmarks --model tiny --only B1 --repeats 9
    python -m benchmarks --model opt125m --only B4 --arnoldi-iterations 4
    python -m benchmarks --only B6 --experiment runs/default
    python -m benchmarks --model smollm2-135m-instruct --examples 16

Each model has its own defaults (:data:`PROFILES`: examples, steps, repeats,
warm-up, which benchmarks); the flags override them for every model. B6 does
not depend on the model and runs once.

A new benchmark is a file with a ``benchmark(settings) -> list[Row]``
function, added to :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace

from benchmarks import (
    Settings,
    end_to_end,
    gradients,
    memory,
    padding,
    table,
    tracker_eval,
    unlearning_step,
)

#: Benchmark key -> (what it compares, its function).
BENCHMARKS = {
    "B1": ("InfluenceTracker evaluation vs a bare no_grad loop", tracker_eval.benchmark),
    "B2": ("UnlearningModule step vs a plain PyTorch step", unlearning_step.benchmark),
    "B3": ("dataset gradient extraction vs a plain backward loop", gradients.benchmark),
    "B4": ("peak memory of an UnTrac run vs plain finetuning", memory.benchmark),
    "B5": ("padding waste of the evaluation batches", padding.benchmark),
    "B6": ("the default experiment end to end: wall time and compute", end_to_end.benchmark),
}
#: Benchmarks that do not depend on the model: run once, with the first model.
MODEL_FREE = ("B6",)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "configs", "experiments", "tiny_synthetic_a.yaml")

#: facebook/opt-125m's dimensions, built from scratch with random weights
#: (speed does not depend on them) and the offline byte tokenizer.
OPT_125M = {
    "config": {
        "model_type": "opt",
        "vocab_size": 50272,
        "hidden_size": 768,
        "word_embed_proj_dim": 768,
        "num_hidden_layers": 12,
        "ffn_dim": 3072,
        "num_attention_heads": 12,
        "max_position_embeddings": 2048,
        "dropout": 0.1,
    },
    "tokenizer": "bytes",
}


def tiny_model() -> dict:
    """The model of the tiny experiment config (random weights: speed does not
    depend on them)."""
    import yaml

    with open(TINY_CONFIG) as handle:
        return yaml.safe_load(handle)["model"]["model"]


@dataclass(frozen=True)
class Profile:
    """A model's default benchmark settings."""

    data: str
    examples: int
    steps: int
    repeats: int
    warmup: int
    benchmarks: tuple[str, ...]


#: The default run fits 10 minutes on 2 busy CPU cores: every benchmark on
#: the tiny model; the four speed-and-padding ones on the OPT-125M-sized
#: model, each with a few steps of 512-token blocks (about 5 s a step there).
PROFILES = {
    "tiny": Profile("synthetic", 64, 8, 3, 2, tuple(BENCHMARKS)),
    "opt125m": Profile("text", 2, 2, 1, 1, ("B1", "B2", "B3", "B5")),
}


def model_spec(name: str):
    if name == "tiny":
        return tiny_model()
    if name == "opt125m":
        return OPT_125M
    return name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.split("\n")[1:]),
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="Run only these.")
    parser.add_argument(
        "--model",
        nargs="+",
        default=["tiny", "opt125m"],
        help="'tiny', 'opt125m' (facebook/opt-125m's size, random weights), or a model name "
        "or path (tiny's defaults); several run one after another.",
    )
    parser.add_argument("--examples", type=int, help="Examples per dataset.")
    parser.add_argument("--steps", type=int, help="Timed steps per repeat.")
    parser.add_argument("--repeats", type=int, help="Repeats (medians over all).")
    parser.add_argument("--warmup", type=int, help="Untimed steps per repeat.")
    parser.add_argument(
        "--seq-len", type=int, default=512, help="Tokens per text block (opt125m; 512 or 1024)."
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--precision",
        default="32-true",
        choices=["32-true", "bf16-mixed"],
        help="The trainers' precision; the bare loops run under the same autocast.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 on CPU: on a shared machine more threads "
        "spin-wait for each other and run many times slower).",
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="B6: an experiment folder to read (default runs/default if it exists, else a "
        "reduced default experiment is run in a temporary folder).",
    )
    parser.add_argument(
        "--arnoldi-iterations", type=int, default=25, help="B4: Arnoldi's n (default 25)."
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    import warnings

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    workdir = tempfile.mkdtemp(prefix="lit-untrac-benchmarks-")
    timer = "process CPU time" if args.device == "cpu" else "synchronised wall time"
    print(
        f"lit-untrac benchmarks: {args.device}, {args.precision}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {timer}"
    )
    rows = []
    done: set[str] = set()
    try:
        for name in args.model:
            profile = PROFILES.get(name, PROFILES["tiny"])
            settings = Settings(
                model=model_spec(name),
                model_name=name,
                data=profile.data,
                block_size=args.seq_len,
                examples=args.examples or profile.examples,
                steps=args.steps or profile.steps,
                repeats=args.repeats or profile.repeats,
                warmup=profile.warmup if args.warmup is None else args.warmup,
                device=args.device,
                workdir=workdir,
                experiment=args.experiment,
                arnoldi_iterations=args.arnoldi_iterations,
                precision=args.precision,
            )
            keys = [k for k in (args.only or profile.benchmarks) if k not in done]
            done.update(k for k in keys if k in MODEL_FREE)
            if not keys:
                continue
            print(
                f"{name}: {', '.join(keys)}; {settings.examples} examples, medians over "
                f"{settings.repeats} repeats of {settings.steps} steps after {settings.warmup} "
                f"warm-up steps",
                flush=True,
            )
            for key in keys:
                for row in BENCHMARKS[key][1](replace(settings)):
                    row.model = row.model or name
                    rows.append(row)
        print(table(rows))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
