"""Random probe directions for zeroth-order estimates, regenerated from keys.

A query's direction ``z`` is one standard-normal stream over all parameter entries, leaf
after leaf (``normal(fold_in(query_key, 0), (N,))`` with ``N`` the number of entries),
optionally with a random fraction of each leaf's entries zeroed (gradient sparsity, its
mask drawn from ``fold_in(query_key, 1)``). Because the stream is counter based, any leaf's
slice can be drawn on its own, bit for bit: drawing all leaves at once costs one call (fast
for many small leaves), and a memory-efficient estimator can rebuild one leaf at a time
instead of storing ``z`` (MeZO, Malladi et al. 2023).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.tree import PyTree, is_functorch_wrapped, tree_flatten

__all__ = ["leaf_sparsities", "query_key", "Directions"]

_NORMAL_STREAM, _MASK_STREAM = 0, 1


def _leaf_names(params: PyTree) -> list[str]:
    if isinstance(params, Mapping):
        return [str(name) for name in params]
    leaves, _ = tree_flatten(params)
    return [str(index) for index in range(len(leaves))]


def _check_fraction(value, where: str) -> float | Tensor:
    if isinstance(value, Tensor):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{where}: sparsity must be a fraction in [0, 1), got {value!r}")
    return float(value)


def leaf_sparsities(sparsity, params: PyTree, method: str) -> list[float | Tensor | None]:
    """The fraction of entries to zero in each leaf's direction: ``None`` for all leaves,
    a number for all, or a dict from parameter name to fraction (leaves it does not name
    are not sparsified). A name the params do not have is an error."""
    leaves, _ = tree_flatten(params)
    if sparsity is None:
        return [None] * len(leaves)
    if isinstance(sparsity, Mapping):
        names = _leaf_names(params)
        unknown = sorted(set(sparsity) - set(names))
        if unknown:
            raise ValueError(
                f"{method}: sparsity names parameters {unknown} that the params do not have; "
                f"known: {names[:8]}{' ...' if len(names) > 8 else ''}"
            )
        return [_check_fraction(sparsity[name], f"{method}[{name!r}]") if name in sparsity else None for name in names]
    fraction = _check_fraction(sparsity, method)
    return [fraction] * len(leaves)


def query_key(step_key: Tensor, query: int) -> Tensor:
    """The key of query ``query`` within a step."""
    return random.fold_in(step_key, query)


class Directions:
    """The direction ``z`` of one query over the given leaves (see the module docstring)."""

    def __init__(self, key: Tensor, leaves: Sequence[Tensor], fractions: Sequence):
        self.normal_key = random.fold_in(key, _NORMAL_STREAM)
        self.mask_key = random.fold_in(key, _MASK_STREAM)
        self.leaves = list(leaves)
        self.fractions = list(fractions)
        sizes = [leaf.numel() for leaf in self.leaves]
        self.offsets = list(itertools.accumulate(sizes, initial=0))[:-1]
        self.total = sum(sizes)
        # One stream holds 2**31 numbers: beyond that, each leaf draws from its own stream.
        self.per_leaf = self.total > (1 << 31)

    def _bounds(self, index: int) -> tuple[int, int]:
        start = 0 if self.per_leaf else self.offsets[index]
        return start, start + self.leaves[index].numel()

    def _normal_key(self, index: int) -> Tensor:
        return random.fold_in(self.normal_key, index) if self.per_leaf else self.normal_key

    def _masked(self, index: int, z: Tensor) -> Tensor:
        fraction = self.fractions[index]
        if fraction is None:
            return z
        start, stop = self._bounds(index)
        mask_key = random.fold_in(self.mask_key, index) if self.per_leaf else self.mask_key
        keep = random.uniform_slice(mask_key, start, stop, torch.float32, z.device).reshape(z.shape) >= fraction
        return z * keep if is_functorch_wrapped(z) or is_functorch_wrapped(keep) else z.mul_(keep)

    def leaf(self, index: int) -> Tensor:
        """``z`` for one leaf (a fresh tensor)."""
        like = self.leaves[index]
        start, stop = self._bounds(index)
        z = random.normal_slice(self._normal_key(index), start, stop, like.dtype, like.device).reshape(like.shape)
        return self._masked(index, z)

    def all(self) -> list[Tensor]:
        """``z`` for every leaf, drawn in one call when the leaves share a dtype and device."""
        dtypes = {(leaf.dtype, leaf.device) for leaf in self.leaves}
        if len(dtypes) != 1 or is_functorch_wrapped(self.normal_key) or self.per_leaf:
            return [self.leaf(i) for i in range(len(self.leaves))]
        dtype, device = dtypes.pop()
        flat = random.normal(self.normal_key, (self.total,), dtype, device)
        return [
            self._masked(i, flat[self.offsets[i] : self.offsets[i] + leaf.numel()].view(leaf.shape))
            for i, leaf in enumerate(self.leaves)
        ]

    def point_leaf(self, index: int, scale: float | Tensor) -> Tensor:
        """``w + scale · z`` for one leaf (``z`` rebuilt and dropped; its storage is reused
        for the result outside vmap)."""
        w, z = self.leaves[index], self.leaf(index)
        if is_functorch_wrapped(z) or is_functorch_wrapped(w) or isinstance(scale, Tensor):
            return w + scale * z
        return z.mul_(scale).add_(w)

    def add_to_(self, index: int, target: Tensor, scale: float) -> Tensor:
        """``target += scale · z`` in place for one leaf; dense leaves chunk by chunk, with no
        leaf-sized temporary."""
        if self.fractions[index] is None:
            start, _ = self._bounds(index)
            return random.add_normal_(target, self._normal_key(index), scale, start=start)
        return target.add_(self.leaf(index), alpha=scale)
