"""Jacobian pytrees and their Gramians, leaf by leaf.

A Jacobian pytree has the structure of the params, each leaf with a leading axis of size
``m`` (row ``i``: the gradient of objective ``i``). Aggregators mostly need the ``m × m``
Gramian ``G = J Jᵀ``, a sum of one small matrix product per leaf: no parameter vector is
ever concatenated.
"""

from __future__ import annotations

import torch
from torch import Tensor

from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten

__all__ = ["jacobian_rows", "gramian", "leaf_gramians", "combine", "combine_per_leaf"]


def jacobian_rows(jac: PyTree, method: str) -> tuple[list[Tensor], object, int]:
    """The leaves, their spec and ``m``; a clear error when ``jac`` is not a Jacobian."""
    if jac is None:
        raise ValueError(
            f"{method} aggregates several objectives and needs their Jacobian: give loss_fn a 1-D "
            "tensor of m losses (ifn.step computes the Jacobian then), or pass ifn.jacobian(loss_fn)(params)[1]"
        )
    leaves, spec = tree_flatten(jac)
    if not leaves:
        raise ValueError(f"{method}: the Jacobian has no leaves")
    sizes = {leaf.shape[0] if leaf.dim() > 0 else None for leaf in leaves}
    if None in sizes:
        raise ValueError(
            f"{method} got a leaf without the leading objective axis: a gradient of a scalar loss, not a "
            "Jacobian; give loss_fn a 1-D tensor of m losses"
        )
    if len(sizes) != 1:
        raise ValueError(
            f"{method}: the Jacobian's leaves disagree on the number of objectives m: {sorted(sizes)} "
            "(is it the gradient of a scalar loss? give loss_fn a 1-D tensor of m losses)"
        )
    return leaves, spec, sizes.pop()


def _rows(leaf: Tensor) -> Tensor:
    return leaf.reshape(leaf.shape[0], -1)


def leaf_gramians(leaves: list[Tensor]) -> list[Tensor]:
    """``J_l J_lᵀ`` for each leaf ``l``."""
    out = []
    for leaf in leaves:
        rows = _rows(leaf)
        out.append(rows @ rows.transpose(0, 1))
    return out


def gramian(leaves: list[Tensor]) -> Tensor:
    """``G = Σ_l J_l J_lᵀ``, the ``m × m`` matrix of inner products of the objectives'
    gradients."""
    total = None
    for leaf in leaves:
        rows = _rows(leaf)
        product = rows @ rows.transpose(0, 1)
        total = product if total is None else total + product
    return total


def combine(weights: Tensor, leaves: list[Tensor], spec) -> PyTree:
    """``Σ_i weights[i] · J_i``, leaf by leaf."""
    return tree_unflatten([torch.tensordot(weights.to(leaf.dtype), leaf, dims=1) for leaf in leaves], spec)


def combine_per_leaf(weights: list[Tensor], leaves: list[Tensor], spec) -> PyTree:
    """``Σ_i weights_l[i] · J_{l,i}`` with one weight vector per leaf."""
    return tree_unflatten(
        [torch.tensordot(w.to(leaf.dtype), leaf, dims=1) for w, leaf in zip(weights, leaves)], spec
    )
