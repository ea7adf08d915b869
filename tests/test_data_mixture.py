"""The mixture datamodule: what each mode serves, and bad input."""

from __future__ import annotations

import os

import pytest
import torch

from lit_untrac.data import MixtureDataModule, SeededBatchSampler
from lit_untrac.errors import UserError
from lit_untrac.models import byte_tokenizer
from tests.conftest import synthetic_specs


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def datamodule(tok, **kwargs) -> MixtureDataModule:
    return MixtureDataModule(**synthetic_specs(n=12), **kwargs).prepare(tok)


def sequences(examples) -> set[tuple[int, ...]]:
    return {tuple(e["input_ids"].tolist()) for e in examples}


def batch_sequences(batch) -> list[tuple[int, ...]]:
    return [
        tuple(ids[mask.bool()].tolist())
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"])
    ]


def test_sampler_passes_are_seeded_permutations():
    sampler = SeededBatchSampler(n=7, batch_size=4, seed=1, num_batches=5)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 and all(len(b) == 4 for b in batches)
    drawn = [i for b in batches for i in b]
    generator = torch.Generator().manual_seed(1)
    expected = [i for _ in range(3) for i in torch.randperm(7, generator=generator).tolist()]
    assert drawn == expected[:20]
    assert sorted(drawn[:7]) == sorted(drawn[7:14]) == list(range(7))


def test_epoch_batches_never_span_two_passes():
    batches = list(SeededBatchSampler(n=7, batch_size=4, seed=0, epochs=2))
    assert [len(b) for b in batches] == [4, 3, 4, 3]
    assert sorted(batches[0] + batches[1]) == sorted(batches[2] + batches[3]) == list(range(7))


def test_processes_share_each_global_batch():
    whole = list(SeededBatchSampler(n=10, batch_size=4, seed=3, epochs=1))
    shares = [
        list(SeededBatchSampler(n=10, batch_size=4, seed=3, epochs=1, rank=r, world_size=2))
        for r in (0, 1)
    ]
    for batch, first, second in zip(whole, *shares):
        assert sorted(first + second) == sorted(batch) and first == batch[0::2]
    with pytest.raises(UserError, match="cannot be shared by 2 processes"):
        SeededBatchSampler(n=10, batch_size=1, epochs=1, world_size=2)


def test_mixture_runs_for_train_steps_over_all_datasets(tok):
    dm = datamodule(tok, batch_size=3, train_steps=10)
    batches = list(dm.train_dataloader())
    assert len(batches) == 10 and all(b["input_ids"].size(0) == 3 for b in batches)
    allowed = set().union(*(sequences(dm.examples(n)) for n in dm.train_names))
    seen = [s for b in batches for s in batch_sequences(b)]
    assert set(seen) <= allowed
    # 30 draws over 48 examples: no repeats within the first pass.
    assert len(set(seen)) == 30


@pytest.mark.parametrize("excluded", ["train_1", "train_3"])
def test_leave_out_never_yields_the_excluded_dataset(tok, excluded):
    dm = datamodule(tok, batch_size=4, train_steps=40, exclude=excluded)
    forbidden = sequences(dm.examples(excluded))
    seen = [s for b in dm.train_dataloader() for s in batch_sequences(b)]
    assert len(seen) == 160
    assert not forbidden & set(seen)
    # Every other dataset is there.
    for name in dm.train_names:
        if name != excluded:
            assert sequences(dm.examples(name)) <= set(seen)


def test_unlearn_serves_one_dataset_with_its_batch_size_and_epochs(tok):
    dm = datamodule(tok, unlearn="train_2", unlearn_batch_size=5, unlearn_epochs=3)
    batches = list(dm.train_dataloader())
    seen = [s for b in batches for s in batch_sequences(b)]
    assert len(seen) == 36 and [b["input_ids"].size(0) for b in batches] == [5, 5, 2] * 3
    assert set(seen) == sequences(dm.examples("train_2"))
    assert all(seen.count(s) == 3 for s in set(seen))


def test_unlearn_a_test_set_in_one_batch(tok):
    dm = datamodule(tok, unlearn="test", unlearn_batch_size=256, unlearn_epochs=5)
    batches = list(dm.train_dataloader())
    assert [b["input_ids"].size(0) for b in batches] == [12] * 5


def test_attribution_samples_are_seeded_subsets(tok):
    dm = datamodule(tok, attribution_samples=5, sample_seed=2)
    sample = dm.attribution_examples("train_1")
    assert len(sample) == 5
    assert sequences(sample) <= sequences(dm.examples("train_1"))
    other = datamodule(tok, attribution_samples=5, sample_seed=3).attribution_examples("train_1")
    assert sequences(sample) != sequences(other)
    assert len(dm.attribution_examples("test")) == 12  # test sets are never sampled


