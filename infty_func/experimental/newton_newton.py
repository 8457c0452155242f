"""Newton-preconditioned Newton: precondition by the Jacobian of the Newton step itself,
with exact dense derivatives (after ``torchzero``'s experimental ``NewtonNewton``).
For small problems: it forms ``n × n`` matrices and derivatives up to order ``order``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import grad, jacrev

from infty_func.core.base import GradientTransformation
from infty_func.core.control import cond
from infty_func.core.objective import require_functional_loss_fn, require_loss_fn, require_params, total_loss
from infty_func.core.tree import tree_leaves, tree_ravel

__all__ = ["newton_newton", "NewtonNewtonState", "newton_newton_preconditioner", "dense_solve"]

_NAME = "newton_newton"


class NewtonNewtonState(NamedTuple):
    count: Tensor  # int64: updates so far
    preconditioner: Tensor  # n × n: P = H₁ H₂ ⋯ H_{order−1}, rebuilt every update_freq updates


def dense_solve(matrix: Tensor, rhs: Tensor, symmetric: bool) -> Tensor:
    """``matrix⁻¹ rhs`` for one vector, without a Python branch on tensor values under vmap:
    Cholesky when ``symmetric`` and it succeeds, else LU, else least squares (as
    ``torchzero``'s Newton modules try them). Cholesky reads only the lower triangle, so it
    is tried only for matrices known to be symmetric. Differentiable in reverse mode."""

    def least_squares():
        return torch.linalg.lstsq(matrix, rhs.unsqueeze(-1)).solution.squeeze(-1)

    def lu():
        solution, info = torch.linalg.solve_ex(matrix, rhs)
        return cond(info == 0, lambda: solution, least_squares)

    if not symmetric:
        return lu()
    factor, info = torch.linalg.cholesky_ex(matrix)
    return cond(info == 0, lambda: torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1), lu)


def newton_newton_preconditioner(flat_loss: Callable[[Tensor], Tensor], x: Tensor, order: int, reg: float) -> Tensor:
    """``P = H₁ H₂ ⋯ H_{order−1}`` at ``x``: ``x₀ = ∇f``, ``H_k = ∂x_{k−1}/∂x + reg·I``
    and ``x_k = H_k⁻¹ x_{k−1}``, so ``H₁`` is the damped Hessian and ``H₂`` the Jacobian of
    the Newton step. Nested ``jacrev`` (reverse mode, as torchzero: here 1.5× faster than
    ``jacfwd`` on a 67-parameter MLP, and the forward-mode derivative of
    ``torch.linalg.solve`` comes out wrong under a ``vmap`` of ``jacfwd`` in torch 2.13);
    the lower levels ride along as auxiliary outputs."""
    eye = torch.eye(x.numel(), dtype=x.dtype, device=x.device)

    def gradient(v):
        g = grad(flat_loss)(v)
        return g, (g, ())

    def next_level(level, symmetric, v):
        jacobian, (previous, matrices) = jacrev(level, has_aux=True)(v)
        matrix = jacobian + reg * eye
        step = dense_solve(matrix, previous, symmetric)
        return step, (step, (*matrices, matrix))

    level = gradient
    for k in range(1, order - 1):
        level = functools.partial(next_level, level, k == 1)
    jacobian, (_, matrices) = jacrev(level, has_aux=True)(x)
    product = None
    for matrix in (*matrices, jacobian + reg * eye):
        product = matrix if product is None else product @ matrix
    return product.detach()


def newton_newton(order: int = 3, reg: float = 1e-6, update_freq: int = 1) -> GradientTransformation:
    """Newton–Newton: the update ``x`` solves ``P x = u`` (``u`` the incoming update, the
    gradient) with ``P = H₁ H₂ ⋯ H_{order−1}`` built by repeating "take the Jacobian of
    the last vector, damp it, solve":

    * ``x₀ = ∇f``, ``H₁ = ∇²f + reg·I``, ``x₁ = H₁⁻¹ x₀`` (the Newton step);
    * ``H_k = ∂x_{k−1}/∂θ + reg·I``, ``x_k = H_k⁻¹ x_{k−1}`` for ``k < order``.

    ``order=2`` is damped Newton. For ``order=3``, ``P = H₁H₂ = ∇²f − ∇³f[x₁] + reg·H₁``,
    a Halley-like Newton step that accounts for the change of the Hessian along the Newton
    step (``P`` is symmetric). Chain a step size after it. No paper: the method is
    ``torchzero``'s author's idea.

    Args:
        order: how many derivatives deep to go (``≥ 2``; derivatives of ``f`` up to order
            ``order`` are formed).
        reg: damping added to the diagonal of every ``H_k``.
        update_freq: rebuild ``P`` every this many updates and reuse it in between.

    For small problems only: ``P`` is a dense ``n × n`` matrix kept in the state, and its
    Jacobians are formed by nested ``jacrev`` (``n^{order−1}`` vector products through
    ``order`` levels of reverse mode). Every solve, the differentiated ones included, tries
    Cholesky (only for the symmetric damped Hessian and for ``P`` when ``order ≤ 3``, where
    it is symmetric), then LU, then least squares, without a Python branch under vmap.

    Difference from ``torchzero.modules.experimental.NewtonNewton``: torchzero tries a
    Cholesky solve first for every matrix, and Cholesky reads only the lower triangle, so
    for ``order ≥ 4`` its solves with the nonsymmetric Jacobian ``H₂`` (and its final solve)
    use the wrong matrix whenever that triangle happens to form a positive definite one.
    Here Cholesky is tried only for matrices that are symmetric. ``vectorize`` and
    ``inner`` are not taken (``jacrev`` is always vectorised; inner modules are the chain
    members before this one).
    """
    if not isinstance(order, int) or order < 2:
        raise ValueError(f"{_NAME}: order must be an int >= 2, got {order!r}")
    if not isinstance(update_freq, int) or update_freq < 1:
        raise ValueError(f"{_NAME}: update_freq must be a positive int, got {update_freq!r}")
    if not reg >= 0:
        raise ValueError(f"{_NAME}: reg must be >= 0, got {reg!r}")

    def init_fn(params):
        leaves = tree_leaves(params)
        size = sum(leaf.numel() for leaf in leaves)
        eye = torch.eye(size, dtype=leaves[0].dtype, device=leaves[0].device)
        return NewtonNewtonState(torch.zeros((), dtype=torch.int64), eye)

    def update_fn(updates, state, params=None, loss_fn=None, **extra):
        del extra
        loss = total_loss(require_loss_fn(loss_fn, _NAME))
        params = require_params(params, _NAME)
        require_functional_loss_fn(loss_fn, _NAME, "third and higher derivatives")
        x, unflatten = tree_ravel(params)

        def rebuild():
            return newton_newton_preconditioner(lambda flat: loss(unflatten(flat)), x, order, reg)

        if update_freq == 1:
            preconditioner = rebuild()
        else:
            preconditioner = cond(state.count % update_freq == 0, rebuild, lambda: state.preconditioner)
        solution = dense_solve(preconditioner, tree_ravel(updates)[0], symmetric=order <= 3)
        return unflatten(solution), NewtonNewtonState(state.count + 1, preconditioner)

    return GradientTransformation(init_fn, update_fn)
