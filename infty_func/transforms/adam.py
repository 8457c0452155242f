"""Adam's scaling (Kingma & Ba, 2015), with AMSGrad (Reddi et al., 2018)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.batched import peel, peel_scalar, rewrap
from infty_func.core.tree import (
    PyTree,
    is_functorch_wrapped,
    tree_flatten,
    tree_unflatten,
    tree_zeros_like,
    use_foreach,
    writable,
)

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
        return _update(updates, state, in_place=False)

    def update_in_place_fn(updates, state, params=None, owned=False, **extra):
        del params, extra
        # The direction goes into the gradients when they are the caller's to overwrite,
        # else into a new buffer: the caller owns the result either way.
        return (*_update(updates, state, in_place=True, into_grads=owned), True)

    def _update(updates, state, in_place, into_grads=False):
        count = state.count + 1
        grads, spec = tree_flatten(updates)
        mu, _ = tree_flatten(state.mu)
        nu, _ = tree_flatten(state.nu)
        nu_max, _ = tree_flatten(state.nu_max) if amsgrad else ([], None)
        _check_shapes(grads, mu)

        def new_state(new_mu, new_nu, new_max):
            return ScaleByAdamState(
                count=count,
                mu=tree_unflatten(new_mu, spec),
                nu=tree_unflatten(new_nu, spec),
                nu_max=tree_unflatten(new_max, spec) if amsgrad else (),
            )

        hyper = (b1, b2, eps, amsgrad)
        if _fusable(hyper, grads, mu, nu, nu_max, count):
            steps = [count.to(torch.float32)] * len(grads)
            out, new_mu, new_nu, new_max = _fused(grads, mu, nu, nu_max, steps, hyper, in_place, into_grads)
            return tree_unflatten(out, spec), new_state(new_mu, new_nu, new_max)
        stacked = _stacked_update(grads, mu, nu, nu_max, state.count, hyper, in_place, into_grads)
        if stacked is not None:
            out, new_mu, new_nu, new_max = stacked
            return tree_unflatten(out, spec), new_state(new_mu, new_nu, new_max)
        t = count.to(torch.float64)
        # Scalars in float64 tensors: exact for float64 parameters, vmappable over counts.
        bias1 = 1.0 - torch.as_tensor(b1, dtype=torch.float64) ** t
        bias2_sqrt = torch.sqrt(1.0 - torch.as_tensor(b2, dtype=torch.float64) ** t)
        numbers = not isinstance(b1, Tensor) and not isinstance(b2, Tensor)
        if numbers and use_foreach(grads, mu, nu) and all(map(_plain, [*grads, *mu, *nu])):  # CUDA, mixed dtypes
            new_mu, new_nu, new_max = _foreach_moments(grads, mu, nu, nu_max, b1, b2, amsgrad)
            out = _foreach_direction(new_mu, new_max if amsgrad else new_nu, 1.0 / bias1, bias2_sqrt, eps)
            return tree_unflatten(out, spec), new_state(new_mu, new_nu, new_max)
        # One op per leaf, differentiable (under autograd or torch.func transforms).
        new_mu = [torch.lerp(m, g, 1.0 - b1) for m, g in zip(mu, grads)]
        new_nu = [torch.addcmul(v * b2, g, g, value=1.0 - b2) for v, g in zip(nu, grads)]
        new_max = [torch.maximum(a, v) for a, v in zip(nu_max, new_nu)] if amsgrad else nu_max
        second = new_max if amsgrad else new_nu
        # Per-member scalars in the leaves' dtype: a batched float64 scalar would push the
        # whole elementwise computation to float64.
        out = [
            torch.div(m * (1.0 / bias1).to(m.dtype), torch.sqrt(v) / bias2_sqrt.to(m.dtype) + eps)
            for m, v in zip(new_mu, second)
        ]
        return tree_unflatten(out, spec), new_state(new_mu, new_nu, new_max)

    return GradientTransformation(init_fn, update_fn, update_in_place=update_in_place_fn)


def _check_shapes(grads, mu) -> None:
    """The update must match the state leaf for leaf: the fused kernel indexes both by the
    gradient's size, and the formula would broadcast a state of the wrong shape."""
    if len(grads) != len(mu):
        raise ValueError(f"scale_by_adam: the updates have {len(grads)} leaves but the state was made for {len(mu)}")
    for i, (g, m) in enumerate(zip(grads, mu)):
        if g.shape != m.shape:
            raise ValueError(
                f"scale_by_adam: update leaf {i} has shape {tuple(g.shape)} but the state was made for "
                f"{tuple(m.shape)} (several losses give a Jacobian with a leading axis: combine them first, "
                "e.g. with a multi-objective transform)"
            )


def _foreach_moments(grads, mu, nu, nu_max, b1, b2, amsgrad):
    new_mu = torch._foreach_lerp(mu, grads, 1.0 - b1)
    new_nu = torch._foreach_mul(nu, b2)
    torch._foreach_addcmul_(new_nu, grads, grads, 1.0 - b2)
    new_max = torch._foreach_maximum(nu_max, new_nu) if amsgrad else nu_max
    return new_mu, new_nu, new_max


def _foreach_direction(new_mu, second, inverse_bias1, bias2_sqrt, eps):
    """``(m · inverse_bias1) / (sqrt(v) / bias2_sqrt + eps)``, the fused kernel's order of
    operations; the corrections are 0-d tensors."""
    denom = torch._foreach_sqrt(second)
    torch._foreach_div_(denom, bias2_sqrt)
    torch._foreach_add_(denom, eps)
    out = torch._foreach_mul(new_mu, inverse_bias1)
    torch._foreach_div_(out, denom)
    return out


