"""Newton steps solved by a SciPy Krylov solver on Hessian-vector products (after
``torchzero``'s experimental ``ScipyNewtonCG``). Runs on the host: not vmappable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.control import refuse_vmap
from infty_func.core.objective import hvp_operator, require_functional_loss_fn, require_loss_fn, require_params
from infty_func.core.tree import PyTree, is_functorch_wrapped, tree_leaves, tree_ravel, tree_zeros_like

__all__ = ["scipy_newton_cg", "ScipyNewtonCGState", "KRYLOV_METHODS"]

_NAME = "scipy_newton_cg"

#: The Krylov solvers of ``scipy.sparse.linalg`` that ``method`` may name.
KRYLOV_METHODS = ("bicg", "bicgstab", "cg", "cgs", "gcrotmk", "gmres", "lgmres", "minres", "qmr", "tfqmr")


class ScipyNewtonCGState(NamedTuple):
    solution: PyTree  # the last solution, the next solve's starting point when warm-starting


def _krylov_solver(method: str | Callable) -> Callable:
    if callable(method):
        return method
    if method not in KRYLOV_METHODS:
        raise ValueError(f"{_NAME}: method must be one of {KRYLOV_METHODS} or a callable, got {method!r}")
    import scipy.sparse.linalg

    return getattr(scipy.sparse.linalg, method)


def _refuse_transforms(trees: tuple[PyTree, ...]) -> None:
    refuse_vmap(_NAME, "hands its linear system to SciPy on the host (newton_solver runs CG in tensor ops, and vmaps)", *trees)
    if any(is_functorch_wrapped(leaf) for tree in trees for leaf in tree_leaves(tree)[:1]):
        raise ValueError(f"{_NAME} hands its linear system to SciPy and cannot run inside torch.func transforms")


def scipy_newton_cg(
    method: str | Callable = "gcrotmk", warm_start: bool = False, options: dict[str, Any] | None = None
) -> GradientTransformation:
    """Newton step by a SciPy Krylov solver: the update ``x`` solves ``H x = u`` (``H`` the
    Hessian of ``loss_fn`` at ``params``, ``u`` the incoming update with NaN set to zero and ±inf to ±the largest float, as
    torchzero's ``nan_to_num``)
    through a ``scipy.sparse.linalg.LinearOperator`` whose products are Hessian-vector
    products from one kept linearisation of the gradient. Chain a step size after it.

    Args:
        method: a name in :data:`KRYLOV_METHODS` (``"gcrotmk"``, torchzero's default;
            ``"cg"`` for symmetric positive definite Hessians; ``"minres"`` for indefinite
            ones, ...) or any callable with SciPy's signature ``(A, b, x0=..., **options)``
            returning ``x`` or ``(x, info)``.
        warm_start: start each solve from the previous solution.
        options: keywords for the solver (``rtol``, ``maxiter``, ...); SciPy's defaults
            otherwise.

    NOT vmappable: the solve runs in NumPy on the host, one Python call per product. Under
    ``torch.func.vmap`` (or any ``torch.func`` transform) ``update`` raises a ``ValueError``;
    :func:`~infty_func.experimental.newton_solver.newton_solver` is the vmappable twin.

    As ``torchzero.modules.experimental.ScipyNewtonCG`` with ``hvp_method="autograd"``
    (finite-difference products and ``inner`` are not taken; inner modules are the chain
    members before this one). The operator is built with its dtype, so SciPy does not spend
    a product finding it out. Where the solver breaks down and returns non-finite numbers
    (``cg`` divides by ``dᵀHd = 0`` for a zero Hessian), the update is ``u`` itself, a
    gradient step, instead of torchzero's NaNs.
    """
    solve = _krylov_solver(method)
    options = dict(options or {})
    if "x0" in options:
        raise ValueError(f"{_NAME}: options must not set x0; use warm_start")

    def init_fn(params):
        return ScipyNewtonCGState(tree_zeros_like(params))

    def update_fn(updates, state, params=None, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, _NAME)
        params = require_params(params, _NAME)
        require_functional_loss_fn(loss_fn, _NAME, "Hessian-vector products")
        _refuse_transforms((params, updates))
        import scipy.sparse.linalg

        hessian = hvp_operator(loss_fn, params)
        flat_updates, unravel = tree_ravel(updates)

        def to_tree(array: np.ndarray) -> PyTree:
            return unravel(torch.as_tensor(np.asarray(array).reshape(-1), dtype=flat_updates.dtype, device=flat_updates.device))

        def to_array(tree: PyTree) -> np.ndarray:
            return tree_ravel(tree)[0].numpy(force=True)

        def matvec(array: np.ndarray) -> np.ndarray:
            return to_array(hessian(to_tree(array)))

        rhs = np.nan_to_num(to_array(updates))
        size = rhs.shape[0]
        operator = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec, rmatvec=matvec, dtype=rhs.dtype)
        start = to_array(state.solution) if warm_start else None
        with np.errstate(divide="ignore", invalid="ignore"):  # a breakdown is handled below
            result = solve(operator, rhs, x0=start, **options)
        result = np.asarray(result[0] if isinstance(result, tuple) else result)
        if not np.isfinite(result).all():  # a breakdown (a zero Hessian in cg, say): take u itself
            result = rhs
        solution = to_tree(result)
        return solution, ScipyNewtonCGState(solution if warm_start else state.solution)

    return GradientTransformation(init_fn, update_fn)
