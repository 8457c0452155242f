"""Pytree utilities, built on the pytree implementation that ``torch.func`` uses.

Every function here is pure: it returns new tensors and never writes into its inputs.
Multi-leaf arithmetic uses ``torch._foreach_*`` kernels (one launch for all leaves) when
the leaves are plain tensors, and falls back to one op per leaf inside ``torch.func``
transforms, where the foreach kernels have no batching rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import Tensor
from torch._C import _functorch

PyTree = Any

tree_map = pytree.tree_map
tree_leaves = pytree.tree_leaves
tree_flatten = pytree.tree_flatten
tree_unflatten = pytree.tree_unflatten
tree_structure = pytree.tree_structure

__all__ = [
    "PyTree",
    "tree_map",
    "tree_leaves",
    "tree_flatten",
    "tree_unflatten",
    "tree_structure",
    "is_functorch_wrapped",
    "use_foreach",
    "assert_same_structure",
    "tree_add",
    "tree_sub",
    "tree_scale",
    "tree_add_scaled",
    "tree_mul",
    "tree_vdot",
    "tree_sum",
    "tree_norm",
    "tree_zeros_like",
    "tree_ones_like",
    "tree_full_like",
    "tree_where",
    "tree_all_finite",
    "tree_cast",
    "tree_size",
    "tree_ravel",
    "tree_get",
    "tree_get_all",
    "tree_set",
]


def is_functorch_wrapped(x: Any) -> bool:
    """True when ``x`` is a tensor seen through a ``torch.func`` transform (vmap, grad, jvp)."""
    return isinstance(x, Tensor) and _functorch.is_functorch_wrapped_tensor(x)


def use_foreach(*leaf_lists: Sequence[Tensor]) -> bool:
    """Whether ``torch._foreach_*`` kernels can run on these leaves.

    They can for plain tensors on one device and dtype per position; they cannot inside
    ``torch.func`` transforms (no batching rule), nor for an empty list.
    """
    first = leaf_lists[0]
    if not first:
        return False
    for leaves in leaf_lists:
        for leaf in leaves:
            if not isinstance(leaf, Tensor) or is_functorch_wrapped(leaf):
                return False
    return True


def _describe(tree: PyTree) -> str:
    text = str(tree_structure(tree))
    return text if len(text) <= 300 else text[:300] + "..."


def assert_same_structure(a: PyTree, b: PyTree, what_a: str, what_b: str) -> None:
    """Raise a ``ValueError`` naming both sides when two pytrees differ in structure or shape."""
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        raise ValueError(
            f"{what_a} and {what_b} have different pytree structures:\n"
            f"  {what_a}: {_describe(a)}\n  {what_b}: {_describe(b)}"
        )
    for index, (x, y) in enumerate(zip(leaves_a, leaves_b)):
        if isinstance(x, Tensor) and isinstance(y, Tensor) and x.shape != y.shape:
            raise ValueError(
                f"{what_a} and {what_b} differ in shape at leaf {index}: "
                f"{tuple(x.shape)} vs {tuple(y.shape)}"
            )


def _binary(a: PyTree, b: PyTree, foreach_op, leaf_op) -> PyTree:
    leaves_a, spec = tree_flatten(a)
    leaves_b = tree_leaves(b)
    if use_foreach(leaves_a, leaves_b):
        return tree_unflatten(foreach_op(leaves_a, leaves_b), spec)
    return tree_unflatten([leaf_op(x, y) for x, y in zip(leaves_a, leaves_b)], spec)


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    """``a + b`` leaf by leaf."""
    return _binary(a, b, torch._foreach_add, torch.add)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    """``a - b`` leaf by leaf."""
    return _binary(a, b, torch._foreach_sub, torch.sub)


def tree_mul(a: PyTree, b: PyTree) -> PyTree:
    """``a * b`` leaf by leaf."""
    return _binary(a, b, torch._foreach_mul, torch.mul)


def tree_scale(tree: PyTree, factor: float | Tensor, in_place: bool = False) -> PyTree:
    """``factor * tree``; ``factor`` is a number or a 0-d tensor.

    With ``in_place`` the product is written into the leaves where that is safe (plain
    contiguous tensors, or contiguous stacked tensors under vmap), with the same kernel and
    so the same bits; elsewhere a new tree is returned. Read the returned tree either way.
    """
    leaves, spec = tree_flatten(tree)
    if use_foreach(leaves) and not is_functorch_wrapped(factor):
        if in_place and writable(leaves) and _keeps_dtypes(leaves, factor):
            torch._foreach_mul_(leaves, factor)
            return tree
        return tree_unflatten(torch._foreach_mul(leaves, factor), spec)
    stacked = _scaled_stacked(leaves, factor, in_place)
    if stacked is not None:
        return tree_unflatten(stacked, spec)
    if isinstance(factor, Tensor):
        # Match each leaf's dtype: a batched float64 factor would widen the whole product.
        return tree_unflatten([leaf * factor.to(leaf.dtype) for leaf in leaves], spec)
    return tree_unflatten([leaf * factor for leaf in leaves], spec)


def _keeps_dtypes(leaves: Sequence[Tensor], factor: float | Tensor) -> bool:
    """Whether ``leaf * factor`` has each leaf's dtype: a 0-d float32 leaf times a 0-d
    float64 factor is float64, which an in-place product could not hold."""
    return all(torch.result_type(leaf, factor) == leaf.dtype for leaf in leaves)


def writable(leaves: Sequence[Tensor]) -> bool:
    """Whether an in-place kernel may write these plain tensors: contiguous (so no element
    is stored twice, as in an expanded tensor), not recording autograd history, and each
    on memory of its own (a write to one leaf must not change another)."""
    if not all(leaf.is_contiguous() and not leaf.requires_grad for leaf in leaves):
        return False
    addresses = [storage_address(leaf) for leaf in leaves]
    return None not in addresses and len(set(addresses)) == len(addresses)


def storage_address(x: Tensor) -> int | None:
    """The address of the memory under ``x``, seen through any ``torch.func`` wrappers:
    tensors with the same address share memory (an in-place write to one changes both).
    ``None`` when it cannot be seen (a sparse tensor), and 0 for every empty tensor."""
    while is_functorch_wrapped(x):
        x = _functorch.get_unwrapped(x)
    if x.layout != torch.strided:
        return None
    return x.untyped_storage().data_ptr()


def tree_add_scaled(a: PyTree, factor: float | Tensor, b: PyTree) -> PyTree:
    """``a + factor * b``, one pass over the leaves (a fused multiply-add)."""
    if isinstance(factor, Tensor):
        leaves_a, spec = tree_flatten(a)
        leaves_b = tree_leaves(b)
        if use_foreach(leaves_a, leaves_b) and not is_functorch_wrapped(factor):
            factors = [factor.to(x.dtype) for x in leaves_a]
            return tree_unflatten(torch._foreach_addcmul(leaves_a, leaves_b, factors), spec)
        return tree_unflatten([torch.addcmul(x, y, factor.to(x.dtype)) for x, y in zip(leaves_a, leaves_b)], spec)
    return _binary(
        a,
        b,
        lambda x, y: torch._foreach_add(x, y, alpha=factor),
        lambda x, y: torch.add(x, y, alpha=factor),
    )


def tree_vdot(a: PyTree, b: PyTree) -> Tensor:
    """The inner product ``sum_leaves <a, b>``, as a 0-d tensor."""
    leaves_a, leaves_b = tree_leaves(a), tree_leaves(b)
    # dot reads both leaves once; sum(x * y) would also write a leaf-sized temporary
    parts = []
    for x, y in zip(leaves_a, leaves_b):
        common = torch.result_type(x, y)
        parts.append(torch.dot(x.reshape(-1).to(common), y.reshape(-1).to(common)))
    return torch.stack(parts).sum() if parts else torch.zeros(())


def tree_sum(tree: PyTree) -> Tensor:
    """The sum of every element of every leaf."""
    parts = [torch.sum(x) for x in tree_leaves(tree)]
    return torch.stack(parts).sum() if parts else torch.zeros(())


def tree_norm(tree: PyTree, squared: bool = False) -> Tensor:
    """The global Euclidean norm over all leaves (or its square)."""
    leaves = tree_leaves(tree)
    if not leaves:
        return torch.zeros(())
    if use_foreach(leaves):
        sq = torch.stack(torch._foreach_norm(leaves)).square().sum()
    else:
        sq = torch.stack([torch.sum(leaf * leaf) for leaf in leaves]).sum()
    return sq if squared else sq.sqrt()


def tree_zeros_like(tree: PyTree) -> PyTree:
    return tree_map(torch.zeros_like, tree)


def tree_ones_like(tree: PyTree) -> PyTree:
    return tree_map(torch.ones_like, tree)


def tree_full_like(tree: PyTree, value: float) -> PyTree:
    return tree_map(lambda x: torch.full_like(x, value), tree)


def tree_where(condition: Tensor, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Select whole trees with a boolean 0-d ``condition``, without a Python branch."""
    return tree_map(lambda x, y: torch.where(condition, x, y), on_true, on_false)


