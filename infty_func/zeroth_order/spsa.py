"""The SPSA / MeZO gradient estimate from loss values only."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.base import GradientTransformation
from infty_func.core.objective import evaluate, perturbed, require_loss_fn, require_params, summed
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten, tree_zeros_like, use_foreach
from infty_func.zeroth_order.directions import Directions, leaf_sparsities, query_key

__all__ = ["zo_gradient", "ZOGradientState", "MODES"]

MODES = ("two_side", "one_side")


class ZOGradientState(NamedTuple):
    key: Tensor  # int64 [2]: this step's key; advanced every step
    count: Tensor  # int64, steps so far
    history: PyTree  # smoothed directions (empty tuple without `history`)
    loss: Tensor  # float64: mean loss over this step's probes (≈ f(w) + O(eps²) two-sided)


def zo_gradient(
    eps: float = 1e-3,
    q: int = 1,
    mode: str = "two_side",
    sign: bool = False,
    sparsity: float | dict | None = None,
    history: float | None = None,
    memory_efficient: bool = True,
    seed: int = 0,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> GradientTransformation:
    """Zeroth-order gradient estimate from loss values (SPSA, Spall 1992; MeZO, Malladi
    et al. 2023, "Fine-Tuning Language Models with Just Forward Passes", Alg. 1).

    Ignores the incoming updates and outputs, with ``z_i`` standard normal directions,

        two-sided:  ``ĝ = (1/q) Σ_i (f(w + ε z_i) − f(w − ε z_i)) / (2ε) · z_i``
        one-sided:  ``ĝ = (1/q) Σ_i (f(w + ε z_i) − f(w)) / ε · z_i``

    an estimate of ``E[z zᵀ] ∇f = ∇f`` (unbiased up to ``O(ε²)``). Every loss is evaluated
    under ``torch.no_grad``; no backward graph is built. Several losses (``loss_fn``
    returning a vector) are summed, as the reference does.

    Args:
        eps: the probe radius ``ε`` (the reference's ``zo_eps``).
        q: queries (directions) per step.
        mode: ``"two_side"`` (2q evaluations) or ``"one_side"`` (q + the value at ``w``,
            which ``ifn.step`` passes as ``value``).
        sign: use the sign of each projected difference (ZO-signSGD).
        sparsity: zero each entry of ``z`` with this probability ``s``, for all parameters
            (a number in [0, 1)) or per parameter (a dict from name to fraction; unnamed
            parameters keep dense directions). A fresh mask per query. The estimate's
            expectation shrinks to ``(1 − s) ∇f``: scale the learning rate to compensate.
        history: ``None``, or the coefficient ``α`` of the reference's direction smoothing
            ``h ← α h + (1 − α) z`` (``h`` starts at the first ``z``); ``h`` replaces ``z``
            in the estimate. Keeps a parameter-sized buffer in the state. After the first
            step the expectation is ``(1 − α) ∇f`` (α = 0.9 acts as a 10× smaller
            learning rate).
        memory_efficient: regenerate ``z`` from the key whenever it is needed (three times
            per query) instead of holding it for the query (MeZO's trick); the state
            never holds a parameter-sized tensor (without ``history``).
        seed: the key's seed; the key advances every step, so a run is a pure function of
            the seed and the data.
        reduce: applied to the vector of the ``q`` projected differences before they
            weight the directions. Data-parallel workers that share the seed agree on one
            update by sharing just these ``q`` scalars:
            ``reduce=ifn.zeroth_order.all_reduce_mean`` (see the guide).

    The state's ``loss`` is the mean of the probe losses: ``f(w)`` up to ``O(ε²)`` for
    two-sided estimates, at no extra forward pass (``ifn.step`` then returns
    ``value=None``; two-sided estimates do not need ``f(w)``).

    Departures from ``infty.optim.ZeroFlow``: noise comes from the transform's own key, not
    the global RNG; a sparsity fraction ``s`` zeroes a fresh random ``s`` of the entries
    each query, where the reference zeroes the entries whose standard normal draw is below
    ``s`` (a fraction ``Φ(s)``) with the same mask at every step.
    """
    if not isinstance(q, int) or q < 1:
        raise ValueError(f"zo_gradient needs q >= 1 queries, got {q!r}")
    if not isinstance(eps, Tensor) and not eps > 0:
        raise ValueError(f"zo_gradient needs eps > 0, got {eps!r}")
    if mode not in MODES:
        raise ValueError(f"zo_gradient: unknown mode {mode!r}; use one of {MODES}")
    if history is not None and not 0.0 <= history < 1.0:
        raise ValueError(f"zo_gradient: history (the smoothing coefficient alpha) must be in [0, 1), got {history!r}")
    two_sided = mode == "two_side"

    def init_fn(params):
        leaf_sparsities(sparsity, params, "zo_gradient")  # refuse bad fractions and names now
        return ZOGradientState(
            random.key(seed),
            torch.zeros((), dtype=torch.int64),
            tree_zeros_like(params) if history is not None else (),
            torch.zeros((), dtype=torch.float64),
        )

    def update_fn(updates, state, params=None, *, loss_fn=None, value=None, **extra):
        del updates, extra
        loss_fn = require_loss_fn(loss_fn, "zo_gradient")
        params = require_params(params, "zo_gradient")
        leaves, spec = tree_flatten(params)
        fractions = leaf_sparsities(sparsity, params, "zo_gradient")
        history_leaves, history_spec = tree_flatten(state.history) if history is not None else (None, None)
        if not two_sided:
            base = summed(value) if value is not None else summed(evaluate(loss_fn, params))
        directions = [Directions(query_key(state.key, query), leaves, fractions) for query in range(q)]
        held = None if memory_efficient else [d.all() for d in directions]

        def direction(query, index):
            return held[query][index] if held is not None else directions[query].leaf(index)

        def point(query, scale):
            if held is not None:
                if use_foreach(leaves, held[query]):
                    return tree_unflatten(torch._foreach_add(leaves, held[query], alpha=scale), spec)
                return tree_unflatten([w + scale * z for w, z in zip(leaves, held[query])], spec)
            return tree_unflatten([directions[query].point_leaf(i, scale) for i in range(len(leaves))], spec)

        differences, probe_losses = [], []
        for query in range(q):
            with perturbed(loss_fn):  # probes leave module state (batch-norm statistics) alone
                plus = summed(evaluate(loss_fn, point(query, eps)))
                minus = summed(evaluate(loss_fn, point(query, -eps))) if two_sided else None
            probe_losses.append(plus)
            if two_sided:
                probe_losses.append(minus)
                differences.append((plus - minus) / (2 * eps))
            else:
                differences.append((plus - base) / eps)
        projected = torch.stack(differences)
        if reduce is not None:
            projected = reduce(projected)
        if sign:
            projected = torch.sign(projected)

        if history_leaves is None and held is not None and q == 1 and use_foreach(leaves, held[0]):
            estimate = torch._foreach_mul(held[0], projected[0].to(leaves[0].dtype))
            query_range = range(0)  # done in one foreach kernel
        else:
            estimate = [None] * len(leaves)
            query_range = range(q)
        for query in query_range:
            for i, w in enumerate(leaves):
                z = direction(query, i)
                if history_leaves is not None:
                    smoothed = history * history_leaves[i] + (1 - history) * z
                    z = torch.where(state.count == 0, z, smoothed) if query == 0 else smoothed
                    history_leaves[i] = z
                contribution = projected[query].to(w.dtype) * z / q
                estimate[i] = contribution if query == 0 else estimate[i] + contribution
        new_history = tree_unflatten(history_leaves, history_spec) if history is not None else ()
        if two_sided:
            mean_loss = torch.stack(probe_losses).mean()
        else:
            mean_loss = base
        new_state = ZOGradientState(random.next_key(state.key), state.count + 1, new_history, mean_loss.to(torch.float64))
        return tree_unflatten(estimate, spec), new_state

    return GradientTransformation(init_fn, update_fn, needs_gradient=False, needs_value=not two_sided)
