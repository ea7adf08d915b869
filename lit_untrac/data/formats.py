"""Formats: from raw text to token ids with loss labels, and back into batches.

* ``text``: the texts are tokenised, joined with an end-of-text token and cut
  into blocks of exactly ``block_size`` tokens (the remainder is dropped);
  the loss covers every token.
* ``prompt_completion``: for a causal model the input is prompt, separator,
  completion and end-of-text, and the labels mask the prompt (``-100``); for
  an encoder-decoder model the prompt is the encoder's input and the
  completion, with end-of-text, the decoder's labels. An empty prompt
  becomes the begin-of-text token, so the loss covers the whole completion.

Examples are dicts of 1-D ``torch.long`` tensors (``input_ids``, ``labels``)
and, for datasets with subsets, a ``subset`` string.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from lit_untrac.errors import UserError

IGNORE_INDEX = -100


class Examples(Dataset):
    """Tokenised examples held in memory, as a map-style dataset."""

    def __init__(self, rows: Sequence[dict], name: str = "") -> None:
        self.rows = list(rows)
        self.name = name

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return self.rows[index]

    def select(self, indices: Iterable[int]) -> Examples:
        return Examples([self.rows[i] for i in indices], self.name)

    def subsets(self) -> dict[str, Examples]:
        """Split by the ``subset`` field, in order of first appearance."""
        groups: dict[str, list[dict]] = {}
        for row in self.rows:
            groups.setdefault(row["subset"], []).append(row)
        return {key: Examples(rows, f"{self.name}/{key}") for key, rows in groups.items()}


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _bos_id(tokenizer) -> int:
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    raise UserError("the tokenizer has neither a begin- nor an end-of-text token")


def _long(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def text_blocks(texts: Sequence[str], tokenizer, block_size: int) -> list[dict]:
    """Concatenate tokenised texts (each followed by end-of-text) and cut blocks."""
    if block_size < 2:
        raise UserError(f"block_size={block_size} must be at least 2")
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    rows = []
    for start in range(0, len(stream) - block_size + 1, block_size):
        block = _long(stream[start : start + block_size])
        rows.append({"input_ids": block, "labels": block.clone()})
    return rows


def prompt_completion_example(
    prompt: str,
    completion: str,
    tokenizer,
    separator: str = " ",
    encoder_decoder: bool = False,
    max_length: int | None = None,
) -> dict:
    """One prompt-completion example with the prompt masked out of the labels."""
    eos = tokenizer.eos_token_id
    if encoder_decoder:
        source = tokenizer(prompt)["input_ids"] if prompt else [_bos_id(tokenizer)]
        target = tokenizer(completion)["input_ids"]
        if not target or target[-1] != eos:
            target = target + [eos]
        if max_length is not None:
            source, target = source[-max_length:], target[:max_length]
        return {"input_ids": _long(source), "labels": _long(target)}
    prompt_ids = _ids(tokenizer, prompt) if prompt else [_bos_id(tokenizer)]
    completion_ids = _ids(tokenizer, (separator if prompt else "") + completion) + [eos]
    if max_length is not None and len(prompt_ids) + len(completion_ids) > max_length:
        keep = max_length - len(completion_ids)
        if keep < 1:
            raise UserError(
                f"a completion of {len(completion_ids)} tokens does not fit max_length={max_length}"
            )
        prompt_ids = prompt_ids[-keep:]
    ids = prompt_ids + completion_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    return {"input_ids": _long(ids), "labels": _long(labels)}


def tokenize(
    raw,
    spec,
    tokenizer,
    block_size: int,
    encoder_decoder: bool = False,
    max_length: int | None = None,
) -> list[dict]:
    """Tokenise a dataset read by :func:`~lit_untrac.data.sources.load_raw`."""
    has_subset = "subset" in raw.column_names
    if spec.format == "text":
        if not has_subset:
            return text_blocks(raw["text"], tokenizer, block_size)
        rows = []
        for subset in dict.fromkeys(raw["subset"]):
            texts = [t for t, s in zip(raw["text"], raw["subset"]) if s == subset]
            rows += [dict(row, subset=subset) for row in text_blocks(texts, tokenizer, block_size)]
        return rows
    prompts = raw["prompt"] if "prompt" in raw.column_names else [""] * len(raw)
    subsets = raw["subset"] if has_subset else None
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, raw["completion"])):
        row = prompt_completion_example(
            prompt, completion, tokenizer, spec.separator, encoder_decoder, max_length
        )
        if subsets is not None:
            row["subset"] = subsets[i]
        rows.append(row)
    return rows


@dataclass
class Collator:
    """Pads a list of examples into a batch: ``input_ids``, ``attention_mask``,
    ``labels`` (padded with ``-100``). Padding is on the right."""

    pad_token_id: int

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        width = max(len(e["input_ids"]) for e in examples)
        label_width = max(len(e["labels"]) for e in examples)
        batch = len(examples)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch, width), dtype=torch.long)
        labels = torch.full((batch, label_width), IGNORE_INDEX, dtype=torch.long)
        for i, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[i, :n] = example["input_ids"]
            attention_mask[i, :n] = 1
            labels[i, : len(example["labels"])] = example["labels"]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def length_grouped_batches(
    examples: Sequence[dict], collator: Collator, batch_size: int, max_tokens: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """Pre-collated batches of examples of similar length, for evaluation.

    Examples are sorted by length (longest first, ties in original order) and
    cut into batches of at most ``batch_size`` examples and, if given, at most
    ``max_tokens`` padded tokens, so that padding stays small.
    """
    if batch_size < 1:
        raise UserError(f"eval batch_size={batch_size} must be >= 1")
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    batches, current = [], []
    for index in order:
        if current:
            width = len(examples[current[0]]["input_ids"])  # the longest in the batch
            too_many_tokens = max_tokens is not None and (len(current) + 1) * width > max_tokens
            if len(current) >= batch_size or too_many_tokens:
                batches.append(collator([examples[i] for i in current]))
                current = []
        current.append(index)
    if current:
        batches.append(collator([examples[i] for i in current]))
    return batches


def padding_waste(batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Padded tokens over real tokens, across batches."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    return (total - real) / max(real, 1)
