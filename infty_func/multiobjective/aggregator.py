"""Aggregators: transforms from a Jacobian pytree to one update, most of them a weighting
of the Gramian (the torchjd split: a weighting maps ``G = J Jᵀ`` to ``m`` weights, the
update is ``Σ_i w_i g_i``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.tree import tree_leaves
from infty_func.multiobjective.diagnostics import (
    ConflictDiagnostics,
    _update_cosine,
    conflict_diagnostics,
    empty_diagnostics,
)
from infty_func.multiobjective.jacobian import combine, combine_per_leaf, gramian, jacobian_rows, leaf_gramians

__all__ = ["AggregatorState", "weighted_aggregator", "GRANULARITIES"]

GRANULARITIES = ("model", "layer")

# weighting(gram [m, m] float64, inner_state, value=losses or None) -> (weights [m], inner_state)
Weighting = Callable[..., tuple[Tensor, Any]]


class AggregatorState(NamedTuple):
    inner: Any  # the weighting's own state (EmptyState for stateless methods)
    diagnostics: Any  # ConflictDiagnostics of the last step (an empty tuple until m is known)


def weighted_aggregator(
    name: str,
    weighting: Weighting,
    m: int | None = None,
    init_inner: Callable[[int | None, Any], Any] | None = None,
    granularity: str = "model",
) -> GradientTransformation:
    """An aggregator from a Gramian weighting.

    ``granularity="model"`` weights the whole gradients with one Gramian;
    ``"layer"`` applies the rule to each leaf on its own (its own Gramian, weights and
    inner state, ``init_inner(m, leaf)``). Diagnostics are computed from the model
    Gramian and the applied weights (per leaf, summed), at no extra pass. A Jacobian with
    one row is passed through unchanged (every rule reduces to the gradient then, or should).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"{name}: granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if m is not None and (not isinstance(m, int) or m < 1):
        raise ValueError(f"{name}: m (the number of objectives) must be a positive int, got {m!r}")
    per_leaf = granularity == "layer" and init_inner is not None
    weighting = _guarded(weighting)

    def init_fn(params):
        if init_inner is None:
            inner = EmptyState()
        elif per_leaf:
            inner = tuple(init_inner(m, leaf) for leaf in tree_leaves(params))
        else:
            inner = init_inner(m, params)
        return AggregatorState(inner, empty_diagnostics(m) if m is not None else ())

    def update_fn(updates, state, params=None, *, value=None, **extra):
        del params, extra
        if value is not None and value.dim() == 0:
            raise ValueError(
                f"{name} aggregates several objectives but got a scalar loss: give loss_fn a 1-D tensor of m "
                "losses (ifn.step then passes their Jacobian)"
            )
        leaves, spec, rows = jacobian_rows(updates, name)
        if rows == 1:  # one objective: its gradient, whatever the rule (and the state kept)
            weights = torch.ones(1, dtype=torch.float64, device=leaves[0].device)
            if m is None or m == 1:
                diagnostics = conflict_diagnostics(gramian(leaves).to(torch.float64), weights)
            else:  # keep the state's shapes (built for m objectives)
                diagnostics = state.diagnostics
            return combine(weights, leaves, spec), AggregatorState(state.inner, diagnostics)
        if m is not None and rows != m:
            raise ValueError(f"{name} was built for m={m} objectives, got a Jacobian with {rows}")
        losses = None if value is None else value.reshape(-1)
        if granularity == "model":
            gram = gramian(leaves).to(torch.float64)
            weights, inner = weighting(gram, state.inner, value=losses)
            out = combine(weights, leaves, spec)
            diagnostics = conflict_diagnostics(gram, weights)
        else:
            grams = [g.to(torch.float64) for g in leaf_gramians(leaves)]
            weights_per_leaf, inners = [], []
            for index, gram in enumerate(grams):
                leaf_state = state.inner[index] if per_leaf else state.inner
                weights, leaf_state = weighting(gram, leaf_state, value=losses)
                weights_per_leaf.append(weights)
                inners.append(leaf_state)
            inner = tuple(inners) if per_leaf else inners[-1]
            out = combine_per_leaf(weights_per_leaf, leaves, spec)
            diagnostics = _layer_diagnostics(grams, weights_per_leaf)
        return out, AggregatorState(inner, diagnostics)

    return GradientTransformation(init_fn, update_fn)


def _guarded(weighting):
    """Solvers (LAPACK) may abort on non-finite input: solve on a finite Gramian and let
    NaN through to the weights when the Gramian was not finite."""

    def guarded(gram, inner, value=None):
        finite = torch.isfinite(gram).all()
        weights, inner = weighting(torch.where(finite, gram, torch.zeros_like(gram)), inner, value=value)
        return torch.where(finite, weights, torch.full_like(weights, float("nan"))), inner

    return guarded


def _layer_diagnostics(grams: list[Tensor], weights: list[Tensor]) -> ConflictDiagnostics:
    """Diagnostics of a per-leaf aggregation: ``⟨g_i, d⟩ = Σ_l (G_l w_l)_i`` and
    ``‖d‖² = Σ_l w_lᵀ G_l w_l``."""
    total = sum(grams)
    norms = torch.diagonal(total).clamp_min(0).sqrt()
    gains = sum(g @ w.to(torch.float64) for g, w in zip(grams, weights))
    update_norm = sum(w.to(torch.float64) @ g @ w.to(torch.float64) for g, w in zip(grams, weights)).clamp_min(0).sqrt()
    scale = torch.outer(norms, norms).clamp_min(1e-30)
    return ConflictDiagnostics(total / scale, norms, _update_cosine(gains, norms, update_norm), gains, update_norm)
