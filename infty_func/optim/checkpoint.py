"""A functional state inside a ``torch.optim`` state dict: its tensors as a list (which
``torch.load(weights_only=True)`` reads back), and that list back into the state."""

from __future__ import annotations

from infty_func.core.tree import PyTree, tree_flatten, tree_leaves, tree_unflatten

__all__ = ["saved_leaves", "restored"]


def saved_leaves(state: PyTree) -> list:
    """The state's tensors, cloned."""
    return [leaf.clone() for leaf in tree_leaves(state)]


def restored(state: PyTree, saved: list, owner: str, hint: str = "") -> PyTree:
    """``state``'s structure with ``saved``'s values, on ``state``'s devices and dtypes
    (shapes are the saved ones: a state that grows, as OGD's basis, resumes grown).
    ``hint`` is appended to the error for a different number of tensors."""
    leaves, spec = tree_flatten(state)
    if len(saved) != len(leaves):
        raise ValueError(f"the saved state has {len(saved)} tensors, {owner}'s state {len(leaves)}{hint}")
    return tree_unflatten([new.to(device=old.device, dtype=old.dtype).clone() for old, new in zip(leaves, saved)], spec)
