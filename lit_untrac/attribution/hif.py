"""Hessian influence functions (Koh & Liang, 2017) at dataset level, with
two inverse-Hessian solvers: LiSSA (Agarwal et al., 2017) and Arnoldi
(Schioppa et al., 2022, "Scaling Up Influence Functions").

    HIF(Z', Z) = <g(Z'), H^-1 g(Z) / ||g(Z)||>

g are dataset gradients (sums over examples, :mod:`lit_untrac.modules.gradients`),
the training gradient normalised as in the paper; H is the Hessian of the
mean example loss (1/N) sum_i L(z_i, theta_0) over a sample of N training
examples.

Sign: upweighting Z by eps changes the test loss by -eps <g(Z'), H^-1 g(Z)>
(Koh & Liang's I_up,loss), so removing Z raises it by about
+<g(Z'), H^-1 g(Z)>; this module reports that positive form, the direction
of the ground truth (Eq. 1), like every lit-untrac baseline.

The solvers are small pure functions over a Hessian-vector product
``hvp(v) -> H v`` on :data:`~lit_untrac.attribution.gradients.Vector`
objects (one tensor per parameter); the Hessian is never formed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from lit_untrac.attribution.gradients import (
    Scores,
    Vector,
    add_,
    dot,
    is_finite,
    norm,
    normalized,
    pairwise_scores,
    scaled,
)
from lit_untrac.errors import UserError

log = logging.getLogger(__name__)

HVP = Callable[[Vector], Vector]

#: LiSSA stops when ||h_t|| exceeds this many times (t + 1) ||v||: a series
#: whose every factor has |1 - damping - lambda / scale| <= 1 stays below
#: (t + 1) ||v||; the slack absorbs mini-batch noise.
DIVERGENCE_SLACK = 2.0


# ---- scores -------------------------------------------------------------


def hif_scores(
    test_gradients: Mapping[str, Vector],
    train_gradients: Iterable[tuple[str, Vector]],
    inverse_hvp: Callable[[Vector], Vector],
    normalize_train: bool = True,
) -> Scores:
    """HIF(Z', Z) = <g(Z'), H^-1 g(Z)>, for any ``inverse_hvp(v) ~ H^-1 v``.

    One inverse-Hessian-vector product per training dataset; the training
    gradient is divided by its norm first when ``normalize_train``.
    """
    solved = (
        (name, inverse_hvp(normalized(g) if normalize_train else g)) for name, g in train_gradients
    )
    return pairwise_scores(test_gradients, solved, dot)


# ---- LiSSA --------------------------------------------------------------


def lissa(
    hvp: HVP,
    vector: Vector,
    depth: int,
    damping: float = 0.0,
    scale: float = 1.0,
    repeats: int = 1,
) -> Vector:
    """H^-1 v by the stochastic Neumann series of LiSSA.

    The recursion of Koh & Liang's and dattri's implementations:

        h_0 = v,   h_{t+1} = v + (1 - damping) h_t - H_t h_t / scale,

    estimate h_depth / scale, averaged over ``repeats`` runs. ``hvp`` may
    use a new mini-batch at each call (H_t). With the exact H the estimate
    converges to (H + damping * scale * I)^-1 v if and only if every
    eigenvalue lambda of H has |1 - damping - lambda / scale| < 1, that is
    -damping * scale < lambda < (2 - damping) * scale: the scale must exceed
    half the largest eigenvalue.

    Raises:
        UserError: on bad settings, or when the series diverges (a
            non-finite iterate, or ||h_t|| > 2 (t + 1) ||v||), naming the scale.
    """
    if depth < 1 or repeats < 1:
        raise UserError(f"LiSSA needs depth >= 1 and repeats >= 1, got {depth} and {repeats}")
    if not scale > 0:
        raise UserError(f"LiSSA scale={scale} must be > 0")
    if not 0 <= damping < 1:
        raise UserError(f"LiSSA damping={damping} must be in [0, 1)")
    size = norm(vector)
    estimate = [torch.zeros_like(v) for v in vector]
    for _ in range(repeats):
        h = [v.clone() for v in vector]
        for t in range(1, depth + 1):
            hv = hvp(h)
            h = [v + (1 - damping) * x - y / scale for v, x, y in zip(vector, h, hv)]
            _check_lissa_iterate(h, t, size, scale, damping)
        add_(estimate, h, alpha=1.0 / (scale * repeats))
    return estimate


def _check_lissa_iterate(h: Vector, t: int, size: float, scale: float, damping: float) -> None:
    length = norm(h) if is_finite(h) else math.inf
    if not math.isfinite(length) or length > DIVERGENCE_SLACK * (t + 1) * size:
        raise UserError(
            f"LiSSA diverged at iteration {t} with scale={scale} and damping={damping} "
            f"(||h_t|| = {length:.3g}, ||v|| = {size:.3g}): the series converges only when the "
            "scale exceeds half the largest Hessian eigenvalue; use a larger "
            "baselines.lissa.scale (or more damping against negative curvature)"
        )


# ---- Arnoldi ------------------------------------------------------------


def arnoldi(hvp: HVP, start: Vector, iterations: int, tol: float = 1e-6):
    """Arnoldi iteration: an orthonormal Krylov basis of H and H in that basis.

    After k <= ``iterations`` Hessian-vector products, returns the basis
    q_1..q_{k+1} (or q_1..q_k when the Krylov space became invariant: the
    new vector's norm fell below ``tol`` times that of H q_k) and the
    Hessenberg matrix A (``(k+1) x k`` or ``k x k``, float64) with
    H q_j = sum_i A[i, j] q_i. Modified Gram-Schmidt, applied twice.
    """
    if iterations < 1:
        raise UserError(f"Arnoldi needs at least one iteration, got {iterations}")
    basis = [normalized(start)]
    hessenberg = torch.zeros(iterations + 1, iterations, dtype=torch.float64)
    for j in range(iterations):
        w = hvp(basis[j])
        before = norm(w)
        for _ in range(2):
            for i, q in enumerate(basis):
                coefficient = dot(w, q)
                hessenberg[i, j] += coefficient
                add_(w, q, alpha=-coefficient)
        after = norm(w)
        if after <= tol * before or after == 0:
            return basis, hessenberg[: j + 1, : j + 1]
        hessenberg[j + 1, j] = after
        basis.append(scaled(w, 1.0 / after))
    return basis, hessenberg


@dataclass
class HessianEigenbasis:
    """Top eigenpairs of H from an Arnoldi run, the eigenvectors kept in the
    Krylov basis: u_i = sum_j coefficients[j, i] q_j."""

    eigenvalues: torch.Tensor
    basis: list[Vector]
    coefficients: torch.Tensor

    def project(self, vector: Vector) -> torch.Tensor:
        """(<u_1, v>, ..., <u_p, v>), in float64."""
        along_basis = torch.tensor([dot(q, vector) for q in self.basis], dtype=torch.float64)
        return self.coefficients.T @ along_basis


def distill(basis: list[Vector], hessenberg: torch.Tensor, top_k: int) -> HessianEigenbasis:
    """The ``top_k`` eigenpairs of largest magnitude of the projected Hessian.

    The square part of the Hessenberg matrix is Q^T H Q, tridiagonal up to
    rounding for a symmetric H: it is symmetrised, diagonalised, and the
    eigenvalues sorted by magnitude (Schioppa et al.).
    """
    k = hessenberg.shape[1]
    if top_k < 1:
        raise UserError(f"Arnoldi top_k={top_k} must be >= 1")
    if top_k > k:
        log.warning(
            "Arnoldi: the Krylov space has dimension %d < top_k=%d; using %d eigenpairs",
            k,
            top_k,
            k,
        )
        top_k = k
    projected = torch.tril(hessenberg[:k, :k], diagonal=1)
    projected = (projected + projected.T) / 2
    eigenvalues, eigenvectors = torch.linalg.eigh(projected)
    order = torch.argsort(eigenvalues.abs(), descending=True)[:top_k]
    return HessianEigenbasis(eigenvalues[order], basis[:k], eigenvectors[:, order])


def arnoldi_eigenbasis(hvp: HVP, start: Vector, iterations: int, top_k: int) -> HessianEigenbasis:
    """:func:`arnoldi` then :func:`distill`; ``top_k`` may not exceed ``iterations``."""
    check_arnoldi_settings(iterations, top_k)
    basis, hessenberg = arnoldi(hvp, start, iterations)
    return distill(basis, hessenberg, top_k)


def check_arnoldi_settings(iterations: int, top_k: int) -> None:
    if iterations < 1 or top_k < 1:
        raise UserError(
            f"Arnoldi needs iterations >= 1 and top_k >= 1, got {iterations} and {top_k}"
        )
    if top_k > iterations:
        raise UserError(
            f"Arnoldi top_k (p={top_k}) cannot exceed iterations (n={iterations}): n "
            "iterations find at most n eigenpairs; lower baselines.arnoldi.top_k or raise "
            "baselines.arnoldi.iterations"
        )


def hif_arnoldi_scores(
    test_gradients: Mapping[str, Vector],
    train_gradients: Iterable[tuple[str, Vector]],
    eigenbasis: HessianEigenbasis,
    normalize_train: bool = True,
) -> Scores:
    """HIF in the projected space: sum_i <u_i, g(Z')> <u_i, g(Z)> / lambda_i."""
    projected_test = {name: eigenbasis.project(g) for name, g in test_gradients.items()}
    projected_train = (
        (name, eigenbasis.project(normalized(g) if normalize_train else g))
        for name, g in train_gradients
    )
    return pairwise_scores(
        projected_test,
        projected_train,
        lambda train, test: float(torch.sum(train * test / eigenbasis.eigenvalues)),
    )
