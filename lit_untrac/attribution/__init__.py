"""Gradient baselines at dataset level, one file each: GradDot and GradCos
(:mod:`~lit_untrac.attribution.graddot`), TracIn
(:mod:`~lit_untrac.attribution.tracin`), Hessian influence functions with
LiSSA and Arnoldi (:mod:`~lit_untrac.attribution.hif`); vectors in parameter
space (:mod:`~lit_untrac.attribution.gradients`).

Every score is positive when removing the training dataset would raise the
test loss: the direction of the ground truth (Eq. 1) and of UnTrac.
"""

from __future__ import annotations

from collections.abc import Sequence

from lit_untrac.errors import UserError

#: The baselines, by the method names of ``influence.csv``.
METHODS = ("graddot", "gradcos", "tracin", "hif_lissa", "hif_arnoldi")


def resolve_methods(methods: str | Sequence[str]) -> list[str]:
    """Method names from a list or a comma-separated string, checked.

    Raises:
        UserError: for an unknown name (the message lists the known ones) or
            an empty list.
    """
    if isinstance(methods, str):
        methods = methods.split(",")
    names = [m.strip() for m in methods if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise UserError(
            f"unknown baseline method(s) {unknown}; expected any of: {', '.join(METHODS)}"
        )
    if not names:
        raise UserError(f"no baseline method given; expected any of: {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


__all__ = ["METHODS", "resolve_methods"]
