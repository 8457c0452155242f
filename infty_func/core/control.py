"""vmap-safe control flow.

Under ``torch.func.vmap`` a predicate may differ between batch members, so a Python ``if``
on its value is impossible. ``torch.cond`` does not help here (with ``torch.func.grad`` in
its branches it fails under vmap unless captured by ``torch.compile``). :func:`cond` decides
per call: a predicate that vmap has not batched is one value, so only the branch it selects
runs (LookSAM and multi-step accumulation keep their savings in ordinary training); a
batched predicate runs both branches and selects element-wise with ``torch.where``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch._C import _functorch

from infty_func.core.tree import tree_leaves, tree_map

__all__ = ["is_batched", "cond", "refuse_vmap"]


def is_batched(x: Any) -> bool:
    """True when ``x`` is a tensor that an enclosing ``torch.func.vmap`` batches."""
    if not isinstance(x, Tensor):
        return False
    while _functorch.is_functorch_wrapped_tensor(x):
        if _functorch.is_batchedtensor(x):
            return True
        x = _functorch.get_unwrapped(x)
    return False


def cond(pred: Tensor | bool, true_fn: Callable[..., Any], false_fn: Callable[..., Any], *operands):
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)``, safe under vmap.

    Both functions must return pytrees of the same structure, shapes and dtypes.
    """
    if not isinstance(pred, Tensor):
        return true_fn(*operands) if pred else false_fn(*operands)
    if pred.numel() != 1:
        raise ValueError(f"cond needs a scalar predicate, got shape {tuple(pred.shape)}")
    if not is_batched(pred):
        return true_fn(*operands) if bool(pred) else false_fn(*operands)
    on_true = true_fn(*operands)
    on_false = false_fn(*operands)
    pred = pred.reshape(()).to(torch.bool)
    return tree_map(lambda a, b: torch.where(pred, a, b), on_true, on_false)


def refuse_vmap(method: str, why: str, *trees: Any) -> None:
    """A ``ValueError`` when any leaf of ``trees`` is batched by ``torch.func.vmap``: for
    transforms that hand their work to a host-side solver (SciPy), which cannot be batched.
    ``why`` completes "``method`` ..." (e.g. "solves its subproblem with SciPy on the host")."""
    if any(is_batched(leaf) for tree in trees if tree is not None for leaf in tree_leaves(tree)[:1]):
        raise ValueError(f"{method} {why} and cannot run under torch.func.vmap; loop over the members instead")
