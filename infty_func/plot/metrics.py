"""The numbers the landscape and conflict figures report, with ``infty.plot``'s
definitions. (The ESD's are :func:`infty_func.curvature.esd_metrics`.)"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["landscape_metrics", "LANDSCAPE_FIELDS", "conflict_metrics", "CONFLICT_FIELDS"]

BASIN_TAUS = (0.01, 0.05, 0.1)
LANDSCAPE_FIELDS = (
    "loss_center", "loss_min", "loss_max", "r0_sharpness", "relative_r0_sharpness",
    *(f"basin_fraction_tau_{tau}" for tau in BASIN_TAUS),
    "center_fd_trace_2d", "lambda1", "lambda2",
)  # fmt: skip
CONFLICT_FIELDS = (
    "count", "mean", "std", "min", "max", "fraction_negative",
    "after_count", "after_mean", "after_std", "after_min", "after_max", "after_fraction_negative",
)  # fmt: skip


def landscape_metrics(losses: Tensor, alphas: Tensor, betas: Tensor, eigenvalues: Tensor | None = None) -> dict:
    """Summaries of a loss surface ``Z`` (``[n, m]`` on the grid ``alphas × betas``), as
    ``infty.plot.summarize_loss_surface``: with the centre ``c = (n // 2, m // 2)`` and
    ``z₀ = Z[c]``,

    - ``loss_center`` ``z₀``; ``loss_min``, ``loss_max`` over the grid;
    - ``r0_sharpness`` ``max Z − z₀`` and ``relative_r0_sharpness`` ``(max Z − z₀) / (|z₀| + 1e−12)``;
    - ``basin_fraction_tau_τ`` the fraction of grid points with ``Z ≤ z₀ + τ``, for τ in 0.01, 0.05, 0.1;
    - ``center_fd_trace_2d`` the central second differences along both axes,
      ``(Z[i+1,j] − 2z₀ + Z[i−1,j]) / Δα² + (Z[i,j+1] − 2z₀ + Z[i,j−1]) / Δβ²``
      (``None`` on grids smaller than 3 × 3); along unit Hessian eigenvectors it estimates
      ``λ₁ + λ₂``;
    - ``lambda1``, ``lambda2`` the two largest ``eigenvalues`` when given, else ``None``.
    """
    z = torch.as_tensor(losses, dtype=torch.float64)
    if z.dim() != 2 or z.shape != (len(alphas), len(betas)):
        raise ValueError(f"the losses must be a [{len(alphas)}, {len(betas)}] grid, got shape {tuple(z.shape)}")
    ci, cj = z.shape[0] // 2, z.shape[1] // 2
    z0, top = float(z[ci, cj]), float(z.max())
    metrics = {
        "loss_center": z0,
        "loss_min": float(z.min()),
        "loss_max": top,
        "r0_sharpness": top - z0,
        "relative_r0_sharpness": (top - z0) / (abs(z0) + 1e-12),
    }
    for tau in BASIN_TAUS:
        metrics[f"basin_fraction_tau_{tau}"] = float((z <= z0 + tau).to(torch.float64).mean())
    metrics["center_fd_trace_2d"] = None
    if z.shape[0] >= 3 and z.shape[1] >= 3:
        da, db = float(alphas[1] - alphas[0]), float(betas[1] - betas[0])
        second_a = (float(z[ci + 1, cj]) - 2 * z0 + float(z[ci - 1, cj])) / (da * da)
        second_b = (float(z[ci, cj + 1]) - 2 * z0 + float(z[ci, cj - 1])) / (db * db)
        metrics["center_fd_trace_2d"] = second_a + second_b
    values = [] if eigenvalues is None else sorted(torch.as_tensor(eigenvalues, dtype=torch.float64).reshape(-1).tolist())
    metrics["lambda1"] = values[-1] if len(values) >= 1 else None
    metrics["lambda2"] = values[-2] if len(values) >= 2 else None
    return metrics


def _curve(values: Tensor) -> dict:
    return {
        "count": values.numel(),
        "mean": float(values.mean()),
        "std": float(values.std(unbiased=False)),
        "min": float(values.min()),
        "max": float(values.max()),
        "fraction_negative": float((values < 0).to(torch.float64).mean()),
    }


def conflict_metrics(before: Sequence[float] | Tensor, after: Sequence[float] | Tensor | None = None) -> dict:
    """Count, mean, standard deviation, min, max and the fraction of negative values
    (conflicting steps) of the cosine curve ``before``; the same with an ``after_`` prefix
    for the ``after`` curve, ``None`` when there is none."""
    before = torch.as_tensor(before, dtype=torch.float64).reshape(-1)
    if before.numel() == 0:
        raise ValueError("no similarity values to summarise (was the optimizer stepped with several objectives?)")
    metrics = _curve(before)
    after_values = None if after is None else torch.as_tensor(after, dtype=torch.float64).reshape(-1)
    summary = _curve(after_values) if after_values is not None and after_values.numel() else {key: None for key in _curve(before)}
    metrics.update({f"after_{key}": value for key, value in summary.items()})
    return metrics
