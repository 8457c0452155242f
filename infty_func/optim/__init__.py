"""``torch.optim`` adapters: any transform as an optimizer, and INFTY's classes."""

from infty_func.optim.closure_objective import ClosureObjective
from infty_func.optim.infty_geometry import GAM, GSAM, SAM, C_Flat, InftyGeometryOptimizer, LookSAM
from infty_func.optim.infty_multiobjective import OGD, CAGrad, GradVac, InftyMultiObjectiveOptimizer, PCGrad, UniGrad_FS
from infty_func.optim.transform_optimizer import TransformOptimizer
from infty_func.optim.zeroflow import INFTYOPTS, ZeroFlow

__all__ = [
    "TransformOptimizer",
    "ClosureObjective",
    "InftyGeometryOptimizer",
    "SAM",
    "GSAM",
    "GAM",
    "LookSAM",
    "C_Flat",
    "ZeroFlow",
    "INFTYOPTS",
    "InftyMultiObjectiveOptimizer",
    "PCGrad",
    "CAGrad",
    "GradVac",
    "OGD",
    "UniGrad_FS",
]
