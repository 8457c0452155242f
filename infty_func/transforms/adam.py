"""Adam's scaling (Kingma & Ba, 2015), with AMSGrad (Reddi et al., 2018)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.batched import along_batch, peel, peel_scalar, rewrap
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten, tree_zeros_like, use_foreach

__all__ = ["scale_by_adam", "ScaleByAdamState"]


class ScaleByAdamState(NamedTuple):
    count: Tensor  # int64
    mu: PyTree  # first moment
    nu: PyTree  # second moment
    nu_max: PyTree  # running maximum of nu (AMSGrad); an empty tuple without it


def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False
) -> GradientTransformation:
    """Adam's direction ``m̂ / (sqrt(v̂) + eps)``, as ``torch.optim.Adam`` computes it.

    ``m ← b1·m + (1-b1)·g``, ``v ← b2·v + (1-b2)·g²``, ``m̂ = m/(1-b1ᵗ)``,
    ``v̂ = v/(1-b2ᵗ)`` (Kingma & Ba, 2015, Algorithm 1). With ``amsgrad`` the denominator
    uses the running maximum of ``v`` (Reddi et al., 2018), as torch does (the maximum is
    taken before bias correction). No learning rate: chain with
    :func:`scale_by_learning_rate`.
    """
    for name, beta in (("b1", b1), ("b2", b2)):
        if isinstance(beta, (int, float)) and not 0.0 <= beta < 1.0:
            raise ValueError(f"scale_by_adam: {name} must be in [0, 1), got {beta}")
    if isinstance(eps, (int, float)) and eps < 0:
        raise ValueError(f"scale_by_adam: eps must be >= 0, got {eps}")

    def init_fn(params):
        return ScaleByAdamState(
            count=torch.zeros((), dtype=torch.int64),
            mu=tree_zeros_like(params),
            nu=tree_zeros_like(params),
            nu_max=tree_zeros_like(params) if amsgrad else (),
        )

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        count = state.count + 1
        grads, spec = tree_flatten(updates)
        mu, _ = tree_flatten(state.mu)
        nu, _ = tree_flatten(state.nu)
        nu_max, _ = tree_flatten(state.nu_max) if amsgrad else ([], None)
        stacked = _stacked_update(grads, mu, nu, nu_max, state.count, b1, b2, eps, amsgrad)
        if stacked is not None:
            out, new_mu, new_nu, new_max = stacked
            return tree_unflatten(out, spec), ScaleByAdamState(
                count=count,
                mu=tree_unflatten(new_mu, spec),
                nu=tree_unflatten(new_nu, spec),
                nu_max=tree_unflatten(new_max, spec) if amsgrad else (),
            )
        t = count.to(torch.float64)
        # Scalars in float64 tensors: exact for float64 parameters, vmappable over counts.
        bias1 = 1.0 - torch.as_tensor(b1, dtype=torch.float64) ** t
        bias2_sqrt = torch.sqrt(1.0 - torch.as_tensor(b2, dtype=torch.float64) ** t)
        if use_foreach(grads, mu, nu) and not isinstance(b1, Tensor) and not isinstance(b2, Tensor):
            new_mu, new_nu, new_max = _foreach_moments(grads, mu, nu, nu_max, b1, b2, amsgrad)
            out = _foreach_direction(new_mu, new_max if amsgrad else new_nu, bias1, bias2_sqrt, eps)
        else:
            # One op per leaf (inside torch.func transforms); fused ops keep the passes few.
            new_mu = [torch.lerp(m, g, 1.0 - b1) for m, g in zip(mu, grads)]
            new_nu = [torch.addcmul(v * b2, g, g, value=1.0 - b2) for v, g in zip(nu, grads)]
            new_max = [torch.maximum(a, v) for a, v in zip(nu_max, new_nu)] if amsgrad else nu_max
            second = new_max if amsgrad else new_nu
            # Per-member scalars in the leaves' dtype: a batched float64 scalar would
            # push the whole elementwise computation to float64.
            step_size = [(1.0 / bias1).to(m.dtype) for m in new_mu]
            bias2 = [bias2_sqrt.to(m.dtype) for m in new_mu]
            out = [
                torch.div(m, torch.sqrt(v).div_(c2).add_(eps)).mul_(c1)
                for m, v, c1, c2 in zip(new_mu, second, step_size, bias2)
            ]
        new_state = ScaleByAdamState(
            count=count,
            mu=tree_unflatten(new_mu, spec),
            nu=tree_unflatten(new_nu, spec),
            nu_max=tree_unflatten(new_max, spec) if amsgrad else (),
        )
        return tree_unflatten(out, spec), new_state

    return GradientTransformation(init_fn, update_fn)


def _foreach_moments(grads, mu, nu, nu_max, b1, b2, amsgrad):
    new_mu = torch._foreach_lerp(mu, grads, 1.0 - b1)
    new_nu = torch._foreach_mul(nu, b2)
    torch._foreach_addcmul_(new_nu, grads, grads, 1.0 - b2)
    new_max = torch._foreach_maximum(nu_max, new_nu) if amsgrad else nu_max
    return new_mu, new_nu, new_max


def _foreach_direction(new_mu, second, bias1, bias2_sqrt, eps):
    """Adam's direction from the new moments, ``m / ((sqrt(v) / bias2_sqrt + eps) · bias1)``;
    the corrections are 0-d tensors or one per leaf."""
    denom = torch._foreach_sqrt(second)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_mul_(denom, bias1)
    return torch._foreach_div(new_mu, denom)


def _stacked_update(grads, mu, nu, nu_max, count, b1, b2, eps, amsgrad):
    """Under vmap, the foreach update on the stacked tensors (see
    :mod:`infty_func.core.batched`); ``None`` when the operands do not allow it."""
    if isinstance(b1, Tensor) or isinstance(b2, Tensor):
        return None
    peeled = peel([*grads, *mu, *nu, *nu_max])
    if peeled is None:
        return None
    level, stacked = peeled
    n = len(grads)
    steps = peel_scalar(count, level)
    if steps is None:
        return None
    g, m, v, vmax = stacked[:n], stacked[n : 2 * n], stacked[2 * n : 3 * n], stacked[3 * n :]
    t = (steps + 1).to(torch.float64)
    bias1 = 1.0 - b1**t
    bias2_sqrt = torch.sqrt(1.0 - b2**t)
    new_mu, new_nu, new_max = _foreach_moments(g, m, v, vmax, b1, b2, amsgrad)
    second = new_max if amsgrad else new_nu
    out = _foreach_direction(
        new_mu, second, [along_batch(bias1, d) for d in second], [along_batch(bias2_sqrt, d) for d in second], eps
    )
    return rewrap(out, level), rewrap(new_mu, level), rewrap(new_nu, level), rewrap(new_max, level) if amsgrad else nu_max
