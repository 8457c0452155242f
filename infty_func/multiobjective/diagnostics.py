"""Conflict diagnostics every aggregator emits from its Gramian and weights, with no extra
pass over the parameters."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ConflictDiagnostics", "conflict_diagnostics", "empty_diagnostics", "mean_pairwise_cosine"]

_TINY = 1e-30


class ConflictDiagnostics(NamedTuple):
    cosine: Tensor  # [m, m] pairwise cosine similarity of the objectives' gradients (before)
    norms: Tensor  # [m] gradient norms
    update_cosine: Tensor  # [m] cosine between each gradient and the aggregated update (after)
    gains: Tensor  # [m] first-order decrease of each loss along the update: ⟨g_i, d⟩
    update_norm: Tensor  # the aggregated update's norm


def empty_diagnostics(m: int, dtype=torch.float64) -> ConflictDiagnostics:
    return ConflictDiagnostics(
        torch.zeros(m, m, dtype=dtype), torch.zeros(m, dtype=dtype), torch.zeros(m, dtype=dtype),
        torch.zeros(m, dtype=dtype), torch.zeros((), dtype=dtype),
    )


def conflict_diagnostics(gram: Tensor, weights: Tensor) -> ConflictDiagnostics:
    """From ``G = J Jᵀ`` and the update ``d = Σ_i w_i g_i``: ``cos(g_i, g_j)``, ``‖g_i‖``,
    ``cos(g_i, d)``, ``⟨g_i, d⟩ = (G w)_i`` and ``‖d‖ = √(wᵀ G w)``, all in float64."""
    gram = gram.to(torch.float64)
    weights = weights.to(torch.float64)
    norms = torch.diagonal(gram).clamp_min(0).sqrt()
    scale = torch.outer(norms, norms).clamp_min(_TINY)
    gains = gram @ weights
    update_norm = (weights @ gains).clamp_min(0).sqrt()
    return ConflictDiagnostics(gram / scale, norms, _update_cosine(gains, norms, update_norm), gains, update_norm)


def _update_cosine(gains: Tensor, norms: Tensor, update_norm: Tensor) -> Tensor:
    """``⟨g_i, d⟩ / (‖g_i‖‖d‖)``, and 0 where the update (or the gradient) vanishes: the
    numerator is then rounding error, and dividing it by a tiny norm would report nonsense."""
    denominator = norms * update_norm
    vanishing = denominator <= 1e-12 * norms.max().clamp_min(_TINY) ** 2
    return torch.where(vanishing, torch.zeros_like(gains), gains / denominator.clamp_min(_TINY)).clamp(-1.0, 1.0)


def mean_pairwise_cosine(cosine: Tensor) -> Tensor:
    """The mean off-diagonal entry of ``cosine`` (``[..., m, m]``, m ≥ 2): ``cos(g₁, g₂)``
    for two objectives, and INFTY's ``sim_list`` entry for any m."""
    m = cosine.shape[-1]
    off_diagonal = cosine.sum((-2, -1)) - torch.diagonal(cosine, dim1=-2, dim2=-1).sum(-1)
    return off_diagonal / (m * (m - 1))