def tree_all_finite(tree: PyTree) -> Tensor:
    """A boolean 0-d tensor: every element of every leaf is finite."""
    leaves = [leaf for leaf in tree_leaves(tree) if isinstance(leaf, Tensor)]
    if not leaves:
        return torch.ones((), dtype=torch.bool)
    return torch.stack([torch.isfinite(leaf).all() for leaf in leaves]).all()


def tree_cast(tree: PyTree, dtype: torch.dtype) -> PyTree:
    return tree_map(lambda x: x.to(dtype) if x.is_floating_point() else x, tree)


def tree_size(tree: PyTree) -> int:
    """The number of elements over all leaves."""
    return sum(leaf.numel() for leaf in tree_leaves(tree))


def tree_ravel(tree: PyTree) -> tuple[Tensor, Any]:
    """All leaves as one flat vector (in leaf order), and the function that maps such a
    vector back to a tree of the same structure and shapes (JAX's ``ravel_pytree``).
    For methods that need a matrix over all parameters (dense Hessians, SciPy solvers)."""
    leaves, spec = tree_flatten(tree)
    sizes = [leaf.numel() for leaf in leaves]
    shapes = [leaf.shape for leaf in leaves]

    def unravel(vector: Tensor) -> PyTree:
        pieces = torch.split(vector, sizes)
        return tree_unflatten([piece.reshape(shape) for piece, shape in zip(pieces, shapes)], spec)

    return torch.cat([leaf.reshape(-1) for leaf in leaves]), unravel


