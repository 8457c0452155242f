"""Running an inner transform on all parameters reshaped into one near-cubic tensor."""

from __future__ import annotations

import math

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import tree_flatten, tree_unflatten
from infty_func.experimental.projection import projected

__all__ = ["tensorize_projection", "tensorized_shape"]


def tensorized_shape(numel: int, max_side: int) -> tuple[int, ...]:
    """The shape ``numel`` entries are laid out in: ``(numel,)`` when ``numel < max_side``;
    otherwise ``d`` equal sides ``s``, with ``d = ⌈log_max_side(numel)⌉`` and
    ``s = ⌈numel^(1/d)⌉`` (so ``sᵈ ≥ numel``; the excess is zero padding). The arithmetic
    is ``torchzero``'s, in Python floats, so the shapes agree with it."""
    if numel < max_side:
        return (numel,)
    dims = math.ceil(math.log(numel, max_side))
    side = math.ceil(numel ** (1 / dims))
    return (side,) * dims


def tensorize_projection(inner: GradientTransformation, max_side: int, project_params: bool = False) -> GradientTransformation:
    """``inner`` applied to all leaves flattened, concatenated, zero-padded and reshaped
    into one tensor of equal sides (see :func:`tensorized_shape`); its output is cut back
    to the leaves. With fewer than ``max_side`` entries in all the tensor is the plain
    1-D vector.

    Args:
        inner: the transform that runs on the one tensor; its state is shaped like it.
        max_side: the side length that sets the number of axes (required, as in
            ``torchzero``); at least 2.
        project_params: also hand the inner transform the tensorized parameters and the
            objective in those coordinates (see :func:`~infty_func.experimental.projection.projected`).

    As ``torchzero.modules.experimental.TensorizeProjection``. The padding entries are
    zeros going in and are dropped coming out. The side can overshoot ``max_side``: it is
    only the base of the logarithm that picks the number of axes.
    """
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 2:
        raise ValueError(f"tensorize_projection: max_side must be an int >= 2, got {max_side!r}")

    def project(tree):
        leaves, _ = tree_flatten(tree)
        numel = sum(leaf.numel() for leaf in leaves)
        shape = tensorized_shape(numel, max_side)
        parts = [leaf.reshape(-1) for leaf in leaves]
        padding = math.prod(shape) - numel
        if padding:
            parts.append(leaves[0].new_zeros(padding))
        return torch.cat(parts).view(shape)

    def unproject(tensor, like):
        leaves, spec = tree_flatten(like)
        sizes = [leaf.numel() for leaf in leaves]
        vector = tensor.reshape(-1)[: sum(sizes)]
        return tree_unflatten([part.view(leaf.shape) for part, leaf in zip(vector.split(sizes), leaves)], spec)

    return projected(inner, project, unproject, project_params, "tensorize_projection")
