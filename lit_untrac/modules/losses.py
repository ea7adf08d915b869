"""Language-model losses, per example and per batch, computed one way for
every part of lit-untrac (training, unlearning, evaluation, gradients).

The loss of an example is the mean negative log-likelihood of its label
tokens (labels ``-100`` are ignored): L(z, theta) in the paper's equations.
The loss of a training batch is the mean over all label tokens of the batch,
as ``transformers`` computes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lit_untrac.data.formats import IGNORE_INDEX


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
