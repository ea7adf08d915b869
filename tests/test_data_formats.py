"""Formats: completion-only masks, text blocks, collation, length grouping."""

from __future__ import annotations

import random

import pytest
import torch

from lit_untrac.data.formats import (
    IGNORE_INDEX,
    Collator,
    length_grouped_batches,
    padding_waste,
    prompt_completion_example,
    text_blocks,
)
from lit_untrac.models import byte_tokenizer


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_causal_mask_covers_exactly_the_completion(tok):
    prompt, completion = "What is the number that comes after 600?", "601"
    example = prompt_completion_example(prompt, completion, tok)
    ids, labels = example["input_ids"], example["labels"]
    n_prompt = len(prompt.encode())  # byte-level: one token per byte
    # The prompt's tokens are masked, every other token is a label equal to its input.
    assert (labels[:n_prompt] == IGNORE_INDEX).all()
    assert (labels[n_prompt:] == ids[n_prompt:]).all()
    assert tok.decode(ids[n_prompt:]) == " 601" + tok.eos_token
    assert tok.decode(ids[:n_prompt]) == prompt


def test_empty_prompt_puts_loss_on_the_whole_text(tok):
    example = prompt_completion_example("", "some text", tok)
    assert example["input_ids"][0] == tok.bos_token_id
    assert example["labels"][0] == IGNORE_INDEX
    assert tok.decode(example["labels"][1:]) == "some text" + tok.eos_token


def test_encoder_decoder_labels_are_the_completion(tok):
    example = prompt_completion_example("2 + 2 =", "4", tok, encoder_decoder=True)
    assert tok.decode(example["input_ids"]) == "2 + 2 ="
    assert tok.decode(example["labels"]) == "4" + tok.eos_token


def test_long_prompts_are_cut_from_the_left(tok):
    example = prompt_completion_example("x" * 50 + "END", "ok", tok, max_length=10)
    assert len(example["input_ids"]) == 10
    assert tok.decode(example["input_ids"]).endswith("END ok" + tok.eos_token)


def test_text_blocks_have_exactly_block_size_tokens(tok):
    texts = [f"document number {i} " * (i % 5 + 1) for i in range(40)]
    blocks = text_blocks(texts, tok, block_size=16)
    assert all(len(b["input_ids"]) == 16 for b in blocks)
    stream = []
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(blocks) == len(stream) // 16
    assert torch.cat([b["input_ids"] for b in blocks]).tolist() == stream[: 16 * len(blocks)]
    assert all(torch.equal(b["input_ids"], b["labels"]) for b in blocks)


def test_collator_pads_right_and_masks_padding():
    examples = [
        {"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor([-100, 6, 7])},
        {"input_ids": torch.tensor([8]), "labels": torch.tensor([8])},
    ]
    batch = Collator(pad_token_id=0)(examples)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_length_grouping_keeps_every_example_once_and_wastes_little():
    rng = random.Random(0)
    examples = [
        {"input_ids": torch.arange(rng.randint(5, 60)), "labels": torch.arange(1)}
        for _ in range(200)
    ]
    for i, e in enumerate(examples):
        e["labels"] = torch.tensor([i])  # identify each example
    collator = Collator(pad_token_id=0)
    grouped = length_grouped_batches(examples, collator, batch_size=16)
    seen = sorted(int(x) for b in grouped for x in b["labels"][:, 0])
    assert seen == list(range(200))
    assert all(b["input_ids"].size(0) <= 16 for b in grouped)
    in_order = [collator(examples[i : i + 16]) for i in range(0, 200, 16)]
    assert padding_waste(grouped) < 0.1 < padding_waste(in_order)


def test_max_tokens_bounds_padded_batch_size():
    examples = [
        {"input_ids": torch.arange(n), "labels": torch.arange(n)}
        for n in (40, 40, 30, 10, 10, 10, 10)
    ]
    batches = length_grouped_batches(examples, Collator(0), batch_size=100, max_tokens=80)
    assert all(b["input_ids"].numel() <= 80 for b in batches)
    assert sum(b["input_ids"].size(0) for b in batches) == 7
