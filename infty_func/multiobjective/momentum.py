"""ConFIG with momentum (conflictfree's ``PseudoMomentumOperator`` and
``SeparateMomentumOperator``): one objective's gradient is fresh each step, the others come
from their momentum buffers (Liu et al. 2024, "ConFIG", §3.3, M-ConFIG)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten
from infty_func.multiobjective.config import config_weights, equal_weight, length_model_of
from infty_func.multiobjective.jacobian import gramian, jacobian_rows

__all__ = ["config_momentum", "ConFIGMomentumState", "KINDS"]

KINDS = ("pseudo", "separate")
_EPS = 1e-8


class ConFIGMomentumState(NamedTuple):
    counts: Tensor  # [m] int64: updates each objective's buffer has seen
    steps: Tensor  # int64: steps since every buffer had a gradient
    first: PyTree  # the params' structure, leaves [m, ...]: first moments M_i
    second: PyTree  # pseudo: leaves like the params (the shared s); separate: [m, ...] (S_i)
    previous: PyTree  # pseudo: the previous undebiased direction (leaves like the params); separate: ()
    losses: Tensor  # [m] float64: the recorded losses (latest, or their debiased moving average)
    loss_counts: Tensor  # [m] int64: losses recorded per objective


def _zeros_rows(leaves, m):
    return [torch.zeros((m, *leaf.shape), dtype=leaf.dtype, device=leaf.device) for leaf in leaves]


def config_momentum(
    m: int,
    kind: str = "pseudo",
    beta1: float = 0.9,
    beta2: float = 0.999,
    weight_model=None,
    length_model=None,
    loss_recorder: str | None = None,
    loss_beta: float = 0.9,
) -> GradientTransformation:
    """M-ConFIG: ConFIG on momentum buffers, for training that evaluates one objective (or a
    few) per step. The update takes the fresh rows as its Jacobian input and their indices
    as the ``index`` extra (an int or a list of ints), as the reference's
    ``calculate_gradient(indexes, grads)`` does.

    ``kind="pseudo"`` (``PseudoMomentumOperator``): per objective ``M_i ← β₁ M_i + (1 − β₁) g``
    for the fresh ones; once every buffer has a gradient, ``d = ConFIG(M̂)`` with
    ``M̂_i = M_i / (1 − β₁^{t_i})``; a shared second moment is built from the "fake"
    gradient ``(d_t − β₁ d_{t−1}) / (1 − β₁)`` (undebiased ``d``) and the update is
    ``d / (√ŝ + 1e-8)``. ``kind="separate"``: per-objective Adam moments (``M_i``, ``S_i``,
    bias-corrected by their own counts) and ConFIG on ``M̂_i / (√Ŝ_i + 1e-8)`` — the
    intent of conflictfree's ``SeparateMomentumOperator``, whose constructor fails in
    0.1.8. Until every objective has been seen the update is zero, as the reference's.

    Weight and length models that use losses get them from a loss recorder: the fresh
    objectives' losses come as the ``value`` extra (one per index) and
    ``loss_recorder="latest"`` keeps the last one of each objective (conflictfree's
    ``LatestLossRecorder``), ``"momentum"`` their moving average
    ``ℓ_i ← β ℓ_i + (1 − β) loss_i`` debiased by ``1 − β^{n_i}`` (the intent of
    ``MomentumLossRecorder``, broken in conflictfree 0.1.8). ``None`` passes no losses.
    """
    if loss_recorder not in (None, "latest", "momentum"):
        raise ValueError(f"config_momentum: loss_recorder must be None, 'latest' or 'momentum', got {loss_recorder!r}")
    if kind not in KINDS:
        raise ValueError(f"config_momentum: kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(m, int) or m < 1:
        raise ValueError(f"config_momentum needs the number of objectives m >= 1, got {m!r}")
    weights_of = weight_model or equal_weight()
    length_of = length_model_of(length_model, "config_momentum")

    def init_fn(params):
        leaves, spec = tree_flatten(params)
        first = tree_unflatten(_zeros_rows(leaves, m), spec)
        if kind == "pseudo":
            second = tree_unflatten([torch.zeros_like(leaf) for leaf in leaves], spec)
            previous = tree_unflatten([torch.zeros_like(leaf) for leaf in leaves], spec)
        else:
            second = tree_unflatten(_zeros_rows(leaves, m), spec)
            previous = ()
        return ConFIGMomentumState(
            torch.zeros(m, dtype=torch.int64),
            torch.zeros((), dtype=torch.int64),
            first,
            second,
            previous,
            torch.zeros(m, dtype=torch.float64),
            torch.zeros(m, dtype=torch.int64),
        )

    def update_fn(updates, state, params=None, *, index=None, value=None, **extra):
        del params, extra
        leaves, spec, rows = jacobian_rows(updates, "config_momentum")
        indices = list(range(m)) if index is None else ([index] if isinstance(index, int) else [int(i) for i in index])
        if len(indices) != rows:
            raise ValueError(f"config_momentum got {rows} fresh gradients for indices {indices}")
        if any(not 0 <= i < m for i in indices):
            raise ValueError(f"config_momentum: indices {indices} out of range for m = {m}")
        device = leaves[0].device
        fresh = torch.zeros(m, dtype=torch.bool, device=device)
        fresh[indices] = True
        counts = state.counts + fresh.to(torch.int64)
        losses, loss_counts, recorded = state.losses, state.loss_counts, None
        if loss_recorder is not None and value is not None:
            incoming = torch.zeros(m, dtype=torch.float64, device=device).index_copy(
                0, torch.tensor(indices, device=device), value.reshape(-1).to(torch.float64)
            )
            loss_counts = loss_counts + fresh.to(torch.int64)
            if loss_recorder == "latest":
                losses = torch.where(fresh, incoming, losses)
            else:
                losses = torch.where(fresh, loss_beta * losses + (1 - loss_beta) * incoming, losses)
        if loss_recorder == "latest":
            recorded = losses
        elif loss_recorder == "momentum":
            recorded = losses / (1.0 - loss_beta ** loss_counts.clamp_min(1).to(torch.float64))
        new_first = _masked_ema(tree_flatten(state.first)[0], leaves, indices, fresh, beta1)
        ready = (counts > 0).all()
        steps = state.steps + ready.to(torch.int64)
        t = steps.clamp_min(1).to(torch.float64)
        debias = 1.0 - beta1 ** counts.clamp_min(1).to(torch.float64)

        if kind == "pseudo":
            corrected = [b / _along_rows(debias, b) for b in new_first]
            gram = gramian(corrected).to(torch.float64)
            w = config_weights(gram, weights_of(gram, recorded), length_of, recorded)
            direction = [torch.tensordot(w.to(c.dtype), c, dims=1) for c in corrected]
            second, _ = tree_flatten(state.second)
            previous, _ = tree_flatten(state.previous)
            undebiased = [d * (1.0 - beta1**t).to(d.dtype) for d in direction]
            fake = [(u - beta1 * p) / (1 - beta1) for u, p in zip(undebiased, previous)]
            new_second = [beta2 * s + (1 - beta2) * f * f for s, f in zip(second, fake)]
            out = [d / ((s / (1.0 - beta2**t).to(s.dtype)).sqrt() + _EPS) for d, s in zip(direction, new_second)]
            keep = ready
            new_second = [torch.where(keep, n, s) for n, s in zip(new_second, second)]
            new_previous = [torch.where(keep, u, p) for u, p in zip(undebiased, previous)]
            out = [torch.where(keep, o, torch.zeros_like(o)) for o in out]
            return tree_unflatten(out, spec), ConFIGMomentumState(
                counts,
                steps,
                tree_unflatten(new_first, spec),
                tree_unflatten(new_second, spec),
                tree_unflatten(new_previous, spec),
                losses,
                loss_counts,
            )

        new_second = _masked_ema(tree_flatten(state.second)[0], [r * r for r in leaves], indices, fresh, beta2)
        debias2 = 1.0 - beta2 ** counts.clamp_min(1).to(torch.float64)
        adapted = [
            (b / _along_rows(debias, b)) / ((s / _along_rows(debias2, s)).sqrt() + _EPS) for b, s in zip(new_first, new_second)
        ]
        gram = gramian(adapted).to(torch.float64)
        w = config_weights(gram, weights_of(gram, recorded), length_of, recorded)
        out = [torch.where(ready, torch.tensordot(w.to(a.dtype), a, dims=1), torch.zeros_like(a[0])) for a in adapted]
        return tree_unflatten(out, spec), ConFIGMomentumState(
            counts, steps, tree_unflatten(new_first, spec), tree_unflatten(new_second, spec), (), losses, loss_counts
        )

    return GradientTransformation(init_fn, update_fn)


def _along_rows(vector: Tensor, like: Tensor) -> Tensor:
    """A per-objective vector in ``like``'s dtype, shaped to broadcast over its rows."""
    return vector.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _masked_ema(buffers: list, rows: list, indices: list, fresh: Tensor, beta: float) -> list:
    """Each buffer's rows ``indices`` moved toward ``rows`` by ``1 − beta`` (the objectives
    with a fresh gradient); the other rows kept."""
    out = []
    for buffer, row in zip(buffers, rows):
        scattered = torch.zeros_like(buffer)
        scattered[indices] = row
        out.append(buffer + _along_rows(fresh, buffer) * ((1 - beta) * scattered - (1 - beta) * buffer))
    return out
