"""GradDot and GradCos at dataset level.

With g(D) = sum_{z in D} grad L(z, theta_0) the dataset gradient
(:mod:`lit_untrac.modules.gradients`):

    GradDot(Z', Z) = <g(Z), g(Z')>
    GradCos(Z', Z) = <g(Z) / ||g(Z)||, g(Z')>                      (normalize="train")
                   = <g(Z) / ||g(Z)||, g(Z') / ||g(Z')||>          (normalize="both")

``normalize="train"`` follows the paper's reference code, which normalised
the summed training gradient only; ``"both"`` is the plain cosine. For one
test set the two differ by the constant factor ||g(Z')||, so they rank and
correlate the training datasets identically.

Sign: a gradient step on Z changes the test loss by about
-lr <g(Z), g(Z')>, so a positive score means Z lowered the test loss and
removing it would raise it: the direction of the ground truth (Eq. 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

from lit_untrac.attribution.gradients import Scores, Vector, dot, norm, pairwise_scores
from lit_untrac.errors import choose

NORMALIZATIONS = ("train", "both")


def graddot_scores(
    test_gradients: Mapping[str, Vector], train_gradients: Iterable[tuple[str, Vector]]
) -> Scores:
    """GradDot(Z', Z) = <g(Z), g(Z')> for every (training, test) pair."""
    return pairwise_scores(test_gradients, train_gradients, dot)


def gradcos_scores(
    test_gradients: Mapping[str, Vector],
    train_gradients: Iterable[tuple[str, Vector]],
    normalize: Literal["train", "both"] = "train",
) -> Scores:
    """GradCos(Z', Z): GradDot with the training gradient (and, with
    ``normalize="both"``, the test gradient) divided by its L2 norm."""
    choose("GradCos normalisation", normalize, NORMALIZATIONS)
    train_norms: dict[str, float] = {}

    def remembering_norms() -> Iterator[tuple[str, Vector]]:
        for name, gradient in train_gradients:
            train_norms[name] = norm(gradient)
            yield name, gradient

    dots = pairwise_scores(test_gradients, remembering_norms(), dot)
    test_norms = {n: norm(g) if normalize == "both" else 1.0 for n, g in test_gradients.items()}
    return {
        (train, test): _ratio(value, train_norms[train] * test_norms[test])
        for (train, test), value in dots.items()
    }


def _ratio(value: float, denominator: float) -> float:
    """value / denominator; a zero gradient scores zero."""
    return value / denominator if denominator > 0 else 0.0
