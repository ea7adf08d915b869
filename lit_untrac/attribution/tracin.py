"""TracIn at dataset level (Pruthi et al., 2020, TracInCP):

    TracIn(Z', Z) = sum_t lr_t <g(Z, theta_t), g(Z', theta_t)>

over the checkpoints theta_t saved while theta_0 trained
(:class:`~lit_untrac.callbacks.TracInCheckpoints`), with lr_t the learning
rate of the step that produced theta_t. The gradients are those of GradDot
(sums over examples); the sign is GradDot's: positive when the training
dataset's steps lowered the test loss, so removing it would raise it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from lit_untrac.attribution.graddot import graddot_scores
from lit_untrac.attribution.gradients import Scores, Vector
from lit_untrac.callbacks.tracin_checkpoints import INDEX_FILE, INDEX_FORMAT
from lit_untrac.errors import UserError


@dataclass(frozen=True)
class TracInCheckpoint:
    """One saved checkpoint: its step, learning rate and file."""

    step: int
    lr: float
    path: str


def read_tracin_checkpoints(folder: str) -> list[TracInCheckpoint]:
    """The checkpoints listed in ``folder/index.json``, in step order.

    Raises:
        UserError: if the folder or its index is missing, lists no
            checkpoint, or a checkpoint has no learning rate or no file.
    """
    advice = (
        "train theta_0 with 'tracin' among baselines.methods (lit-untrac train), or add "
        "lit_untrac.callbacks.TracInCheckpoints to the fit"
    )
    if not os.path.isdir(folder):
        raise UserError(f"no TracIn checkpoints: folder {folder!r} does not exist; {advice}")
    index_path = os.path.join(folder, INDEX_FILE)
    if not os.path.isfile(index_path):
        raise UserError(f"no TracIn checkpoints: {folder!r} has no {INDEX_FILE}; {advice}")
    try:
        with open(index_path, encoding="utf-8") as handle:
            index = json.load(handle)
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"TracIn index {index_path!r} is not readable JSON: {err}") from err
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise UserError(f"TracIn index {index_path!r} is not in the format {INDEX_FORMAT!r}")
    entries = index.get("checkpoints") or []
    if not entries:
        raise UserError(f"no TracIn checkpoints: {index_path!r} lists none; {advice}")
    checkpoints = []
    for entry in entries:
        step, lr = entry.get("step"), entry.get("lr")
        if not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise UserError(
                f"TracIn checkpoint at step {step} in {folder!r} has no learning rate "
                f"(lr={lr!r}); TracIn weighs each checkpoint by its learning rate"
            )
        path = os.path.join(folder, str(entry.get("file")))
        if not os.path.isfile(path):
            raise UserError(f"TracIn checkpoint file {path!r} listed in {index_path!r} is missing")
        checkpoints.append(TracInCheckpoint(int(step), float(lr), path))
    return sorted(checkpoints, key=lambda c: c.step)


def load_tracin_weights(model: torch.nn.Module, checkpoint: TracInCheckpoint) -> None:
    """Load a checkpoint's weights into ``model`` (the module they were saved from)."""
    saved = torch.load(checkpoint.path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError) as err:
        raise UserError(
            f"TracIn checkpoint {checkpoint.path!r} does not fit the model: {str(err)[:300]}"
        ) from err


def tracin_scores(
    checkpoints: Sequence[TracInCheckpoint],
    gradients_at: Callable[
        [TracInCheckpoint], tuple[Mapping[str, Vector], Iterable[tuple[str, Vector]]]
    ],
) -> Scores:
    """sum_t lr_t <g_t(Z), g_t(Z')> for every (training, test) pair.

    Args:
        checkpoints: The saved checkpoints (:func:`read_tracin_checkpoints`).
        gradients_at: For a checkpoint, the test gradients by name and the
            training gradients as ``(name, gradient)`` pairs, at its weights.
    """
    if not checkpoints:
        raise UserError("TracIn needs at least one checkpoint")
    total: Scores = {}
    for checkpoint in checkpoints:
        test_gradients, train_gradients = gradients_at(checkpoint)
        for pair, value in graddot_scores(test_gradients, train_gradients).items():
            total[pair] = total.get(pair, 0.0) + checkpoint.lr * value
    return total
