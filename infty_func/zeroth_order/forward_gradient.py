"""Forward gradients: a directional derivative along random tangents, no backward pass."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import jvp, vmap

from infty_func.core import random
from infty_func.core.base import GradientTransformation
from infty_func.core.objective import require_loss_fn, require_params, total_loss
from infty_func.core.tree import tree_map

__all__ = ["forward_gradient", "ForwardGradientState"]


class ForwardGradientState(NamedTuple):
    key: Tensor  # int64 [2], advanced every step
    loss: Tensor  # float64, f(w) from the forward pass of the last step


def forward_gradient(seed: int = 0, n_tangents: int = 1) -> GradientTransformation:
    """The forward gradient (Baydin et al. 2022, "Gradients without Backpropagation",
    eq. 1): ``ĝ = (1/n) Σ_t (∇f · v_t) v_t`` with standard normal tangents ``v_t``.

    ``∇f · v`` is one forward-mode product (``torch.func.jvp``); the ``n_tangents``
    products run as one vmapped batch. Unbiased: ``E[v vᵀ] = I``. No backward graph is
    built. Several losses are summed. The value ``f(w)`` comes out of the same forward pass
    and is kept in the state (``loss``).

    Args:
        seed: the key's seed; the key advances every step.
        n_tangents: tangents averaged per step.
    """
    if not isinstance(n_tangents, int) or n_tangents < 1:
        raise ValueError(f"forward_gradient needs n_tangents >= 1, got {n_tangents!r}")

    def init_fn(params):
        del params
        return ForwardGradientState(random.key(seed), torch.zeros((), dtype=torch.float64))

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del updates, extra
        loss_fn = require_loss_fn(loss_fn, "forward_gradient")
        if hasattr(loss_fn, "value_and_grad"):
            raise ValueError(
                "forward_gradient pushes tangents through loss_fn with torch.func.jvp, which a torch.optim "
                "closure (TransformOptimizer) cannot carry; use the functional API (ifn.step) or "
                "ifn.optim.ZeroFlow(args={'inftyopt': 'forward_grad'})"
            )
        objective = total_loss(loss_fn)
        params = require_params(params, "forward_gradient")
        # drawn one by one (the same bits as under vmap, without its slower draw path)
        draws = [random.normal_like(random.fold_in(state.key, t), params) for t in range(n_tangents)]
        tangents = tree_map(lambda *leaves: torch.stack(leaves), *draws)

        def directional(tangent):
            return jvp(objective, (params,), (tangent,))

        values, derivatives = vmap(directional)(tangents)
        estimate = tree_map(lambda v: (derivatives.to(v.dtype).reshape(-1, *([1] * (v.dim() - 1))) * v).mean(0), tangents)
        new_state = ForwardGradientState(random.next_key(state.key), values[0].detach().to(torch.float64))
        return estimate, new_state

    return GradientTransformation(init_fn, update_fn, needs_gradient=False, needs_value=False)
