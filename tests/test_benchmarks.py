"""The benchmarks compare like with like, and count what they say they count.

Speed itself is measured by ``python -m benchmarks``, not here: these tests
check that each benchmark's two sides compute the same thing, that its
counts match a count made another way, and that the command prints the
rows it promises.
"""

from __future__ import annotations

import re

import pytest
import torch

from benchmarks import Settings, benchmark_data, quiet_trainer
from benchmarks.__main__ import main, tiny_model


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(model=tiny_model(), examples=12, workdir=str(tmp_path_factory.mktemp("bench")))


def test_b3_plain_loop_computes_the_extractors_gradient(settings):
    """B3's bare side is the same sum of per-example mean-token-loss
    gradients as GradientExtractor's."""
    from benchmarks.gradients import plain_gradient
    from lit_untrac.models import load_model
    from lit_untrac.modules.gradients import GradientExtractor
    from lit_untrac.modules.losses import EvalSet

    torch.manual_seed(0)
    model, tokenizer = load_model(settings.model)
    model.eval()
    data = benchmark_data(settings, settings.examples).prepare(tokenizer)
    batches = EvalSet.build("train_1", data.examples("train_1"), data.collator, 4).batches
    ours = GradientExtractor(model).dataset_gradient(
        quiet_trainer(settings, [], inference_mode=False), batches
    )
    model.to("cpu").eval()
    plain = plain_gradient(model, batches, settings)
    assert len(ours) == len(plain)
    for a, b in zip(ours, plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_b5_counts_padding_token_by_token(settings):
    """B5's padded and real counts equal a count over every row of every batch."""
    from benchmarks.padding import padded_and_real, synthetic
    from lit_untrac.models import load_tokenizer
    from lit_untrac.modules.losses import EvalSet

    data = synthetic("synthetic_a", load_tokenizer("bytes"))
    batches = [
        b
        for name, examples in data.eval_sets("train").items()
        for b in EvalSet.build(name, examples, data.collator, 64).batches
    ]
    padded = real = 0
    for batch in batches:
        for row in batch["attention_mask"].tolist():
            real += sum(row)
            padded += len(row) - sum(row)
    lengths = sorted(
        len(e["input_ids"]) for examples in data.eval_sets("train").values() for e in examples
    )
    assert real == sum(lengths)  # every example once, none cut
    assert padded_and_real(batches) == (padded, real)


def test_b6_counts_the_trackers_evaluations():
    """B6 counts an evaluation at step 0, every n steps, and at the last step,
    as the InfluenceTracker evaluates."""
    from benchmarks.end_to_end import evaluated_steps

    def by_hand(steps: int, every: int) -> int:
        return len({0, steps} | set(range(every, steps + 1, every)))

    for steps, every in [(10, 4), (8, 4), (1, 1), (256, 16), (5, 7)]:
        assert evaluated_steps(steps, every) == by_hand(steps, every)


def test_the_command_prints_a_row_per_ratio(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        ["--model", "tiny", "--only", "B1", "B2", "B5"]
        + ["--repeats", "1", "--steps", "2", "--warmup", "1", "--examples", "8"]
    )
    assert list(tmp_path.iterdir()) == []  # nothing written where it runs
    printed = capsys.readouterr().out
    assert printed.startswith("lit-untrac benchmarks: cpu, 32-true")
    rows = re.findall(
        r"^(B\d) +tiny .*? (\d+\.\d{3}) +<= (\d\.\d\d) +(ok|OVER)$", printed, re.MULTILINE
    )
    assert [key for key, *_ in rows] == ["B1", "B2"] + ["B5"] * 5
    assert [target for _, _, target, _ in rows] == ["1.10", "1.05"] + ["0.10"] * 5
    # each row's ratio is its two printed values divided
    for line in printed.splitlines():
        match = re.match(r"^B5 .* ([\d,]+) +([\d,]+) +(\d+\.\d{3})", line)
        if match:
            padded, real = (int(v.replace(",", "")) for v in match.groups()[:2])
            assert float(match.group(3)) == pytest.approx(padded / real, abs=5e-4)
