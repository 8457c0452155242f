"""Running an inner transform on each parameter split into blocks."""

from __future__ import annotations

import math

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import tree_flatten, tree_unflatten
from infty_func.experimental.projection import projected

__all__ = ["block_partition"]


def block_partition(
    inner: GradientTransformation, block_size: int, batched: bool = False, project_params: bool = False
) -> GradientTransformation:
    """``inner`` applied to every leaf cut into blocks of at most ``block_size`` entries,
    so that an inner transform working per leaf (a norm, a matrix preconditioner) works
    per block instead.

    A leaf of ``n ≤ block_size`` entries stays whole, in its own shape. A larger one is
    flattened into ``k = ⌈n / block_size⌉`` blocks:

    - ``batched=False`` (default): ``torch.chunk(flat, k)``, a tuple of 1-D blocks of
      ``⌈n / k⌉`` entries (the last may be shorter), each a leaf of the inner transform.
    - ``batched=True``: one ``[k, block_size]`` leaf, the flat leaf zero-padded to
      ``k · block_size`` entries; the padding is dropped coming back.

    Args:
        inner: the transform that runs on the blocks; its state is shaped like them.
        block_size: the largest block, at least 1 (``torchzero``'s ``max_size``).
        batched: stack a leaf's blocks into one 2-D leaf instead of separate leaves.
        project_params: also hand the inner transform the parameters' blocks and the
            objective in those coordinates (see :func:`~infty_func.experimental.projection.projected`).

    As ``torchzero.modules.experimental.BlockPartition``, except that its ``batched=True``
    fails (a zeros tensor of negative size) whenever ``block_size`` does not divide a
    leaf's size; here the leaf is padded as intended.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_partition: block_size must be a positive int, got {block_size!r}")
    if not isinstance(batched, bool):
        raise ValueError(f"block_partition: batched must be a bool, got {batched!r}")

    def split(leaf):
        n = leaf.numel()
        if n <= block_size:
            return leaf
        flat = leaf.reshape(-1)
        count = math.ceil(n / block_size)
        if not batched:
            return tuple(flat.chunk(count))
        padding = count * block_size - n
        if padding:
            flat = torch.cat([flat, flat.new_zeros(padding)])
        return flat.view(count, block_size)

    def join(blocks, leaf):
        if leaf.numel() <= block_size:
            return blocks
        if not batched:
            return torch.cat(blocks).view(leaf.shape)
        return blocks.reshape(-1)[: leaf.numel()].view(leaf.shape)

    def project(tree):
        leaves, spec = tree_flatten(tree)
        return tree_unflatten([split(leaf) for leaf in leaves], spec)

    def unproject(blocks, like):
        leaves, spec = tree_flatten(like)
        # The projected tree has the same top structure, with a leaf's blocks one level down.
        per_leaf = spec.flatten_up_to(blocks)
        return tree_unflatten([join(part, leaf) for part, leaf in zip(per_leaf, leaves)], spec)

    return projected(inner, project, unproject, project_params, "block_partition")
