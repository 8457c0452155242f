"""Curvature: Hessian-vector products, top eigenvalues, trace and spectral density."""

from infty_func.curvature.lanczos import lanczos
from infty_func.curvature.metrics import esd_metrics
from infty_func.curvature.objective import DatasetObjective, Objective, as_objective, hvp, hvp_batched
from infty_func.curvature.spectrum import (
    SpectralDensity,
    TopEigen,
    TraceEstimate,
    density_on_grid,
    hutchinson_trace,
    spectral_density,
    top_eigenvalues,
)

__all__ = [
    "hvp",
    "hvp_batched",
    "Objective",
    "DatasetObjective",
    "as_objective",
    "lanczos",
    "top_eigenvalues",
    "TopEigen",
    "hutchinson_trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
    "density_on_grid",
    "esd_metrics",
]
