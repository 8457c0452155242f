"""Lanczos with full reorthogonalisation, several runs at once.

Vectors live as rows of one float64 matrix ``[R, d]`` (``R`` runs, ``d`` parameters) so
that the reorthogonalisation against all earlier Lanczos vectors is two matrix products;
the Hessian is applied to all runs in one batched call (``apply`` maps ``[R, d]`` to
``[R, d]``). Every new vector is orthogonalised against all earlier ones (classical
Gram–Schmidt, repeated once when the first pass removed most of it, the DGKS criterion),
so the Ritz values stay clean of the ghost copies plain Lanczos produces. The pass reads
the whole basis, so it is memory-bound: runs first, one batched matrix product each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["LanczosResult", "lanczos", "tridiagonal"]

_TINY = 1e-30


class LanczosResult(NamedTuple):
    alphas: Tensor  # [R, m] float64 diagonal of T
    betas: Tensor  # [R, m - 1] float64 off-diagonal of T
    basis: Tensor  # [R, m, d] float64 Lanczos vectors


def lanczos(
    apply: Callable[[Tensor], Tensor],
    start: Tensor,
    steps: int,
    on_step: Callable[[Tensor, Tensor], bool] | None = None,
) -> LanczosResult:
    """``steps`` Lanczos iterations from the rows of ``start`` (normalised here).

    ``on_step(alphas, betas)``, called after each iteration with the coefficients so far,
    may return ``True`` to stop early (a convergence test). A run whose Krylov space is
    exhausted (``β ≈ 0``) keeps a zero coupling, so its tridiagonal matrix splits and its
    Ritz values stay exact.
    """
    start = start.to(torch.float64)
    runs, size = start.shape
    basis = torch.empty(runs, steps, size, dtype=torch.float64, device=start.device)  # runs first: one bmm each
    q = start / start.norm(dim=-1, keepdim=True).clamp_min(_TINY)
    basis[:, 0] = q
    w = apply(q)
    alpha = (w * q).sum(-1)
    w = w - alpha[:, None] * q
    alphas, betas = [alpha], []
    used = 1
    for j in range(1, steps):
        if on_step is not None and on_step(torch.stack(alphas, -1), torch.stack(betas, -1) if betas else alpha[:, None][:, :0]):
            break
        previous = basis[:, :j]  # [R, j, d]
        for _repeat in range(2):  # full reorthogonalisation; a second pass only when needed
            before = w.norm(dim=-1)
            coefficients = torch.bmm(previous, w.unsqueeze(-1))  # [R, j, 1]
            w = w - torch.bmm(previous.transpose(1, 2), coefficients).squeeze(-1)
            # Daniel–Gragg–Kaufman–Stewart: one pass suffices unless it removed most of w.
            if bool((w.norm(dim=-1) >= 0.7 * before).all()):
                break
        beta = w.norm(dim=-1)
        exhausted = beta <= 1e-12 * alphas[0].abs().clamp_min(1.0)
        q_next = w * torch.where(exhausted, 0.0, 1.0 / beta.clamp_min(_TINY))[:, None]
        betas.append(torch.where(exhausted, 0.0, beta))
        basis[:, j] = q_next
        w = apply(q_next) - betas[-1][:, None] * q
        alpha = (w * q_next).sum(-1)
        w = w - alpha[:, None] * q_next
        alphas.append(alpha)
        q = q_next
        used = j + 1
    return LanczosResult(
        torch.stack(alphas, -1),
        torch.stack(betas, -1) if betas else torch.zeros(runs, 0, dtype=torch.float64, device=start.device),
        basis[:, :used],
    )


def tridiagonal(alphas: Tensor, betas: Tensor) -> Tensor:
    """The ``[R, m, m]`` tridiagonal matrices."""
    matrix = torch.diag_embed(alphas)
    if betas.shape[-1]:
        matrix = matrix + torch.diag_embed(betas, 1) + torch.diag_embed(betas, -1)
    return matrix
