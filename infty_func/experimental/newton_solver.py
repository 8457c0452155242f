"""Matrix-free Newton: solve ``H x = g`` with Hessian-vector products and a pluggable
linear solver, conjugate gradient by default (after ``torchzero``'s experimental
``NewtonSolver``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.control import is_batched
from infty_func.core.objective import hvp_operator, require_functional_loss_fn, require_loss_fn, require_params
from infty_func.core.tree import (
    PyTree,
    tree_add,
    tree_add_scaled,
    tree_leaves,
    tree_size,
    tree_sub,
    tree_vdot,
    tree_where,
    tree_zeros_like,
)

__all__ = ["newton_solver", "NewtonSolverState", "conjugate_gradient"]

_NAME = "newton_solver"

Operator = Callable[[PyTree], PyTree]
LinearSolver = Callable[[Operator, PyTree], PyTree]


class NewtonSolverState(NamedTuple):
    count: Tensor  # int64: updates so far
    solution: PyTree  # the last step's solution x, the next solve's starting point (warm start)


def conjugate_gradient(operator: Operator, rhs: PyTree, maxiter: int | None = None, tol: float | None = 1e-3) -> PyTree:
    """Solve ``A x = b`` for a symmetric ``A`` given as ``operator(v) = A v`` on pytrees,
    from ``x₀ = 0``, in tensor ops only (so it runs under ``torch.func.vmap``).

    Stops when ``‖r‖² ≤ tol·‖b‖²`` (``tol=None``: only at ``maxiter``, default the number
    of unknowns) or when the mean squared residual falls to machine epsilon. Negative
    curvature (``dᵀAd < 0``) does not stop it: like ``torchzero``'s ``cg`` (with
    ``npc_terminate=False``) it goes on towards ``A⁻¹b`` even for an indefinite ``A``,
    except that nonpositive curvature on the very first direction returns the scaled
    right-hand side ``b·bᵀb/|bᵀAb|`` (just ``b`` when ``bᵀAb = 0``). A zero curvature
    later on (a breakdown) stops it with the current iterate.

    Without vmap it leaves the loop as soon as it has converged; under vmap every member
    runs all iterations and the converged ones are frozen by a mask, so both give the same
    numbers.
    """
    return _conjugate_gradient(operator, rhs, maxiter, tol, None)


def _conjugate_gradient(operator: Operator, rhs: PyTree, maxiter: int | None, tol: float | None, limit: Tensor | None):
    """:func:`conjugate_gradient` with an optional (possibly batched) iteration ``limit``
    below ``maxiter``."""
    first = tree_leaves(rhs)[0]
    finfo = torch.finfo(first.dtype)
    size = tree_size(rhs)
    iterations = size if maxiter is None else maxiter
    x = tree_zeros_like(rhs)
    residual, direction = rhs, rhs
    rr = tree_vdot(rhs, rhs)
    rhs_rr = rr
    # torchzero's NewtonSolver skips the solve once the mean squared residual is ≤ eps.
    threshold = torch.full_like(rr, finfo.eps * size)
    if tol is not None:
        threshold = torch.maximum(threshold, tol * rr)
    active = rr > threshold
    for index in range(iterations):
        if limit is not None:
            active = active & (index < limit)
        if not is_batched(active) and not bool(active):
            break
        product = operator(direction)
        curvature = tree_vdot(direction, product)
        usable = curvature.abs() > 2 * finfo.tiny
        if index == 0:
            # Nonpositive curvature along b itself: a gradient step scaled by 1/|curvature|.
            fallback = active & (curvature <= 2 * finfo.tiny)
            scale = torch.where(usable, rhs_rr / torch.where(usable, curvature.abs(), 1.0), 1.0)
            fallback_x = tree_add_scaled(x, scale, rhs)
            active = active & ~fallback
        stepping = active & usable
        alpha = torch.where(stepping, rr / torch.where(usable, curvature, 1.0), 0.0)
        x = tree_add_scaled(x, alpha, direction)
        residual = tree_add_scaled(residual, -alpha, product)
        new_rr = tree_vdot(residual, residual)
        beta = new_rr / torch.where(rr > 0, rr, 1.0)
        direction = tree_where(stepping, tree_add_scaled(residual, beta, direction), direction)
        rr = torch.where(stepping, new_rr, rr)
        active = stepping & (rr > threshold)
        if index == 0:
            x = tree_where(fallback, fallback_x, x)
    return x


def newton_solver(
    solver: LinearSolver | None = None,
    maxiter: int | None = None,
    maxiter1: int | None = None,
    tol: float | None = 1e-3,
    reg: float = 0.0,
    warm_start: bool = True,
) -> GradientTransformation:
    """Matrix-free Newton: the update ``x`` solves ``(H + reg·I) x = u`` with ``H`` the
    Hessian of ``loss_fn`` at ``params`` and ``u`` the incoming update (the gradient, or
    what earlier members of a chain made of it). Chain a step size after it:
    ``ifn.chain(newton_solver(), ifn.scale_by_learning_rate(1.0))`` is Newton's method.

    The products ``H v`` come from one linearisation of the gradient kept for the whole
    solve (:func:`~infty_func.core.objective.hvp_operator`): each costs one backward pass.

    Args:
        solver: ``solver(operator, rhs) -> solution`` on pytrees, started from zero. The
            default, ``None``, is :func:`conjugate_gradient` (tensor ops, vmappable) with
            ``maxiter``, ``maxiter1`` and ``tol``, which configure only that default.
        maxiter: conjugate-gradient iterations per step; ``None``: the number of
            parameters, as ``torchzero``.
        maxiter1: the iteration limit of the first step instead (``None``: ``maxiter``).
        tol: stop when the squared residual norm falls below ``tol`` times its initial
            value (``torchzero``'s test on its mean squared residual, the same ratio);
            ``None``: always run ``maxiter`` iterations.
        reg: Tikhonov damping added to every product.
        warm_start: start each solve from the previous step's solution (the correction
            ``x − x_prev`` is what ``solver`` solves for, so any solver is warm-started).

    Differences from ``torchzero.modules.experimental.NewtonSolver``:

    * torchzero solves the least-squares problem ``min ‖Hx − u‖²`` with a whole
      ``torchzero`` optimizer (L-BFGS by default, whose state it keeps across steps); this
      solves ``Hx = u`` directly with conjugate gradient, the usual matrix-free Newton
      solver. Run to convergence both give ``H⁻¹u`` (the reference test does that); at the
      default ``tol`` the two inexact solutions differ.
    * torchzero accepts ``reg`` but never applies it; here it damps the products.
    * ``hvp_method`` and ``h`` (finite-difference products), ``reset_solver`` and
      ``inner`` are not taken: products are exact, conjugate gradient has no state to
      reset, and inner modules are the chain members before this one.
    """
    if maxiter is not None and (not isinstance(maxiter, int) or maxiter < 0):
        raise ValueError(f"{_NAME}: maxiter must be None or a non-negative int, got {maxiter!r}")
    if maxiter1 is not None and (not isinstance(maxiter1, int) or maxiter1 < 0):
        raise ValueError(f"{_NAME}: maxiter1 must be None or a non-negative int, got {maxiter1!r}")
    if tol is not None and not tol >= 0:
        raise ValueError(f"{_NAME}: tol must be None or >= 0, got {tol!r}")
    if not reg >= 0:
        raise ValueError(f"{_NAME}: reg must be >= 0, got {reg!r}")
    if solver is not None and not callable(solver):
        raise ValueError(f"{_NAME}: solver must be a callable (operator, rhs) -> solution, got {type(solver).__name__}")

    def init_fn(params):
        return NewtonSolverState(torch.zeros((), dtype=torch.int64), tree_zeros_like(params))

    def default_solver(operator, rhs, count):
        size = tree_size(rhs)
        steady = size if maxiter is None else maxiter
        if maxiter1 is None:
            return _conjugate_gradient(operator, rhs, steady, tol, None)
        limit = torch.where(count == 0, maxiter1, steady)
        return _conjugate_gradient(operator, rhs, max(steady, maxiter1), tol, limit)

    def update_fn(updates, state, params=None, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, _NAME)
        params = require_params(params, _NAME)
        require_functional_loss_fn(loss_fn, _NAME, "Hessian-vector products")
        hessian = hvp_operator(loss_fn, params)

        def operator(vector):
            product = hessian(vector)
            return tree_add_scaled(product, reg, vector) if reg else product

        if warm_start:
            rhs = tree_sub(updates, operator(state.solution))
        else:
            rhs = updates
        if solver is None:
            correction = default_solver(operator, rhs, state.count)
        else:
            correction = solver(operator, rhs)
        solution = tree_add(state.solution, correction) if warm_start else correction
        return solution, NewtonSolverState(state.count + 1, solution)

    return GradientTransformation(init_fn, update_fn)
