"""Experimental modules after ``torchzero.modules.experimental``, as pure transforms:
element-wise rules, projections that run an inner transform in another space, and
second-order methods built on Hessian-vector products and ``loss_fn``.

Reached as ``ifn.experimental.<name>`` (not re-exported at the top level).
"""

from infty_func.experimental.block_partition import block_partition
from infty_func.experimental.coordinate_momentum import CoordinateMomentumState, coordinate_momentum
from infty_func.experimental.cubic_adam import CubicAdamState, cubic_adam, cubic_step
from infty_func.experimental.curveball import CurveBallState, curveball
from infty_func.experimental.fft_projection import fft_projection
from infty_func.experimental.grad_min import grad_min, grad_min_objective
from infty_func.experimental.hessian_model import (
    BFGSHessianState,
    HessianModel,
    NewtonHessianState,
    bfgs_hessian,
    hessian_model,
    newton_hessian,
)
from infty_func.experimental.higher_order_newton import HigherOrderNewtonState, higher_order_newton, taylor_coefficients
from infty_func.experimental.infinity_norm_trust_region import InfinityNormTrustRegionState, infinity_norm_trust_region
from infty_func.experimental.newton_newton import NewtonNewtonState, dense_solve, newton_newton, newton_newton_preconditioner
from infty_func.experimental.newton_solver import NewtonSolverState, conjugate_gradient, newton_solver
from infty_func.experimental.projection import ProjectedObjective, ProjectionState, projected
from infty_func.experimental.reduce_outward_lr import reduce_outward_lr
from infty_func.experimental.scipy_newton_cg import KRYLOV_METHODS, ScipyNewtonCGState, scipy_newton_cg
from infty_func.experimental.subspace_cubic_adam import SubspaceCubicAdamState, subspace_cubic_adam
from infty_func.experimental.tensorize_projection import tensorize_projection, tensorized_shape

__all__ = [
    # element-wise
    "coordinate_momentum",
    "CoordinateMomentumState",
    "cubic_adam",
    "CubicAdamState",
    "cubic_step",
    "reduce_outward_lr",
    "subspace_cubic_adam",
    "SubspaceCubicAdamState",
    # projections
    "projected",
    "ProjectionState",
    "ProjectedObjective",
    "fft_projection",
    "tensorize_projection",
    "tensorized_shape",
    "block_partition",
    # second order
    "curveball",
    "CurveBallState",
    "newton_solver",
    "NewtonSolverState",
    "conjugate_gradient",
    "scipy_newton_cg",
    "ScipyNewtonCGState",
    "KRYLOV_METHODS",
    "newton_newton",
    "NewtonNewtonState",
    "newton_newton_preconditioner",
    "dense_solve",
    "higher_order_newton",
    "HigherOrderNewtonState",
    "taylor_coefficients",
    "infinity_norm_trust_region",
    "InfinityNormTrustRegionState",
    "HessianModel",
    "hessian_model",
    "newton_hessian",
    "bfgs_hessian",
    "NewtonHessianState",
    "BFGSHessianState",
    "grad_min",
    "grad_min_objective",
]
