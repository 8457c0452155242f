"""Orthogonal gradient descent (Farajtabar et al. 2020, "Orthogonal Gradient Descent for
Continual Learning")."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten

__all__ = ["ogd", "OGDState", "ogd_add_directions"]


class OGDState(NamedTuple):
    basis: PyTree  # the params' structure, each leaf with a leading axis of max_directions
    count: Tensor  # int64, how many basis slots are filled


def _coefficients(basis_leaves: list[Tensor], vector_leaves: list[Tensor]) -> Tensor:
    """``⟨b_k, v⟩`` for every slot ``k``, leaf by leaf."""
    total = None
    for b, v in zip(basis_leaves, vector_leaves):
        part = b.reshape(b.shape[0], -1) @ v.reshape(-1).to(b.dtype)
        total = part if total is None else total + part
    return total


def _remove(basis_leaves, vector_leaves, coefficients):
    return [v - torch.tensordot(coefficients.to(b.dtype), b, dims=1).to(v.dtype) for b, v in zip(basis_leaves, vector_leaves)]


def ogd(max_directions: int) -> GradientTransformation:
    """OGD: the update is the gradient with its components along a stored orthonormal basis
    removed, ``g − Σ_k ⟨g, b_k⟩ b_k``, so learning a new task does not move the outputs
    the basis describes (gradients of earlier tasks' outputs).

    The basis lives in the state with a fixed capacity (``max_directions`` slots, unfilled
    slots are zero, so they project nothing): the state has a fixed shape, which vmap,
    ``torch.save`` and checkpoints need. Grow it between tasks with
    :func:`ogd_add_directions`.
    """
    if not isinstance(max_directions, int) or max_directions < 1:
        raise ValueError(f"ogd needs max_directions >= 1, got {max_directions!r}")

    def init_fn(params):
        leaves, spec = tree_flatten(params)
        basis = [torch.zeros((max_directions, *leaf.shape), dtype=leaf.dtype, device=leaf.device) for leaf in leaves]
        return OGDState(tree_unflatten(basis, spec), torch.zeros((), dtype=torch.int64))

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        leaves, spec = tree_flatten(updates)
        basis, _ = tree_flatten(state.basis)
        return tree_unflatten(_remove(basis, leaves, _coefficients(basis, leaves)), spec), state

    return GradientTransformation(init_fn, update_fn)


def ogd_add_directions(state: OGDState, directions: PyTree, tolerance: float = 1e-12) -> OGDState:
    """Add ``directions`` (the params' structure, each leaf with a leading axis of ``n``
    new vectors) to the basis by Gram–Schmidt: each is reduced by its components along the
    basis so far (one classical pass, as ``infty.optim.OGD``), dropped when what is left
    has norm ``≤ tolerance`` (dependent on the basis), and otherwise normalised into the
    next free slot; vectors beyond the capacity are dropped. Pure and vmap-safe (no
    data-dependent branch)."""
    basis, spec = tree_flatten(state.basis)
    new, _ = tree_flatten(directions)
    capacity = basis[0].shape[0]
    count = state.count
    slots = torch.arange(capacity, device=count.device)
    for index in range(new[0].shape[0]):
        vector = [leaf[index] for leaf in new]
        residual = _remove(basis, vector, _coefficients(basis, vector))
        norm = torch.sqrt(sum((r.to(torch.float64) ** 2).sum() for r in residual))
        keep = (norm > tolerance) & (count < capacity)
        slot = (slots == count) & keep
        scale = torch.where(keep, 1.0 / torch.where(norm > 0, norm, 1.0), 0.0)
        basis = [
            torch.where(slot.reshape(-1, *([1] * r.dim())), (r * scale.to(r.dtype)).unsqueeze(0), b)
            for b, r in zip(basis, residual)
        ]
        count = count + keep.to(count.dtype)
    return OGDState(tree_unflatten(basis, spec), count)
