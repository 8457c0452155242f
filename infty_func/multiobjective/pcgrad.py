"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning")."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.base import GradientTransformation
from infty_func.multiobjective.aggregator import weighted_aggregator

__all__ = ["pcgrad", "PCGradState", "pcgrad_weights"]


class PCGradState(NamedTuple):
    key: Tensor  # int64 [2], advanced every step (the random projection orders)


def pcgrad_weights(gram: Tensor, orders: Tensor, reduction: str = "sum", eps: float = 0.0) -> Tensor:
    """PCGrad on the Gramian: each ``g_i`` is projected, in ``orders[i]``, off every
    original ``g_j`` it conflicts with (``g_i' ← g_i' − (g_i'·g_j)/‖g_j‖² g_j`` when the
    product is negative); the update is the sum (or mean) of the projected gradients.

    Each ``g_i'`` is kept as coefficients on the original gradients, so the products are
    rows of ``C G`` and nothing parameter-sized is touched. ``orders`` is ``[m, m]`` (row
    ``i``: the order in which ``g_i`` meets the others; its own index is skipped).
    ``eps`` is added to ``‖g_j‖²`` before dividing (``infty`` uses 1e-8).
    """
    m = gram.shape[0]
    diagonal = torch.diagonal(gram)
    safe = torch.where(diagonal + eps > 0, diagonal + eps, torch.ones_like(diagonal))
    eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
    rows = []
    for i in range(m):
        c = eye[i]
        for step in range(m):
            j = orders[i, step]
            product = c @ gram[:, j]
            conflict = (product < 0) & (j != i) & (diagonal[j] + eps > 0)
            c = c - torch.where(conflict, product / safe[j], torch.zeros_like(product)) * eye[j]
        rows.append(c)
    weights = torch.stack(rows).sum(0)
    return weights / m if reduction == "mean" else weights


def pcgrad(seed: int | None = 0, reduction: str = "sum", eps: float = 0.0, m: int | None = None) -> GradientTransformation:
    """PCGrad as an aggregator: projected conflicting gradients, summed (``"sum"``, as the
    paper, ``infty``, ``conflictfree`` and ``torchjd``) or averaged (``"mean"``).

    ``seed``: each gradient meets the others in a random order drawn from the transform's
    key (a new order every step, reproducible, vmappable). ``seed=None`` uses the fixed
    order ``0, 1, ..., m − 1`` (``conflictfree.PCGradOperator``'s). For ``m = 2`` the order
    does not matter.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"pcgrad: reduction must be 'sum' or 'mean', got {reduction!r}")

    def init_inner(m_, params):
        del m_, params
        return PCGradState(random.key(0 if seed is None else seed))

    def weighting(gram, inner, value=None):
        rows = gram.shape[0]
        if seed is None:
            orders = torch.arange(rows, device=gram.device).expand(rows, rows)
        else:
            noise = torch.stack([random.uniform(random.fold_in(inner.key, i), (rows,), torch.float64) for i in range(rows)])
            orders = torch.argsort(noise, dim=-1)
        return pcgrad_weights(gram, orders, reduction, eps), PCGradState(random.next_key(inner.key))

    return weighted_aggregator("pcgrad", weighting, m, init_inner)
