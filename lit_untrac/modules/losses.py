"""Language-model losses, per example and per batch, computed one way for
every part of lit-untrac (training, unlearning, evaluation, gradients).

The loss of an example is the mean negative log-likelihood of its label
tokens (labels ``-100`` are ignored): L(z, theta) in the paper's equations.
The loss of a training batch is the mean over all label tokens of the batch,
as ``transformers`` computes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lit_untrac.data.formats import IGNORE_INDEX, length_grouped_batches


def logits_and_targets(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and their aligned target ids, ``[B, T, V]`` and ``[B, T]``."""
    labels = batch["labels"]
    if getattr(model.config, "is_encoder_decoder", False):
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
            use_cache=False,
        )
        return out.logits, labels
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    )
    return out.logits[:, :-1], labels[:, 1:]


def token_nll(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example sums of token negative log-likelihoods and label-token counts.

    Returns:
        ``(nll_sum, n_tokens)``, both of shape ``[B]``; ``nll_sum`` in float32.
    """
    logits, targets = logits_and_targets(model, batch)
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    return nll.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


def example_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L(z, theta) for each example of the batch: its mean token loss, ``[B]``."""
    nll_sum, n_tokens = token_nll(model, batch)
    return nll_sum / n_tokens.clamp(min=1)


def batch_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of a batch: the mean over all its label tokens."""
    nll_sum, n_tokens = token_nll(model, batch)
    return nll_sum.sum() / n_tokens.sum().clamp(min=1)


@dataclass
class EvalSet:
    """One named evaluation set, tokenised and collated once.

    The batches group examples of similar length (little padding) and can be
    moved to a device once, so an evaluation is a bare forward loop.
    """

    name: str
    batches: list[dict[str, torch.Tensor]]
    n_examples: int

    @classmethod
    def build(
        cls, name: str, examples, collator, batch_size: int, max_tokens: int | None = None
    ) -> EvalSet:
        batches = length_grouped_batches(list(examples), collator, batch_size, max_tokens)
        return cls(name, batches, len(examples))

    def to(self, device: torch.device | str) -> EvalSet:
        moved = [{k: v.to(device, non_blocking=True) for k, v in b.items()} for b in self.batches]
        return EvalSet(self.name, moved, self.n_examples)


@torch.no_grad()
def summed_example_loss(model, eval_set: EvalSet) -> torch.Tensor:
    """sum_j L(z_j, theta) over the set's examples, in float64 (a 0-d tensor)."""
    total = torch.zeros((), dtype=torch.float64, device=_device_of(model))
    for batch in eval_set.batches:
        total += example_losses(model, batch).double().sum()
    return total


def reduce_loss(total: float, n_examples: int, reduction: str) -> float:
    """``sum``: the paper's sum over examples (Eq. 2 and 4); ``mean``: per example."""
    if reduction == "sum":
        return float(total)
    if reduction == "mean":
        return float(total) / max(n_examples, 1)
    raise ValueError(f"unknown reduction {reduction!r}; expected 'sum' or 'mean'")


def _device_of(model) -> torch.device:
    return next(model.parameters()).device
