"""Vectors in parameter space, kept as one tensor per parameter.

A gradient, a Hessian-vector product or a Krylov basis vector of a model is
a :data:`Vector`: a list with one tensor per trainable parameter, in the
order of ``model.parameters()``. Nothing here flattens the parameters into
one long vector: dot products and norms accumulate tensor by tensor (in
float64), so working with a vector costs no more memory than the vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from lit_untrac.modules.gradients import Vector

#: Influence of each (training dataset, test dataset) pair.
Scores = dict[tuple[str, str], float]


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """<a, b>, summed tensor by tensor in float64."""
    if len(a) != len(b):
        raise ValueError(f"vectors of {len(a)} and {len(b)} tensors cannot be multiplied")
    total = 0.0
    for x, y in zip(a, b):
        total += float(torch.sum(x.double() * y.double()))
    return total


def norm(a: Sequence[torch.Tensor]) -> float:
    """The global L2 norm ||a|| over all parameters."""
    return math.sqrt(dot(a, a))


def scaled(a: Sequence[torch.Tensor], factor: float) -> Vector:
    """factor * a, as a new vector."""
    return [x * factor for x in a]


def add_(a: Vector, b: Sequence[torch.Tensor], alpha: float = 1.0) -> Vector:
    """a += alpha * b, in place; returns ``a``."""
    for x, y in zip(a, b):
        x.add_(y, alpha=alpha)
    return a


def normalized(a: Sequence[torch.Tensor]) -> Vector:
    """a / ||a|| (a zero vector stays zero)."""
    length = norm(a)
    return scaled(a, 1.0 / length) if length > 0 else [x.clone() for x in a]


def zeros_like(a: Sequence[torch.Tensor]) -> Vector:
    return [torch.zeros_like(x) for x in a]


def is_finite(a: Sequence[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(x).all()) for x in a)


def pairwise_scores(
    test_gradients: Mapping[str, Vector],
    train_gradients: Iterable[tuple[str, Vector]],
    score: Callable[[Vector, Vector], float],
) -> Scores:
    """``score(train_gradient, test_gradient)`` for every pair.

    The training gradients are consumed one at a time (a generator may
    compute each on demand), so only the test gradients are held together.
    """
    scores: Scores = {}
    for train_name, train_gradient in train_gradients:
        for test_name, test_gradient in test_gradients.items():
            scores[(train_name, test_name)] = score(train_gradient, test_gradient)
    return scores
