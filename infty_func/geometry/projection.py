"""Orthogonal decompositions of gradients (GSAM, GAM, LookSAM)."""

from __future__ import annotations

import torch
from torch import Tensor

from infty_func.core.tree import (
    PyTree,
    tree_add_scaled,
    tree_flatten,
    tree_norm,
    tree_scale,
    tree_unflatten,
    tree_vdot,
    use_foreach,
)

__all__ = ["subtract_orthogonal_part", "leaf_norms", "leafwise_orthogonal_part", "leafwise_add_rescaled"]

# LookSAM's normalisations use this constant in the reference, independent of perturb_eps.
LOOKSAM_EPS = 1e-8


def subtract_orthogonal_part(grad: PyTree, other: PyTree, coefficient: float | Tensor, eps: float) -> PyTree:
    """``grad − coefficient · other⊥``, where ``other⊥`` is the part of ``other``
    orthogonal to ``grad``: ``other − cos·‖other‖ · grad/(‖grad‖ + eps)`` with
    ``cos = ⟨other, grad⟩ / (‖grad‖‖other‖ + eps)`` (GSAM, Zhuang et al. 2022, Alg. 1;
    GAM's decomposition has the same form)."""
    grad_norm = tree_norm(grad)
    other_norm = tree_norm(other)
    cosine = tree_vdot(other, grad) / (grad_norm * other_norm + eps)
    along = cosine * other_norm / (grad_norm + eps)
    # grad − c·(other − along·grad) = (1 + c·along)·grad − c·other
    return tree_add_scaled(tree_scale(grad, 1 + coefficient * along), -coefficient, other)


def leaf_norms(leaves: list[Tensor]) -> list[Tensor]:
    """The Euclidean norm of each leaf (one foreach kernel where possible)."""
    if use_foreach(leaves):
        return list(torch._foreach_norm(leaves))
    return [torch.linalg.vector_norm(leaf) for leaf in leaves]


def leafwise_orthogonal_part(new: PyTree, old: PyTree) -> PyTree:
    """Per leaf, the part of ``new`` orthogonal to ``old`` (LookSAM's ``g_v``, Liu et al.
    2022, eq. 6): ``new − ‖new‖ cos θ · old/‖old‖``, with the reference's 1e-8 guards."""
    new_leaves, spec = tree_flatten(new)
    old_leaves, _ = tree_flatten(old)
    parts = []
    for x, x_norm, y, y_norm in zip(new_leaves, leaf_norms(new_leaves), old_leaves, leaf_norms(old_leaves)):
        unit_old = y / (y_norm + LOOKSAM_EPS)
        cosine = torch.sum(unit_old * (x / (x_norm + LOOKSAM_EPS)))
        parts.append(x - (x_norm * cosine) * unit_old)
    return tree_unflatten(parts, spec)


def leafwise_add_rescaled(grad: PyTree, direction: PyTree, coefficient: float | Tensor) -> PyTree:
    """Per leaf, ``g + coefficient · ‖g‖/‖d‖ · d`` (LookSAM's reuse step, Liu et al. 2022,
    eq. 7): the stored direction rescaled to the current gradient's size."""
    grad_leaves, spec = tree_flatten(grad)
    direction_leaves, _ = tree_flatten(direction)
    factors = [
        coefficient * g_norm / (d_norm + LOOKSAM_EPS)
        for g_norm, d_norm in zip(leaf_norms(grad_leaves), leaf_norms(direction_leaves))
    ]
    if use_foreach(grad_leaves, direction_leaves):
        factors = [f.to(g.dtype) for f, g in zip(factors, grad_leaves)]
        return tree_unflatten(torch._foreach_addcmul(grad_leaves, direction_leaves, factors), spec)
    return tree_unflatten([torch.addcmul(g, d, f.to(g.dtype)) for g, f, d in zip(grad_leaves, factors, direction_leaves)], spec)
