"""Diagnostic plots, as ``infty.plot`` draws them: loss landscapes, Hessian spectral
densities, gradient-conflict curves and optimizer trajectories on a toy problem.

Each ``visualize_*`` function writes a PDF and a PNG (matplotlib figures on an Agg canvas,
pyplot untouched), a JSON of metrics and the arrays behind the picture, and returns a
dict of the paths written. ``python -m infty_func plot ...`` draws them for the demo.
"""

from infty_func.plot.conflicts import similarity_curves, visualize_conflicts
from infty_func.plot.directions import PlaneDirections, filter_normalized_directions, hessian_directions
from infty_func.plot.esd import esd_curve, visualize_esd
from infty_func.plot.landscape import visualize_landscape, visualize_loss_landscape
from infty_func.plot.metrics import conflict_metrics, landscape_metrics
from infty_func.plot.objective import model_objective
from infty_func.plot.surface import loss_surface
from infty_func.plot.toy import pareto_set, two_objective_toy
from infty_func.plot.trajectory import TRAJECTORY_METHODS, run_trajectory, visualize_trajectory

__all__ = [
    "visualize_landscape",
    "visualize_loss_landscape",
    "visualize_esd",
    "visualize_conflicts",
    "visualize_trajectory",
    "loss_surface",
    "landscape_metrics",
    "conflict_metrics",
    "esd_curve",
    "similarity_curves",
    "hessian_directions",
    "filter_normalized_directions",
    "PlaneDirections",
    "model_objective",
    "two_objective_toy",
    "pareto_set",
    "run_trajectory",
    "TRAJECTORY_METHODS",
]
