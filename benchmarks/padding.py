"""B5: padding waste of the evaluation batches, padded tokens over real
tokens, as the InfluenceTracker and the ground truth build them
(:class:`~lit_untrac.modules.losses.EvalSet`: examples grouped by length, at
most ``eval_batch_size`` of them a batch).

Formats: prompt-completion (synthetic datasets A and B at the paper's size,
256 examples a set; UnTrac evaluates the test set, UnTrac-Inv the four
training sets) and text blocks (the pretraining format, ``block_size``
tokens each). Each row also says what the same batches would waste in
dataset order, as a plain DataLoader cuts them.
"""

from __future__ import annotations

from benchmarks import Row, Settings, benchmark_data

TARGET = 0.10
EVAL_BATCH_SIZE = 64  # the tracker's default
PAPER_SIZE = 256


def padded_and_real(batches) -> tuple[int, int]:
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    return sum(b["attention_mask"].numel() for b in batches) - real, real


def waste_row(what: str, sets: dict, collator) -> Row:
    from lit_untrac.data.formats import padding_waste
    from lit_untrac.modules.losses import EvalSet

    grouped = [
        b for n, s in sets.items() for b in EvalSet.build(n, s, collator, EVAL_BATCH_SIZE).batches
    ]
    in_order = [
        collator(list(s)[i : i + EVAL_BATCH_SIZE])
        for s in sets.values()
        for i in range(0, len(s), EVAL_BATCH_SIZE)
    ]
    padded, real = padded_and_real(grouped)
    what = f"{what}: padded / real tokens (in dataset order {padding_waste(in_order):.2f})"
    return Row("B5", what, padded, real, TARGET, unit="tok")


def synthetic(dataset: str, tokenizer):
    from lit_untrac.data import MixtureDataModule

    def spec(split: str) -> dict:
        return {
            "name": split,
            "generator": dataset,
            "generator_args": {"split": split, "n": PAPER_SIZE},
        }

    return MixtureDataModule(
        train=[spec(f"train_{i}") for i in range(1, 5)], test=[spec("test")]
    ).prepare(tokenizer)


def benchmark(settings: Settings) -> list[Row]:
    from dataclasses import replace

    from lit_untrac.models import ModelSpec, load_tokenizer

    spec = ModelSpec.coerce(settings.model)
    tokenizer = load_tokenizer(spec.tokenizer or spec.name_or_path)
    rows = []
    for dataset, letter in (("synthetic_a", "A"), ("synthetic_b", "B")):
        data = synthetic(dataset, tokenizer)
        rows.append(
            waste_row(f"synthetic {letter} test set", data.eval_sets("test"), data.collator)
        )
        rows.append(
            waste_row(f"synthetic {letter} training sets", data.eval_sets("train"), data.collator)
        )
    text = replace(settings, data="text")
    data = benchmark_data(text, max(settings.examples, EVAL_BATCH_SIZE)).prepare(tokenizer)
    rows.append(
        waste_row(f"text blocks of {settings.block_size}", data.eval_sets("test"), data.collator)
    )
    return rows
