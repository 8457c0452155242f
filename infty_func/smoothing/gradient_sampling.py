"""Gradient sampling: gradients and values at random points around the parameters,
aggregated into the gradient of a smoothed (or robustified) objective."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

from infty_func.core import random
from infty_func.core.base import GradientTransformation
from infty_func.core.objective import evaluate, perturbed, require_loss_fn, require_params, value_and_derivative
from infty_func.core.tree import PyTree, tree_flatten, tree_map, tree_norm, tree_unflatten

__all__ = ["gradient_sampling", "GradientSamplingState", "sampling_perturbations"]

AGGREGATES = ("mean", "max", "min", "min-norm", "min-value")
DISTRIBUTIONS = ("gaussian", "normal", "uniform", "sphere", "rademacher")
SIGMA_STRATEGIES = (None, "grad-norm", "value")


class GradientSamplingState(NamedTuple):
    key: Tensor  # the key of the next draw (constant when the perturbations are fixed)
    sigma: Tensor  # the current perturbation scale, float64
    value: Tensor  # the aggregated loss of the last step (the smoothed objective)


def sampling_perturbations(k: Tensor, params: PyTree, count: int, distribution: str = "gaussian") -> PyTree:
    """``count`` unscaled perturbations shaped like ``params``, each leaf with a leading
    axis of ``count``: row ``i`` is one draw over all parameters, from one stream of ``k``.

    ``gaussian``/``normal``: standard normal entries; ``uniform``: uniform on ``(−1, 1)``;
    ``sphere``: a normal draw scaled to unit norm over all parameters; ``rademacher``: ±1.
    """
    leaves, spec = tree_flatten(params)
    sizes = [leaf.numel() for leaf in leaves]
    # one stream over all parameters, drawn in their common dtype, then cast per leaf
    dtype = functools.reduce(torch.promote_types, [leaf.dtype for leaf in leaves])
    shape, device = (count, sum(sizes)), leaves[0].device
    if distribution in ("gaussian", "normal", "sphere"):
        rows = random.normal(k, shape, dtype, device)
        if distribution == "sphere":
            rows = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    elif distribution == "uniform":
        rows = random.uniform(k, shape, dtype, low=-1.0, high=1.0, device=device)
    elif distribution == "rademacher":
        rows = random.rademacher(k, shape, dtype, device)
    else:
        raise ValueError(f"gradient_sampling: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    parts = torch.split(rows, sizes, dim=1)
    return tree_unflatten([part.reshape(count, *leaf.shape).to(leaf.dtype) for part, leaf in zip(parts, leaves)], spec)


def _check(sigma, n, aggregate, distribution, include_x0, sigma_strategy, sigma_target) -> None:
    if not (isinstance(n, int) and n >= 1):
        raise ValueError(f"gradient_sampling: n must be a positive int, got {n!r}")
    if include_x0 and n < 2:
        raise ValueError("gradient_sampling: with include_x0=True, n counts the unperturbed point too; n must be ≥ 2")
    if aggregate not in AGGREGATES:
        raise ValueError(f"gradient_sampling: aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"gradient_sampling: distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if sigma_strategy not in SIGMA_STRATEGIES:
        raise ValueError(f"gradient_sampling: sigma_strategy must be one of {SIGMA_STRATEGIES}, got {sigma_strategy!r}")
    if not sigma > 0:
        raise ValueError(f"gradient_sampling: sigma must be positive, got {sigma!r}")
    if isinstance(sigma_target, bool) or not isinstance(sigma_target, (int, float)) or sigma_target < 0:
        raise ValueError(
            f"gradient_sampling: sigma_target must be a non-negative int (a count) or float (a fraction), got {sigma_target!r}"
        )


def _stack_x0(first: Tensor | PyTree, rest: Tensor | PyTree) -> Tensor | PyTree:
    """Put the unperturbed point's value (or gradient) in row 0, before the samples."""
    return tree_map(lambda a, b: torch.cat([a.unsqueeze(0).to(b.dtype), b]), first, rest)


def _pick_rows(grads: PyTree, index: Tensor) -> PyTree:
    return tree_map(lambda g: g.index_select(0, index.reshape(1)).squeeze(0), grads)


def _row_norms(grads: PyTree) -> Tensor:
    """The global norm of each sample's gradient (rows along the leading axis)."""
    return sum(g.reshape(g.shape[0], -1).square().sum(dim=1) for g in tree_flatten(grads)[0]).sqrt()


