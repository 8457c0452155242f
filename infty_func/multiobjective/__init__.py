"""Multi-objective gradient filtering: aggregators that turn a Jacobian pytree (one row per
objective) into one update, most of them a weighting of the m×m Gramian."""

from infty_func.multiobjective.aggregator import AggregatorState, weighted_aggregator
from infty_func.multiobjective.basic import mean, mgda
from infty_func.multiobjective.cagrad import cagrad
from infty_func.multiobjective.config import (
    LENGTH_MODELS,
    config,
    config_update,
    equal_weight,
    projection_length,
    track_arithmetic_average,
    track_geometric_average,
    track_harmonic_average,
    track_maximum,
    track_minimum,
    track_specific,
)
from infty_func.multiobjective.diagnostics import ConflictDiagnostics
from infty_func.multiobjective.gradvac import GradVacState, gradvac
from infty_func.multiobjective.momentum import ConFIGMomentumState, config_momentum
from infty_func.multiobjective.ogd import OGDState, ogd, ogd_add_directions
from infty_func.multiobjective.pcgrad import PCGradState, pcgrad
from infty_func.multiobjective.projection_methods import aligned_mtl, dualproj, imtlg, upgrad
from infty_func.multiobjective.unigrad_fs import unigrad_fs

__all__ = [
    "mean",
    "mgda",
    "pcgrad",
    "cagrad",
    "gradvac",
    "imtlg",
    "upgrad",
    "dualproj",
    "aligned_mtl",
    "config",
    "config_update",
    "config_momentum",
    "ConFIGMomentumState",
    "ogd",
    "ogd_add_directions",
    "unigrad_fs",
    "equal_weight",
    "projection_length",
    "track_minimum",
    "track_maximum",
    "track_harmonic_average",
    "track_arithmetic_average",
    "track_geometric_average",
    "track_specific",
    "LENGTH_MODELS",
    "AggregatorState",
    "ConflictDiagnostics",
    "GradVacState",
    "OGDState",
    "PCGradState",
    "weighted_aggregator",
]
