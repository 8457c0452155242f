"""The zeroth-order estimate on parameters the caller owns, perturbed in place (MeZO).

:func:`~infty_func.zo_gradient` is pure, so each probe point is a new parameter-sized
tree. A stateful optimizer that owns the parameters' storage can do better: perturb each
tensor in place by ``±ε z`` (regenerating ``z`` leaf by leaf from the key), evaluate, and
restore, then hand out the estimate one leaf at a time. Peak memory above the model is then
one inference pass plus one leaf-sized temporary. The directions, the projected
differences and the state updates are those of :func:`~infty_func.zo_gradient` (same key
scheme), so both give the same numbers up to the rounding of the in-place ``±ε z``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.tree import tree_flatten, tree_unflatten
from infty_func.zeroth_order.directions import Directions, leaf_sparsities, query_key
from infty_func.zeroth_order.spsa import ZOGradientState

__all__ = ["InPlaceEstimate", "estimate_in_place"]


class InPlaceEstimate:
    """The outcome of one in-place estimate: the projected differences per query, the
    probe losses and the next state; :meth:`leaf` rebuilds the estimate for one leaf."""

    def __init__(self, projected, probe_outputs, state, config, directions, held=None):
        self.projected = projected  # list of 0-d tensors, one per query
        self._coefficients = [float(c) for c in projected]  # read once: no device sync per leaf
        self.probe_outputs = probe_outputs  # what evaluate() returned at the last query's +εz probe
        self.state = state  # the next ZOGradientState
        self._config = config
        self._directions = directions
        self._held = held

    def leaf(self, index: int, scale: float = 1.0) -> Tensor:
        """``scale · ĝ`` for leaf ``index`` (a fresh tensor; with ``history`` it also
        advances that leaf's smoothed direction, on every call: INFTY's conservative step
        rebuilds the estimate, and smooths again, for each of its base-optimizer steps)."""
        cfg, q = self._config, len(self.projected)
        history_leaves = cfg["history_leaves"]
        out = None
        for query, (directions, coefficient) in enumerate(zip(self._directions, self._coefficients)):
            z = self._held[query][index].clone() if self._held is not None else directions.leaf(index)
            if history_leaves is not None:
                if not (query == 0 and cfg["first_step"]):
                    z = z.mul_(1 - cfg["alpha"]).add_(history_leaves[index], alpha=cfg["alpha"])
                history_leaves[index] = z
                z = z.clone()  # the history keeps z; the estimate scales a copy
            # (c · z) · scale / q, in the reference's order (scale is ±1 or ±2: exact)
            contribution = z.mul_(coefficient).mul_(scale)
            if q > 1:
                contribution = contribution.div_(q)
            out = contribution if out is None else out.add_(contribution)
        return out

    def finish(self) -> ZOGradientState:
        """The next state, once every leaf has been read (history written back)."""
        cfg = self._config
        if cfg["history_leaves"] is None:
            return self.state
        return self.state._replace(history=tree_unflatten(cfg["history_leaves"], cfg["history_spec"]))


@torch.no_grad()
def estimate_in_place(
    parameters: Sequence[Tensor],
    names: Sequence[str],
    state: ZOGradientState,
    evaluate: Callable[[], tuple[Tensor, object]],
    *,
    eps: float,
    q: int,
    mode: str,
    sign: bool,
    sparsity,
    history: float | None,
    hold: bool = False,
) -> InPlaceEstimate:
    """Probe ``evaluate()`` at ``w ± ε z_i`` by perturbing ``parameters`` in place and
    restoring them (up to rounding). ``evaluate`` returns ``(summed loss, output)``.

    The arithmetic follows ``infty.optim.ZeroFlow``: ``+εz``, evaluate, ``−2εz``, evaluate,
    ``+εz`` (two-sided); ``+εz``, evaluate, ``−εz``, evaluate ``f(w)`` (one-sided).
    With ``hold``, each query's ``z`` is drawn once for all leaves and kept until the
    estimate is read (faster for many small leaves); otherwise every use rebuilds it leaf by
    leaf and no parameter-sized tensor is made.
    """
    fractions = leaf_sparsities(sparsity, dict(zip(names, parameters)), "zo_gradient")
    all_directions = [Directions(query_key(state.key, query), parameters, fractions) for query in range(q)]

    held = [directions.all() for directions in all_directions] if hold else None

    def shift(query, scale):
        if held is not None:
            torch._foreach_add_(list(parameters), held[query], alpha=scale)
            return
        for index, p in enumerate(parameters):
            all_directions[query].add_to_(index, p, scale)

    projected, probe_losses, probe_output = [], [], None
    for query in range(q):
        shift(query, eps)
        plus, output = evaluate()
        probe_output = output  # infty returns the last query's (logits, loss_list)
        if mode == "two_side":
            shift(query, -2 * eps)
            minus, _ = evaluate()
            shift(query, eps)
            difference = (plus - minus) / (2 * eps)
            probe_losses += [plus, minus]
        else:
            shift(query, -eps)
            minus, _ = evaluate()
            difference = (plus - minus) / eps
            probe_losses += [minus]
        projected.append(torch.sign(difference) if sign else difference)
    loss = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in probe_losses]).mean()
    history_leaves, history_spec = (None, None)
    if history is not None:
        history_leaves, history_spec = tree_flatten(state.history)
        history_leaves = list(history_leaves)
    config = {
        "alpha": history,
        "history_leaves": history_leaves,
        "history_spec": history_spec,
        "first_step": bool(state.count == 0),
    }
    next_state = ZOGradientState(random.next_key(state.key), state.count + 1, state.history, loss)
    return InPlaceEstimate(projected, probe_output, next_state, config, all_directions, held)
