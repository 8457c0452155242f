"""GradVac (Wang et al. 2021, "Gradient Vaccine: Investigating and Improving Multi-task
Optimization in Massively Multilingual Models")."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.multiobjective.aggregator import weighted_aggregator

__all__ = ["gradvac", "GradVacState", "gradvac_weights", "PAIRS"]

PAIRS = ("all", "first")
_EPS = 1e-8  # the reference's guard on norms


class GradVacState(NamedTuple):
    targets: Tensor  # [m, m] float64: the EMA target similarity of each pair (upper triangle used)


def gradvac_weights(gram: Tensor, targets: Tensor, beta: float, pairs: str = "all") -> tuple[Tensor, Tensor]:
    """One GradVac step on a Gramian: weights on the gradients and the new targets.

    For each pair ``i < j`` (only ``(0, 1)`` with ``pairs="first"``, as ``infty``) with
    ``s = ⟨g_i, g_j⟩ / (‖g_i‖‖g_j‖ + ε)`` below its target ``T``:
    ``a = T √(1 − s²) − s √(1 − T²)``, ``g_i ← g_i + ‖g_i‖ a / (‖g_j‖ √(1 − T²) + ε) · g_j``
    and symmetrically for ``g_j`` (both from the original gradients), and the target moves
    to ``(1 − β) T + β s``; pairs at or above their target are left alone. The update is
    the sum of the (corrected) gradients.
    """
    m = gram.shape[0]
    norms = torch.diagonal(gram).clamp_min(0).sqrt()
    weights = torch.ones(m, dtype=torch.float64, device=gram.device)
    new_targets = targets.clone()
    chosen = [(0, 1)] if pairs == "first" else [(i, j) for i in range(m) for j in range(i + 1, m)]
    for i, j in chosen:
        s = gram[i, j] / (norms[i] * norms[j] + _EPS)
        t = targets[i, j]
        root_t = (1.0 - t * t).clamp_min(0).sqrt()
        below = s < t
        a = t * (1.0 - s * s).clamp_min(0).sqrt() - s * root_t
        to_i = norms[i] * a / (norms[j] * root_t + _EPS)  # coefficient of g_j added to g_i
        to_j = norms[j] * a / (norms[i] * root_t + _EPS)  # coefficient of g_i added to g_j
        weights = weights + torch.where(below, 1.0, 0.0) * (to_i * _unit(m, j, gram) + to_j * _unit(m, i, gram))
        new_targets[i, j] = torch.where(below, (1.0 - beta) * t + beta * s, t)
    return weights, new_targets


def _unit(m, index, like):
    return torch.nn.functional.one_hot(torch.tensor(index, device=like.device), m).to(torch.float64)


def gradvac(
    beta: float = 0.9,
    target: float = 0.1,
    granularity: str = "model",
    m: int | None = 2,
    pairs: str = "all",
) -> GradientTransformation:
    """GradVac as an aggregator: gradients whose cosine falls below an adaptive target are
    moved towards each other until they reach it, then summed (see :func:`gradvac_weights`).

    Args:
        beta: how far a target moves to the observed cosine when the pair is below it
            (``(1 − β) T + β s``, the reference's rule; the paper's ``β`` is small).
        target: the initial target cosine of every pair (the reference's ``S_T``).
        granularity: ``"model"`` (one cosine over all parameters) or ``"layer"`` (one per
            parameter leaf, each with its own targets: the reference's ``layer-wise``).
        m: the number of objectives (the targets of ``pairs="all"`` and the diagnostics
            live in the state, so it is fixed); with ``pairs="first"`` it may be ``None``
            for any ``m ≥ 2`` (the diagnostics then appear after the first step).
        pairs: ``"all"`` pairs ``i < j``, or ``"first"``: only ``(0, 1)``, the others summed
            unchanged, as ``infty.optim.GradVac`` does for any ``m``. For ``m = 2`` they agree.

    Departure from the reference: targets are float64 (``infty`` keeps ``S_T`` in float32
    and computes ``√(1 − T²)`` in float32), a difference of about 1e-8 relative.
    """
    if pairs not in PAIRS:
        raise ValueError(f"gradvac: pairs must be one of {PAIRS}, got {pairs!r}")
    if pairs == "all" and (not isinstance(m, int) or m < 2):
        raise ValueError(f"gradvac with pairs='all' needs the number of objectives m >= 2, got {m!r}")

    size = 2 if pairs == "first" else m

    def init_inner(m_, like):
        del m_, like
        return GradVacState(torch.full((size, size), float(target), dtype=torch.float64))

    def weighting(gram, inner, value=None):
        weights, targets = gradvac_weights(gram, inner.targets, beta, pairs)
        return weights, GradVacState(targets)

    # "first" touches only the pair (0, 1): m (or None, for any m ≥ 2) only sizes the diagnostics.
    return weighted_aggregator("gradvac", weighting, m, init_inner, granularity)