def _aggregate(aggregate: str, values: Tensor, grads: PyTree, finite: Tensor) -> tuple[Tensor, PyTree]:
    """The aggregated value and gradient over the rows whose loss is finite."""
    count = finite.sum()
    if aggregate == "mean":
        total = torch.where(finite, values, 0).sum()
        mean = lambda g: torch.where(finite.reshape(-1, *[1] * (g.dim() - 1)), g, 0).sum(0) / count  # noqa: E731
        return total / count, tree_map(mean, grads)
    if aggregate in ("min", "max"):
        # Element-wise, the gradient entry of least (greatest) magnitude, with its own sign.
        fill = torch.inf if aggregate == "min" else -torch.inf
        choose = torch.argmin if aggregate == "min" else torch.argmax

        def entry(g):
            mask = finite.reshape(-1, *[1] * (g.dim() - 1))
            index = choose(torch.where(mask, g.abs(), fill), dim=0, keepdim=True)
            return g.gather(0, index).squeeze(0)

        value = torch.where(finite, values, fill)
        return (value.min() if aggregate == "min" else value.max()), tree_map(entry, grads)
    key = _row_norms(grads) if aggregate == "min-norm" else values
    index = torch.argmin(torch.where(finite, key, torch.inf))  # the first of ties, as torchzero
    return values.index_select(0, index.reshape(1)).squeeze(0), _pick_rows(grads, index)


def _sample_gradients(loss_fn: Callable, points: PyTree, chunk_size: int | None) -> tuple[Tensor, PyTree]:
    """Values and gradients at every row of ``points``: one vmapped batch for a pure
    ``loss_fn``; a loop for an objective built from a closure (it swaps the module's
    parameters in place, which vmap cannot batch)."""
    derivative = value_and_derivative(loss_fn)
    if not hasattr(loss_fn, "value_and_grad"):
        return vmap(derivative, chunk_size=chunk_size)(points)
    leaves, spec = tree_flatten(points)
    rows = [derivative(tree_unflatten([leaf[i] for leaf in leaves], spec)) for i in range(leaves[0].shape[0])]
    return torch.stack([v for v, _ in rows]), tree_map(lambda *g: torch.stack(g), *[g for _, g in rows])


