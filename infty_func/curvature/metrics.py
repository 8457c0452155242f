"""Summaries of a spectral density, as ``infty.plot`` reports them."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from infty_func.curvature.spectrum import SpectralDensity

__all__ = ["esd_metrics"]


def esd_metrics(density: SpectralDensity, trace: float | Tensor | None = None, right_tail_threshold: float = 1.0) -> dict:
    """The empirical spectral density's metrics, with ``infty.plot.summarize_esd``'s
    definitions: nodes and weights of all runs pooled, weights clipped at 0 and normalised
    (uniform if they sum to ≤ 1e-12); ``lambda_max``, ``lambda_min``, ``mean_eigenvalue``
    ``Σ w λ``, ``negative_mass`` ``Σ_{λ<0} w``, ``positive_mass`` ``Σ_{λ≥0} w``,
    ``right_tail_mass`` ``Σ_{λ>threshold} w``, ``spectral_entropy`` ``−Σ w ln(w + 1e-12)``,
    ``effective_rank`` ``exp(entropy)``, and ``mean_trace`` (the given trace estimate, or
    ``None``). Plain floats, ready for JSON."""
    nodes = density.nodes.reshape(-1).to(torch.float64)
    weights = density.weights.reshape(-1).to(torch.float64).clamp_min(0)
    total = float(weights.sum())
    weights = weights / total if total > 1e-12 else torch.full_like(weights, 1.0 / weights.numel())
    entropy = float(-(weights * torch.log(weights + 1e-12)).sum())
    return {
        "lambda_max": float(nodes.max()),
        "lambda_min": float(nodes.min()),
        "mean_eigenvalue": float((weights * nodes).sum()),
        "negative_mass": float(weights[nodes < 0].sum()),
        "positive_mass": float(weights[nodes >= 0].sum()),
        "right_tail_mass": float(weights[nodes > right_tail_threshold].sum()),
        "spectral_entropy": entropy,
        "effective_rank": math.exp(entropy),
        "mean_trace": None if trace is None else float(trace),
    }
