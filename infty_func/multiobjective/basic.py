"""The simplest aggregators: the mean and the minimum-norm point (MGDA)."""

from __future__ import annotations

import torch

from infty_func.core.base import GradientTransformation
from infty_func.multiobjective.aggregator import weighted_aggregator
from infty_func.multiobjective.simplex import simplex_qp

__all__ = ["mean", "mgda"]


def mean(m: int | None = None) -> GradientTransformation:
    """``(1/m) Σ_i g_i``: the gradient of the mean loss."""

    def weighting(gram, inner, value=None):
        rows = gram.shape[0]
        return torch.full((rows,), 1.0 / rows, dtype=torch.float64, device=gram.device), inner

    return weighted_aggregator("mean", weighting, m)


def mgda(m: int | None = None) -> GradientTransformation:
    """MGDA (Désidéri 2012; Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective
    Optimization"): the minimum-norm point of the convex hull of the gradients,
    ``d = Σ_i w_i g_i`` with ``w = argmin_{w ∈ Δ} wᵀ G w``.

    The simplex QP on the Gramian is solved exactly by enumerating supports
    (:mod:`~infty_func.multiobjective.simplex`), branch-free and vmappable, for m ≤ 12.
    A descent direction for every objective when one exists (``⟨g_i, d⟩ ≥ ‖d‖²``).
    """

    def weighting(gram, inner, value=None):
        return simplex_qp(gram), inner

    return weighted_aggregator("mgda", weighting, m)