def test_eval_sets_split_subsets(tmp_path, tok):
    rows = "\n".join(
        f'{{"prompt": "p{i}", "completion": "c{i}", "group": "{"ab"[i % 2]}"}}' for i in range(6)
    )
    path = tmp_path / "t.jsonl"
    path.write_text(rows)
    dm = MixtureDataModule(
        train=synthetic_specs(n=4)["train"],
        test=[
            {"name": "grouped", "files": str(path), "subset_field": "group"},
            synthetic_specs(n=4)["test"][0],
        ],
    ).prepare(tok)
    sets = dm.eval_sets("test")
    assert list(sets) == ["grouped/a", "grouped/b", "test"]
    assert [len(s) for s in sets.values()] == [3, 3, 4]
    assert list(dm.eval_sets("train")) == ["train_1", "train_2", "train_3", "train_4"]
    assert len(dm.examples("grouped/b")) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(exclude="train_9"), "cannot exclude unknown dataset 'train_9'"),
        (dict(unlearn="nope"), "cannot unlearn unknown dataset 'nope'"),
        (dict(unlearn="train_1", exclude="train_1"), "contradict"),
        (dict(batch_size=0), "batch_size=0 must be >= 1"),
    ],
)
def test_bad_modes_are_clear_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        MixtureDataModule(**synthetic_specs(n=4), **kwargs)


def test_a_test_set_cannot_also_be_a_training_set():
    specs = synthetic_specs(n=4)
    specs["test"][0]["name"] = "train_1"
    with pytest.raises(UserError, match=r"\['train_1'\] appear more than once"):
        MixtureDataModule(**specs)


def test_block_size_larger_than_positions_is_refused(tok):
    dm = MixtureDataModule(
        train=[
            {
                "name": "t",
                "generator": "synthetic_a",
                "generator_args": {"split": "test", "n": 4},
                "format": "text",
                "text_field": "prompt",
            }
        ],
        block_size=512,
    )
    with pytest.raises(UserError, match="block_size=512 is larger than the model's 256 positions"):
        dm.prepare(tok, max_positions=256)


def test_dataset_shorter_than_a_block_is_refused(tok):
    dm = MixtureDataModule(
        train=[
            {
                "name": "t",
                "generator": "synthetic_a",
                "generator_args": {"split": "test", "n": 1},
                "format": "text",
                "text_field": "prompt",
            }
        ],
        block_size=200,
    )
    with pytest.raises(UserError, match="no examples after tokenisation"):
        dm.prepare(tok)


def test_text_examples_are_blocks(tok):
    dm = MixtureDataModule(
        train=[
            {
                "name": "t",
                "generator": "synthetic_a",
                "generator_args": {"split": "train_3", "n": 64},
                "format": "text",
                "text_field": "prompt",
                "max_examples": 10,
            }
        ],
        block_size=32,
    ).prepare(tok)
    examples = dm.examples("t")
    assert len(examples) == 10
    assert all(
        e["input_ids"].shape == (32,) and torch.equal(e["input_ids"], e["labels"]) for e in examples
    )


def test_tokenised_datasets_are_cached_by_spec_tokenizer_and_block_size(tmp_path, tok, monkeypatch):
    from lit_untrac.data import mixture

    first = datamodule(tok, cache_dir=str(tmp_path))
    assert list(tmp_path.glob("*.pt")) == []  # nothing is written before a job starts
    first.setup("fit")
    assert len(list(tmp_path.glob("*.pt"))) == 5
    calls = []
    real = mixture.tokenize
    monkeypatch.setattr(
        mixture, "tokenize", lambda *a, **k: calls.append(a[1].name) or real(*a, **k)
    )
    second = datamodule(tok, cache_dir=str(tmp_path))
    assert calls == []  # read from the cache
    for name in second.train_names + second.test_names:
        for a, b in zip(first.examples(name), second.examples(name)):
            assert (
                torch.equal(a["input_ids"], b["input_ids"]) and a["input_ids"].dtype == torch.long
            )
    specs = synthetic_specs(n=12)
    specs["train"][0]["generator_args"]["seed"] = 9  # another sample: another key
    MixtureDataModule(**specs, cache_dir=str(tmp_path)).prepare(tok)
    assert calls == ["train_1"]


def test_an_edited_source_file_is_tokenised_again(tmp_path, tok):
    data = tmp_path / "a.jsonl"
    data.write_text('{"prompt": "1+1=", "completion": "2"}\n')
    spec = {
        "name": "a",
        "files": str(data),
        "prompt_field": "prompt",
        "completion_field": "completion",
    }
    cache = str(tmp_path / "cache")
    first = MixtureDataModule(train=[spec], cache_dir=cache).prepare(tok)
    first.setup("fit")
    data.write_text('{"prompt": "2+2=", "completion": "4"}\n')
    os.utime(data, (1, 1))  # a different time, whatever the clock's resolution
    second = MixtureDataModule(train=[spec], cache_dir=cache).prepare(tok)
    expected = tok("2+2=4", add_special_tokens=False)["input_ids"]
    got = second.examples("a")[0]["input_ids"].tolist()
    assert [t for t in got if t in expected] == expected
