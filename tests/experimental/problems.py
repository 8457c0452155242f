"""Test problems for the second-order modules: the 2-D Rosenbrock function and a 20-D
convex quadratic, each with the number of steps plain ``sgd`` needs at its best rate."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

import infty_func as ifn

GRADIENT_TOLERANCE = 1e-6


def rosenbrock(params: dict) -> torch.Tensor:
    """``(1 − x)² + 100 (y − x²)²``, minimum 0 at ``(1, 1)``."""
    x, y = params["x"][0], params["x"][1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rosenbrock_start() -> dict:
    return {"x": torch.tensor([-1.2, 1.0], dtype=torch.float64)}


@functools.lru_cache(maxsize=1)
def _quadratic_data(dim: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, 2, dim, dtype=torch.float64)  # condition number 100
    matrix = basis @ torch.diag(eigenvalues) @ basis.T
    return (matrix + matrix.T) / 2, torch.randn(dim, generator=generator, dtype=torch.float64)


_quadratic_data()  # drawn once at import: drawing inside vmap or jacfwd is an error


def quadratic(params: dict) -> torch.Tensor:
    """``½ xᵀAx − bᵀx`` with ``A`` symmetric positive definite (eigenvalues 1 … 100)."""
    matrix, vector = _quadratic_data()
    x = params["x"]
    return 0.5 * x @ matrix @ x - vector @ x


def quadratic_start() -> dict:
    return {"x": torch.zeros(20, dtype=torch.float64)}


def quadratic_minimiser() -> torch.Tensor:
    matrix, vector = _quadratic_data()
    return torch.linalg.solve(matrix, vector)


def gradient_norm(loss_fn: Callable, params: dict) -> float:
    return float(ifn.tree_norm(torch.func.grad(loss_fn)(params)))


def steps_to_converge(tx, loss_fn: Callable, params: dict, max_steps: int, tol: float = GRADIENT_TOLERANCE) -> int | None:
    """Steps of ``ifn.step(tx, ...)`` until ``‖∇f‖ < tol``; ``None`` if not within ``max_steps``."""
    state = tx.init(params)
    for count in range(1, max_steps + 1):
        params, state, _ = ifn.step(tx, state, params, loss_fn)
        if gradient_norm(loss_fn, params) < tol:
            return count
    return None


def _rosenbrock_gradient(x: torch.Tensor) -> torch.Tensor:
    """∇ of :func:`rosenbrock` for rows of points ``x[:, 2]`` (closed form: the sgd grid
    search below runs thousands of steps)."""
    a, b = x[:, 0], x[:, 1]
    return torch.stack([-2 * (1 - a) - 400 * a * (b - a**2), 200 * (b - a**2)], dim=1)


def _quadratic_gradient(x: torch.Tensor) -> torch.Tensor:
    matrix, vector = _quadratic_data()
    return x @ matrix - vector


@functools.cache
def best_sgd_steps(problem: str, max_steps: int = 20_000) -> int:
    """The fewest steps to ``‖∇f‖ < tol`` that plain gradient descent reaches over a grid
    of learning rates (all rates at once, one row each); ``max_steps + 1`` if none does."""
    gradient, start = {
        "rosenbrock": (_rosenbrock_gradient, rosenbrock_start),
        "quadratic": (_quadratic_gradient, quadratic_start),
    }[problem]
    rates = torch.logspace(-4, -1.5, 24, dtype=torch.float64)
    x = start()["x"].expand(len(rates), -1).clone()
    first = torch.full((len(rates),), max_steps + 1)
    for count in range(1, max_steps + 1):
        x = x - rates[:, None] * gradient(x)
        norms = torch.linalg.vector_norm(gradient(x), dim=1)
        first = torch.where((norms < GRADIENT_TOLERANCE) & (first > max_steps), torch.tensor(count), first)
        if count % 500 == 0 and bool((first <= max_steps).any()):
            break
    return int(first.min())
