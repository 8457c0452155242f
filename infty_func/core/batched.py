"""Elementwise updates on the stacked tensors under vmap.

Inside ``torch.func.vmap`` every op on a batched tensor goes through a batching rule, and
``torch._foreach_*`` kernels have none, so an optimizer's elementwise update runs leaf by
leaf, op by op, on arrays of ``members × leaf`` entries. When every operand is batched by
the same (innermost) vmap level, the update can instead run on the underlying stacked
tensors, batch axis first, with the foreach kernels, and be wrapped back: the same
elementwise arithmetic, fewer dispatches and passes. Per-member scalars (a step count per
member) broadcast along the batch axis.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor
from torch._C import _functorch

from infty_func.core.tree import is_functorch_wrapped

__all__ = ["peel", "peel_scalar", "along_batch", "rewrap"]


def _level(x) -> int | None:
    if isinstance(x, Tensor) and _functorch.is_batchedtensor(x):
        return _functorch.maybe_get_level(x)
    return None


def peel(leaves: Sequence[Tensor]) -> tuple[int, list[Tensor]] | None:
    """``(level, stacked leaves)`` when every leaf is batched by one vmap level and plain
    underneath (the batch axis moved first); ``None`` otherwise (the caller then takes its
    ordinary path)."""
    if not leaves:
        return None
    level = _level(leaves[0])
    if level is None:
        return None
    stacked = []
    for leaf in leaves:
        if _level(leaf) != level:
            return None
        tensor, dim = _functorch._unwrap_batched(leaf, level)
        if is_functorch_wrapped(tensor):
            return None
        stacked.append(tensor if dim == 0 else tensor.movedim(dim, 0))
    return level, stacked


def peel_scalar(x: Tensor, level: int) -> Tensor | None:
    """A per-member scalar as a plain tensor: ``[B]`` when batched by ``level``, 0-d when
    not batched; ``None`` when it is wrapped some other way."""
    if _level(x) == level:
        tensor, dim = _functorch._unwrap_batched(x, level)
        if is_functorch_wrapped(tensor):
            return None
        return tensor if dim == 0 else tensor.movedim(dim, 0)
    return None if is_functorch_wrapped(x) else x


def along_batch(scalar: Tensor, like: Tensor) -> Tensor:
    """``scalar`` (``[B]`` or 0-d) shaped to broadcast against ``like`` (``[B, ...]``), in
    ``like``'s dtype (a float64 ``[B, 1, ...]`` tensor would otherwise widen the result)."""
    if scalar.dim() == 0:
        return scalar.to(like.dtype)
    return scalar.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def rewrap(stacked: Sequence[Tensor], level: int) -> list[Tensor]:
    """The stacked tensors batched again by ``level`` along their first axis."""
    return [_functorch._add_batch_dim(tensor, 0, level) for tensor in stacked]