_WHOLE_MULTIPLE = 64  # a multiple of every CPU vector width in elements (AVX-512: 16 floats)

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _plain(x: Tensor) -> bool:
    """A tensor the fused kernel may read: not seen through a ``torch.func`` transform and
    not recording autograd history (the kernel has no derivative)."""
    return (
        isinstance(x, Tensor)
        and not is_functorch_wrapped(x)
        and not (x.requires_grad and torch.is_grad_enabled())
    )


def _fusable(hyper, grads, mu, nu, nu_max, count) -> bool:
    """Whether torch's fused Adam kernel can compute this update: number hyperparameters,
    plain floating tensors of one dtype on the CPU. (On CUDA the kernel exists too, but
    this path has not been checked there; CUDA tensors take the foreach formula.)"""
    b1, b2, eps, _ = hyper
    if not grads or not all(isinstance(h, (int, float)) for h in (b1, b2, eps)):
        return False
    if not _plain(count):
        return False
    first = grads[0]
    if not isinstance(first, Tensor) or first.dtype not in _FUSED_DTYPES or first.device.type != "cpu":
        return False
    for leaves in (grads, mu, nu, nu_max):
        for leaf in leaves:
            if not _plain(leaf) or leaf.dtype != first.dtype or leaf.device != first.device:
                return False
    return True


def _fused(grads, mu, nu, nu_max, steps, hyper, in_place, into_grads=False, by_member=()):
    """Adam's direction ``(m / bias1) / (sqrt(v) / bias2_sqrt + eps)`` and the new moments
    from torch's fused kernel (``torch._fused_adam_``, the kernel behind
    ``torch.optim.Adam(fused=True)``): one pass over the leaves instead of eight.

    The kernel updates parameters; run on zeros with ``lr = -1`` it writes the direction
    itself (``0 - (-1/bias1) · m / denom``, exact). ``steps`` are float32 counts after this
    update, one per tensor the kernel sees: each leaf, or each member's row of the stacked
    leaves flagged in ``by_member`` (the vmap members along their first axis).
    With ``in_place`` the moments are overwritten where they are writable (the caller owns
    the state); otherwise they are copied first. Every operand is contiguous: the kernel
    indexes memory linearly.

    With ``into_grads`` (the caller owns the gradients) and writable gradients, the
    direction overwrites them instead of a new zero buffer: AdamW's kernel with
    ``lr = weight_decay = -1`` first scales its "parameters", here the gradients, by
    ``1 - lr·weight_decay = 0``, after reading each gradient, and then adds the direction.
    That spares filling and page-faulting a buffer per leaf. The values are the same;
    only a zero direction may come out as ``-0`` (a negative gradient, or ``-0``, times 0)
    where the zero buffer gives ``+0``, which changes a parameter's bits only when it is itself a zero.
    """
    b1, b2, eps, amsgrad = hyper

    def rows(leaves):
        if not by_member:
            return leaves
        return [row for leaf, split in zip(leaves, by_member) for row in (leaf.unbind(0) if split else (leaf,))]

    def owned(leaves):
        if in_place and writable(leaves):
            return list(leaves)
        return [x.clone(memory_format=torch.contiguous_format) for x in leaves]

    grads = [g if g.is_contiguous() else g.contiguous() for g in grads]
    new_mu, new_nu = owned(mu), owned(nu)
    new_max = owned(nu_max) if amsgrad else []
    grad_rows = rows(grads)
    if into_grads and writable(grads):
        out, out_rows, kernel, decay = grads, grad_rows, torch._fused_adamw_, -1.0
    else:
        out = [torch.zeros(g.shape, dtype=g.dtype, device=g.device) for g in grads]
        out_rows, kernel, decay = rows(out), torch._fused_adam_, 0.0
    kernel(
        out_rows, grad_rows, rows(new_mu), rows(new_nu), rows(new_max), steps,
        lr=-1.0, beta1=float(b1), beta2=float(b2), weight_decay=decay, eps=float(eps),
        amsgrad=amsgrad, maximize=False,
    )
    return out, new_mu, new_nu, new_max if amsgrad else nu_max


def _stacked_update(grads, mu, nu, nu_max, count, hyper, in_place, into_grads):
    """Under vmap, the fused kernel on the stacked tensors (see
    :mod:`infty_func.core.batched`), giving each member the bits it gets alone, with its own
    step count; ``None`` when the operands do not allow it."""
    peeled = peel([*grads, *mu, *nu, *nu_max])
    if peeled is None:
        return None
    level, stacked = peeled
    steps = peel_scalar(count, level)
    if steps is None:
        return None
    n = len(grads)
    g, m, v, vmax = stacked[:n], stacked[n : 2 * n], stacked[2 * n : 3 * n], stacked[3 * n :]
    if not _fusable(hyper, g, m, v, vmax, steps):
        return None
    members = g[0].shape[0]
    per_member = list((steps + 1).to(torch.float32).expand(members).unbind(0))
    # The kernel vectorises each tensor from its start and finishes a ragged end with
    # scalar code that rounds differently. A stacked leaf whose members' sizes are whole
    # multiples of 64 elements has no ragged end, inside or out, so when every member is at
    # the same step it runs whole and gives each member the bits it gets alone; any other
    # leaf runs member by member.
    same_step = steps.dim() == 0 or bool((steps == steps[0]).all())
    split = [not (same_step and x[0].numel() % _WHOLE_MULTIPLE == 0) for x in g]
    leaf_steps = [s for flag in split for s in (per_member if flag else per_member[:1])]
    out, new_m, new_v, new_max = _fused(g, m, v, vmax, leaf_steps, hyper, in_place, into_grads, split)
    return tuple(rewrap(x, level) for x in (out, new_m, new_v)) + (rewrap(new_max, level) if hyper[3] else nu_max,)