def gradient_sampling(
    sigma: float = 1.0,
    n: int = 100,
    aggregate: str = "mean",
    distribution: str = "gaussian",
    include_x0: bool = True,
    fixed: bool = True,
    sigma_strategy: str | None = None,
    sigma_target: int | float = 0.2,
    sigma_nplus: float = 4 / 3,
    sigma_nminus: float = 2 / 3,
    seed: int = 0,
    chunk_size: int | None = None,
) -> GradientTransformation:
    """Gradient sampling: the gradient of an objective aggregated over random points
    ``x + σ·pᵢ`` around the parameters ``x`` (Burke, Lewis & Overton 2005, "A robust
    gradient sampling algorithm for nonsmooth, nonconvex optimization"; with ``"mean"`` it
    is the Gaussian-homotopy / randomized-smoothing gradient ``∇ E[f(x + σp)]``, Nesterov &
    Spokoiny 2017).

    With ``include_x0`` the ``n`` points are ``x`` itself (the incoming gradient and the
    ``value`` extra, so place this transform first in a chain) and ``n − 1`` perturbed
    ones; otherwise ``n`` perturbed ones. Their values and gradients are aggregated:

    - ``"mean"``: the means (the smoothed objective ``f_σ`` and its gradient);
    - ``"min"`` / ``"max"``: per entry, the gradient entry of least / greatest magnitude,
      and the least / greatest value;
    - ``"min-norm"``: the gradient of least global norm, and its value;
    - ``"min-value"``: the gradient at the point of least value, and that value.

    Points whose loss is not finite are dropped; if none is finite the update and value
    are ``inf``. The aggregated value is kept in ``state.value``. All perturbed gradients
    come from one vmapped batch (``chunk_size`` bounds how many are held at once) when
    ``loss_fn`` is a pure function; an objective built from a ``torch.optim`` closure is
    evaluated point by point.

    Args:
        sigma: the initial perturbation scale ``σ``.
        n: the number of points per step, ``x`` itself included when ``include_x0``.
        aggregate: ``"mean"``, ``"min"``, ``"max"``, ``"min-norm"`` or ``"min-value"``
            (above).
        include_x0: count ``x`` among the points (its gradient is the incoming update).
        distribution: ``"gaussian"`` (or ``"normal"``), ``"uniform"`` on ``(−1, 1)``,
            ``"sphere"`` (unit norm over all parameters) or ``"rademacher"``.
        fixed: draw the perturbations once (from ``seed``) and reuse them every step;
            ``False`` draws new ones each step from the key in the state.
        sigma_strategy: adapt ``σ`` after each step: ``"value"`` counts perturbed points
            whose loss is below ``f(x)``, ``"grad-norm"`` those whose gradient norm is
            below ``‖∇f(x)‖``; with at least ``sigma_target`` of them (a count, or a
            fraction of the finite points when a float) ``σ`` is multiplied by
            ``sigma_nplus``, otherwise by ``sigma_nminus``. ``None`` keeps ``σ``.
        sigma_target: see ``sigma_strategy``; a float is a fraction of the finite points
            (at least one), an int a count.
        sigma_nplus, sigma_nminus: the factors ``σ`` is multiplied by.
        seed: the key of the perturbations.
        chunk_size: at most this many perturbed gradients at once (``torch.func.vmap``'s
            ``chunk_size``); ``None`` evaluates all ``n`` together.

    Differences from ``torchzero.modules.GradientSampling``:

    - ``"min"`` / ``"max"``: torchzero keeps the magnitude of the winning entry but the
      sign of the first finite sample's entry (it copies the sign from the running
      aggregate); here each entry keeps its own sign, as an element-wise choice should.
    - torchzero's ``termination``/``decay`` (shrink ``σ`` when a stopping criterion
      fires) is not offered: schedule ``σ`` with ``sigma_strategy`` or rebuild the
      transform.
    - Noise comes from the keyed functional generator, so the bits differ from
      torchzero's ``torch.Generator``; the tests inject the same perturbations into both.
    """
    _check(sigma, n, aggregate, distribution, include_x0, sigma_strategy, sigma_target)
    samples = n - int(include_x0)

    def init_fn(params):
        leaf = tree_flatten(params)[0][0]
        return GradientSamplingState(
            random.key(seed).to(leaf.device),
            torch.tensor(float(sigma), dtype=torch.float64, device=leaf.device),
            torch.tensor(torch.nan, dtype=leaf.dtype, device=leaf.device),
        )

    def update_fn(updates, state, params=None, loss_fn=None, value=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, "gradient_sampling")
        params = require_params(params, "gradient_sampling")
        needs_x0 = include_x0 or sigma_strategy is not None
        if needs_x0 and value is None:
            value = evaluate(loss_fn, params)
        perturbations = sampling_perturbations(state.key, params, samples, distribution)
        points = tree_map(lambda p, d: p.unsqueeze(0) + d * state.sigma.to(d.dtype), params, perturbations)
        with perturbed(loss_fn):
            values, grads = _sample_gradients(loss_fn, points, chunk_size)
        values = values.detach()
        sample_values, sample_grads = values, grads
        if include_x0:
            values, grads = _stack_x0(value.detach(), values), _stack_x0(updates, grads)
        finite = torch.isfinite(values)
        new_value, new_updates = _aggregate(aggregate, values, grads, finite)
        any_finite = finite.any()
        new_value = torch.where(any_finite, new_value, torch.inf)
        new_updates = tree_map(lambda g: torch.where(any_finite, g, torch.inf), new_updates)
        new_sigma = state.sigma
        if sigma_strategy is not None:
            if sigma_strategy == "value":
                good = (sample_values < value).sum()
            else:
                good = (torch.isfinite(sample_values) & (_row_norms(sample_grads) < tree_norm(updates))).sum()
            if isinstance(sigma_target, float):
                target = torch.clamp(finite.sum().to(torch.float64) * sigma_target, min=1.0).floor()
            else:
                target = float(sigma_target)
            factors = torch.tensor([sigma_nminus, sigma_nplus], dtype=torch.float64, device=state.sigma.device)
            new_sigma = state.sigma * factors[(good >= target).long()]
        new_key = state.key if fixed else random.next_key(state.key)
        return new_updates, GradientSamplingState(new_key, new_sigma, new_value.to(state.value.dtype))

    return GradientTransformation(init_fn, update_fn)
