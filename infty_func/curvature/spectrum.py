"""Top eigenvalues, the trace and the spectral density of a Hessian, matrix-free."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.tree import PyTree, tree_flatten, tree_leaves, tree_size, tree_unflatten
from infty_func.curvature.lanczos import lanczos, tridiagonal
from infty_func.curvature.objective import as_objective

__all__ = [
    "top_eigenvalues",
    "TopEigen",
    "hutchinson_trace",
    "TraceEstimate",
    "spectral_density",
    "SpectralDensity",
    "density_on_grid",
]


class _Flat:
    """Pytrees of the params' structure as rows of one float64 matrix ``[R, d]`` and back,
    and the Hessian operator on such rows (one batched call per matrix)."""

    def __init__(self, params: PyTree, operator):
        leaves, self.spec = tree_flatten(params)
        self.shapes = [leaf.shape for leaf in leaves]
        self.dtypes = [leaf.dtype for leaf in leaves]
        self.sizes = [leaf.numel() for leaf in leaves]
        self.size = sum(self.sizes)
        self.device = leaves[0].device
        self.operator = operator
        self.products = 0

    def tree(self, rows: Tensor) -> PyTree:
        parts = torch.split(rows, self.sizes, dim=-1)
        return tree_unflatten(
            [part.reshape(rows.shape[0], *shape).to(dtype) for part, shape, dtype in zip(parts, self.shapes, self.dtypes)],
            self.spec,
        )

    def rows(self, tree: PyTree) -> Tensor:
        return torch.cat([leaf.reshape(leaf.shape[0], -1).to(torch.float64) for leaf in tree_leaves(tree)], dim=-1)

    def apply(self, rows: Tensor) -> Tensor:
        self.products += rows.shape[0]
        return self.rows(self.operator(self.tree(rows), batched=True))

    def rademacher(self, key: Tensor, count: int) -> Tensor:
        return random.rademacher(key, (count, self.size), torch.float64, self.device)

    def normal(self, key: Tensor, count: int) -> Tensor:
        return random.normal(key, (count, self.size), torch.float64, self.device)


class TopEigen(NamedTuple):
    eigenvalues: Tensor  # [k] float64, largest first
    eigenvectors: list  # k pytrees shaped like the params, unit norm
    products: int  # Hessian-vector products used


def top_eigenvalues(
    objective: Any,
    params: PyTree,
    k: int = 1,
    method: str = "lanczos",
    iters: int = 100,
    tol: float = 1e-6,
    seed: int = 0,
) -> TopEigen:
    """The ``k`` largest eigenvalues of the Hessian at ``params`` and their eigenvectors.

    ``method="lanczos"``: Lanczos with full reorthogonalisation from a seeded normal start,
    stopped when the top ``k`` Ritz values change by less than ``tol`` (relative) from one
    iteration to the next, or after ``iters``; eigenvectors are the Ritz vectors. Usually a
    few tens of products. ``method="power"``: power iteration with deflation against the
    eigenvectors already found (PyHessian's method; it finds the eigenvalues of largest
    *magnitude*, so a large negative one comes first), ``tol`` on the relative change.

    The Hessian products reuse one linearisation of the gradient (one backward each).
    """
    n = tree_size(params)
    if not isinstance(k, int) or k < 1 or k > n:
        raise ValueError(f"top_eigenvalues needs 1 <= k <= the number of parameters ({n}), got {k!r}")
    if method not in ("lanczos", "power"):
        raise ValueError(f"top_eigenvalues: method must be 'lanczos' or 'power', got {method!r}")
    objective = as_objective(objective)
    operator = objective.operator(params)
    key = random.key(seed)
    if method == "power":
        return _power(operator, params, k, iters, tol, key)

    flat = _Flat(params, operator)
    previous = {"values": None}

    def converged(alphas, betas):
        if alphas.shape[-1] < k + 1:
            return False
        values = torch.linalg.eigvalsh(tridiagonal(alphas, betas))[0].flip(0)[:k]
        old, previous["values"] = previous["values"], values
        return old is not None and bool(((values - old).abs() <= tol * values.abs().clamp_min(1e-12)).all())

    result = lanczos(flat.apply, flat.normal(key, 1), min(iters, n), converged)
    values, vectors = torch.linalg.eigh(tridiagonal(result.alphas, result.betas)[0])
    order = torch.argsort(values, descending=True)[:k]
    ritz = vectors[:, order].transpose(0, 1) @ result.basis[0]  # [k, d]
    eigenvectors = [_row(flat.tree(ritz[i : i + 1]), 0) for i in range(len(order))]
    return TopEigen(values[order], eigenvectors, flat.products)


def _row(batched: PyTree, index: int) -> PyTree:
    from infty_func.core.tree import tree_map

    return tree_map(lambda leaf: leaf[index], batched)


def _power(operator, params, k, iters, tol, key) -> TopEigen:
    flat = _Flat(params, operator)
    found_values, found_vectors = [], []
    for index in range(k):
        v = flat.normal(random.fold_in(key, index), 1)
        v = v / v.norm()
        value = None
        for _ in range(iters):
            for u in found_vectors:  # deflate: stay orthogonal to the eigenvectors found
                v = v - (v * u).sum() * u
            hv = flat.apply(v / v.norm().clamp_min(1e-30))
            new_value = (hv * v).sum() / (v * v).sum()
            v = hv / hv.norm().clamp_min(1e-30)
            if value is not None and abs(float(new_value - value)) / (abs(float(value)) + 1e-6) < tol:
                value = new_value
                break
            value = new_value
        found_values.append(value)
        found_vectors.append(v)
    return TopEigen(torch.stack(found_values), [_row(flat.tree(v), 0) for v in found_vectors], flat.products)


class TraceEstimate(NamedTuple):
    trace: Tensor  # float64
    standard_error: Tensor  # float64 (of the stochastic part)
    products: int


def hutchinson_trace(
    objective: Any, params: PyTree, n_probes: int = 100, seed: int = 0, batch: int = 16, method: str = "hutchinson"
) -> TraceEstimate:
    """``tr H`` by Hutchinson's estimator, ``mean_i zᵢᵀ H zᵢ`` over Rademacher probes, with
    its standard error; probes go through the Hessian ``batch`` at a time (one vmapped
    pullback of one linearisation).

    ``method="hutch++"`` (Meyer et al. 2021, "Hutch++: Optimal Stochastic Trace
    Estimation"): a third of the products sketch the top of the spectrum (``Q`` from
    ``H S``), whose trace is exact, and Hutchinson estimates the rest on the complement —
    the same accuracy from far fewer products when the spectrum decays.
    """
    if not isinstance(n_probes, int) or n_probes < 1:
        raise ValueError(f"hutchinson_trace needs n_probes >= 1, got {n_probes!r}")
    if method not in ("hutchinson", "hutch++"):
        raise ValueError(f"hutchinson_trace: method must be 'hutchinson' or 'hutch++', got {method!r}")
    flat = _Flat(params, as_objective(objective).operator(params))
    key = random.key(seed)
    if method == "hutch++":
        return _hutch_plus_plus(flat, n_probes, key)
    values = []
    for start in range(0, n_probes, batch):
        probes = flat.rademacher(random.fold_in(key, start), min(batch, n_probes - start))
        values.append((probes * flat.apply(probes)).sum(-1))
    samples = torch.cat(values)
    error = samples.std() / math.sqrt(n_probes) if n_probes > 1 else torch.zeros((), dtype=torch.float64)
    return TraceEstimate(samples.mean(), error, flat.products)


def _hutch_plus_plus(flat: _Flat, n_probes: int, key: Tensor) -> TraceEstimate:
    sketch = max(1, n_probes // 3)
    rest = max(1, n_probes - 2 * sketch)
    q, _ = torch.linalg.qr(flat.apply(flat.rademacher(random.fold_in(key, 0), sketch)).transpose(0, 1))  # [d, sketch]
    basis = q.transpose(0, 1)
    exact = (basis * flat.apply(basis)).sum()
    g = flat.rademacher(random.fold_in(key, 1), rest)
    g = g - (g @ q) @ basis  # project off the sketched space
    samples = (g * flat.apply(g)).sum(-1)
    error = samples.std() / math.sqrt(rest) if rest > 1 else torch.zeros((), dtype=torch.float64)
    return TraceEstimate(exact + samples.mean(), error, flat.products)


class SpectralDensity(NamedTuple):
    nodes: Tensor  # [runs, n_iter] Ritz values
    weights: Tensor  # [runs, n_iter] their weights (each run sums to 1)


def spectral_density(
    objective: Any, params: PyTree, n_iter: int = 50, n_runs: int = 4, seed: int = 0, start: PyTree | None = None
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ghorbani et al. 2019; Yao et al. 2020, PyHessian):
    for each of ``n_runs`` normalised Rademacher starts, ``n_iter`` Lanczos steps with full
    reorthogonalisation give a tridiagonal ``T``; its eigenvalues are the nodes and the
    squared first components of its eigenvectors the weights. All runs step together,
    their products batched. ``start`` (the params' structure with a leading axis of
    ``n_runs``) replaces the seeded Rademacher starts, e.g. to compare with another
    implementation from the same vectors."""
    n = tree_size(params)
    if not isinstance(n_iter, int) or n_iter < 1 or not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"spectral_density needs n_iter >= 1 and n_runs >= 1, got {n_iter!r}, {n_runs!r}")
    flat = _Flat(params, as_objective(objective).operator(params))
    rows = flat.rademacher(random.key(seed), n_runs) if start is None else flat.rows(start)
    result = lanczos(flat.apply, rows, min(n_iter, n))
    nodes, vectors = torch.linalg.eigh(tridiagonal(result.alphas, result.betas))
    return SpectralDensity(nodes, vectors[:, 0, :] ** 2)


def density_on_grid(density: SpectralDensity, grid: Tensor | None = None, sigma: float | None = None, points: int = 1000):
    """The Gaussian-broadened density ``mean_runs Σ_i w_i N(x; λ_i, σ²)`` on ``grid``
    (default: ``points`` points spanning the nodes with a margin), vectorised over grid
    points, nodes and runs. ``sigma`` defaults to 1% of the span. Returns ``(grid,
    density)``."""
    nodes, weights = density.nodes.to(torch.float64), density.weights.to(torch.float64)
    low, high = float(nodes.min()), float(nodes.max())
    span = max(high - low, 1e-12)
    sigma = sigma if sigma is not None else 0.01 * span
    if grid is None:
        grid = torch.linspace(low - 0.05 * span, high + 0.05 * span, points, dtype=torch.float64)
    grid = grid.to(torch.float64)
    z = (grid[:, None, None] - nodes[None]) / sigma  # [points, runs, n_iter]
    values = (weights[None] * torch.exp(-0.5 * z * z)).sum(-1).mean(-1) / (sigma * math.sqrt(2 * math.pi))
    return grid, values
