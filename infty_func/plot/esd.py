"""``visualize_esd``: the Hessian's empirical spectral density on a log scale, with its
trace and the ESD metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infty_func.core.tree import PyTree
from infty_func.curvature.metrics import esd_metrics
from infty_func.curvature.spectrum import SpectralDensity, density_on_grid, hutchinson_trace, spectral_density
from infty_func.plot.objective import model_kept, resolve_target
from infty_func.plot.output import cached, check_dpi, new_figure, output_folder, save_figure, write_json

__all__ = ["visualize_esd", "esd_curve"]


def esd_curve(
    density: SpectralDensity, points: int = 10_000, variance: float = 1e-5, margin: float = 0.01
) -> tuple[Tensor, Tensor]:
    """The curve the ESD figure draws, with PyHessian's (and ``infty.plot``'s) settings:
    ``points`` grid points from the runs' mean smallest node − ``margin`` to their mean
    largest node + ``margin``; each node broadened by a Gaussian of variance
    ``variance · max(1, grid span)``; runs averaged; normalised so that
    ``Σ density · Δx = 1``. Vectorised (:func:`infty_func.curvature.density_on_grid`).
    Returns ``(grid, density)`` in float64."""
    nodes = density.nodes.to(torch.float64)
    low = float(nodes.min(dim=-1).values.mean()) - margin
    high = float(nodes.max(dim=-1).values.mean()) + margin
    grid = torch.linspace(low, high, points, dtype=torch.float64)
    sigma = math.sqrt(variance * max(1.0, high - low))
    grid, values = density_on_grid(SpectralDensity(nodes, density.weights), grid=grid, sigma=sigma)
    return grid, values / (values.sum() * (grid[1] - grid[0]))


def visualize_esd(
    target: Any,
    params: PyTree | None = None,
    *,
    task: int = 0,
    out: str | Path = "workdirs/plots/esd",
    name: str = "custom",
    overwrite: bool = False,
    density_iter: int = 100,
    density_runs: int = 1,
    trace_probes: int = 100,
    seed: int = 0,
    dpi: int = 100,
) -> dict:
    """Estimate the Hessian's trace and spectral density at ``params`` and draw the
    density on a log scale; return the paths written.

    ``target`` is a ``loss_fn(params)`` (or a curvature objective) with ``params``, or
    ``(model, loader, criterion)`` (the model is left exactly as found). The trace is
    Hutchinson's estimate from ``trace_probes`` Rademacher probes; the density is
    stochastic Lanczos quadrature with ``density_runs`` runs of ``density_iter`` steps
    (Ghorbani et al. 2019, "An Investigation into Neural Net Optimization via Hessian
    Eigenvalue Density"; Yao et al. 2020, PyHessian), drawn as :func:`esd_curve` with
    ``semilogy(density + 1e−7)``.

    Writes to ``out/name/``: ``trace_task{task}.pt`` (``mean_trace``, ``standard_error``),
    ``esd_task{task}.pt`` (``density_eigen``, ``density_weight``: ``[runs, iter]`` nodes
    and weights), ``fig_task{task}.pdf`` and ``.png`` (8 × 6 inches at ``dpi``) and
    ``esd_metrics_task{task}.json`` (:func:`infty_func.curvature.esd_metrics` with
    ``optimizer_name`` and ``task``). With ``overwrite=False`` existing ``.pt`` files are
    reused, as in ``infty.plot``.
    """
    for label, value in (("density_iter", density_iter), ("density_runs", density_runs), ("trace_probes", trace_probes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"visualize_esd: {label} must be a positive integer, got {value!r}")
    check_dpi(dpi)
    folder = output_folder(out, name)
    resolved = resolve_target(target, params, "visualize_esd")
    trace_path, esd_path = folder / f"trace_task{task}.pt", folder / f"esd_task{task}.pt"

    def trace() -> dict:
        estimate = hutchinson_trace(resolved.objective, resolved.params, n_probes=trace_probes, seed=seed)
        return {"mean_trace": float(estimate.trace), "standard_error": float(estimate.standard_error)}

    def spectrum() -> dict:
        found = spectral_density(resolved.objective, resolved.params, n_iter=density_iter, n_runs=density_runs, seed=seed)
        return {"density_eigen": found.nodes, "density_weight": found.weights}

    with model_kept(resolved.model):
        traced, _ = cached(trace_path, overwrite, trace)
        saved, _ = cached(esd_path, overwrite, spectrum)
    density = SpectralDensity(torch.as_tensor(saved["density_eigen"]), torch.as_tensor(saved["density_weight"]))
    metrics = esd_metrics(density, traced.get("mean_trace"))
    metrics.update({"optimizer_name": name, "task": int(task)})
    pdf, png = save_figure(_draw(density, name, task), folder, f"fig_task{task}", dpi)
    return {
        "trace_path": str(trace_path),
        "esd_path": str(esd_path),
        "plot_path": pdf,
        "plot_png_path": png,
        "metrics_path": write_json(folder / f"esd_metrics_task{task}.json", metrics),
    }


def _draw(density: SpectralDensity, name: str, task: int):
    grid, values = esd_curve(density)
    figure = new_figure(8, 6)
    axes = figure.add_subplot(1, 1, 1)
    axes.semilogy(grid.numpy(), (values + 1e-7).numpy())
    axes.set_xlim(float(grid[0]), float(grid[-1]))
    axes.set_xlabel("Eigenvalue")
    axes.set_ylabel("Density (log scale)")
    axes.set_title(f"{name}, task {task}: Hessian spectral density")
    figure.tight_layout()
    return figure
