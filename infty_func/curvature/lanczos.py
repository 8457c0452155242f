"""Lanczos with full reorthogonalisation, on pytrees of vectors, several runs at once.

Vectors are the params' structure with a leading run axis ``R``; the operator applies the
Hessian to all runs in one batched call. Scalars are accumulated in float64, and every new
Lanczos vector is orthogonalised twice against all earlier ones (classical Gram–Schmidt,
repeated), so the Ritz values stay clean of the ghost copies plain Lanczos produces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.tree import PyTree, tree_leaves, tree_map

__all__ = ["LanczosResult", "lanczos", "batched_dot", "batched_norm", "tridiagonal"]

_TINY = 1e-30


class LanczosResult(NamedTuple):
    alphas: Tensor  # [R, m] float64 diagonal of T
    betas: Tensor  # [R, m - 1] float64 off-diagonal of T
    basis: list  # m pytrees, each with the leading run axis: the Lanczos vectors


def batched_dot(a: PyTree, b: PyTree) -> Tensor:
    """``⟨a_r, b_r⟩`` for each run ``r`` (leading axis), in float64."""
    total = None
    for x, y in zip(tree_leaves(a), tree_leaves(b)):
        part = (x.reshape(x.shape[0], -1).to(torch.float64) * y.reshape(y.shape[0], -1).to(torch.float64)).sum(-1)
        total = part if total is None else total + part
    return total


def batched_norm(a: PyTree) -> Tensor:
    return batched_dot(a, a).clamp_min(0).sqrt()


def _axpy(x: PyTree, coefficient: Tensor, y: PyTree) -> PyTree:
    """``x + c_r · y`` per run."""
    return tree_map(lambda u, v: u + coefficient.to(u.dtype).reshape(-1, *([1] * (u.dim() - 1))) * v, x, y)


def _scale(x: PyTree, coefficient: Tensor) -> PyTree:
    return tree_map(lambda u: u * coefficient.to(u.dtype).reshape(-1, *([1] * (u.dim() - 1))), x)


def lanczos(
    apply: Callable[[PyTree], PyTree],
    start: PyTree,
    steps: int,
    on_step: Callable[[Tensor, Tensor], bool] | None = None,
) -> LanczosResult:
    """``steps`` Lanczos iterations from ``start`` (normalised per run here).

    ``apply(v)`` returns ``H v`` for the batch of vectors ``v``. ``on_step(alphas, betas)``,
    called after each iteration with the coefficients so far, may return ``True`` to stop
    early (a convergence test). A run whose Krylov space is exhausted (``β ≈ 0``) keeps a
    zero coupling, so its tridiagonal matrix splits and its Ritz values stay exact.
    """
    q = _scale(start, 1.0 / batched_norm(start).clamp_min(_TINY))
    basis, alphas, betas = [q], [], []
    w = apply(q)
    alpha = batched_dot(w, q)
    w = _axpy(w, -alpha, q)
    alphas.append(alpha)
    for _ in range(1, steps):
        if on_step is not None and on_step(torch.stack(alphas, -1), torch.stack(betas, -1) if betas else None):
            break
        for _repeat in range(2):  # full reorthogonalisation, twice
            for previous in basis:
                w = _axpy(w, -batched_dot(w, previous), previous)
        beta = batched_norm(w)
        exhausted = beta <= 1e-12 * alphas[0].abs().clamp_min(1.0)
        q_next = _scale(w, torch.where(exhausted, 0.0, 1.0 / beta.clamp_min(_TINY)))
        betas.append(torch.where(exhausted, 0.0, beta))
        w = _axpy(apply(q_next), -betas[-1], q)
        alpha = batched_dot(w, q_next)
        w = _axpy(w, -alpha, q_next)
        alphas.append(alpha)
        basis.append(q_next)
        q = q_next
    return LanczosResult(
        torch.stack(alphas, -1),
        torch.stack(betas, -1) if betas else torch.zeros(alphas[0].shape[0], 0, dtype=torch.float64),
        basis,
    )


def tridiagonal(alphas: Tensor, betas: Tensor) -> Tensor:
    """The ``[R, m, m]`` tridiagonal matrices."""
    matrix = torch.diag_embed(alphas)
    if betas.shape[-1]:
        matrix = matrix + torch.diag_embed(betas, 1) + torch.diag_embed(betas, -1)
    return matrix
