"""RMSprop's scaling (Tieleman & Hinton, 2012, Lecture 6.5)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten, tree_zeros_like

__all__ = ["scale_by_rms", "ScaleByRmsState"]


class ScaleByRmsState(NamedTuple):
    nu: PyTree  # running mean of squared gradients
    mu: PyTree  # running mean of gradients (centered); an empty tuple without it


def scale_by_rms(decay: float = 0.99, eps: float = 1e-8, centered: bool = False) -> GradientTransformation:
    """``g / (sqrt(v) + eps)`` with ``v ← decay·v + (1-decay)·g²``, as ``torch.optim.RMSprop``.

    With ``centered`` the denominator is ``sqrt(v - m²) + eps`` with
    ``m ← decay·m + (1-decay)·g`` (Graves, 2013, eq. 38–40). ``eps`` is added outside the
    square root, as torch does (optax adds it inside by default).
    """
    if isinstance(decay, (int, float)) and not 0.0 <= decay < 1.0:
        raise ValueError(f"scale_by_rms: decay (alpha) must be in [0, 1), got {decay}")

    def init_fn(params):
        return ScaleByRmsState(tree_zeros_like(params), tree_zeros_like(params) if centered else ())

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        grads, spec = tree_flatten(updates)
        nu, _ = tree_flatten(state.nu)
        new_nu = [decay * v + (1.0 - decay) * g * g for v, g in zip(nu, grads)]
        if centered:
            mu, _ = tree_flatten(state.mu)
            new_mu = [torch.lerp(m, g, 1.0 - decay) for m, g in zip(mu, grads)]
            variance = [v - m * m for v, m in zip(new_nu, new_mu)]
            mu_tree = tree_unflatten(new_mu, spec)
        else:
            variance = new_nu
            mu_tree = ()
        out = [g / (torch.sqrt(v) + eps) for g, v in zip(grads, variance)]
        return tree_unflatten(out, spec), ScaleByRmsState(tree_unflatten(new_nu, spec), mu_tree)

    return GradientTransformation(init_fn, update_fn)