# --- reading and writing named fields of nested states -------------------------------

def _named_children(node: Any):
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return list(zip(node._fields, node))
    if isinstance(node, dict):
        return list(node.items())
    return None


def tree_get_all(tree: PyTree, name: str) -> list[Any]:
    """Every value stored under field or key ``name`` anywhere in a nested state."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        children = _named_children(node)
        if children is not None:
            for key, child in children:
                if key == name:
                    found.append(child)
                else:
                    visit(child)
        elif isinstance(node, (list, tuple)):
            for child in node:
                visit(child)

    visit(tree)
    return found


def tree_get(tree: PyTree, name: str, default: Any = None) -> Any:
    """The value stored under field or key ``name`` in a nested state.

    Raises ``KeyError`` when ``name`` appears more than once (use ``tree_get_all``).
    """
    found = tree_get_all(tree, name)
    if len(found) > 1:
        raise KeyError(f"{name!r} appears {len(found)} times in the state; use tree_get_all")
    return found[0] if found else default


def tree_set(tree: PyTree, **values: Any) -> PyTree:
    """A copy of a nested state with every field or key named in ``values`` replaced.

    Tensors keep their dtype: a number given for a tensor field becomes a tensor of the
    field's dtype and device. Unknown names raise ``KeyError``.
    """
    seen: set[str] = set()

    def convert(old: Any, new: Any) -> Any:
        if isinstance(old, Tensor) and not isinstance(new, Tensor):
            return torch.as_tensor(new, dtype=old.dtype, device=old.device)
        return new

    def rebuild(node: Any) -> Any:
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            fields = {}
            for key, child in zip(node._fields, node):
                if key in values:
                    seen.add(key)
                    fields[key] = convert(child, values[key])
                else:
                    fields[key] = rebuild(child)
            return type(node)(**fields)
        if isinstance(node, dict):
            out = {}
            for key, child in node.items():
                if key in values:
                    seen.add(key)
                    out[key] = convert(child, values[key])
                else:
                    out[key] = rebuild(child)
            return out
        if isinstance(node, (list, tuple)):
            return type(node)(rebuild(child) for child in node)
        return node

    result = rebuild(tree)
    missing = set(values) - seen
    if missing:
        raise KeyError(f"no field named {sorted(missing)} in the state")
    return result



def _scaled_stacked(leaves: list, factor, in_place: bool = False) -> list | None:
    """Under vmap, ``factor * leaves`` on the stacked tensors in one foreach kernel (see
    :mod:`infty_func.core.batched`), written into them with ``in_place`` when they are
    writable; ``None`` when the operands do not allow it."""
    from infty_func.core.batched import along_batch, peel, peel_scalar, rewrap

    peeled = peel(leaves)
    if peeled is None:
        return None
    level, stacked = peeled
    if isinstance(factor, Tensor):
        plain = peel_scalar(factor, level)
        if plain is None:
            return None
        factor = [along_batch(plain, leaf) for leaf in stacked]
    if in_place and writable(stacked):
        torch._foreach_mul_(stacked, factor)
        return rewrap(stacked, level)
    return rewrap(torch._foreach_mul(stacked, factor), level)
