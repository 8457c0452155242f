"""Objectives the curvature solvers work on: one batch, or a whole dataset.

A solver needs three things of an objective at fixed parameters: its value, its gradient,
and Hessian-vector products, many of them. :func:`as_objective` wraps a plain
``loss_fn(params)``; :class:`DatasetObjective` averages a per-batch loss over an iterable of
batches (what PyHessian calls a dataloader Hessian), weighting each batch by its size.

Products come from an *operator* built once per point: the gradient's pullback is kept
(``ifn.hvp_operator``), so each product costs one backward pass instead of a forward and
two backward passes, and ``k`` products at once are one vmapped pullback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from infty_func.core.objective import evaluate, hvp_operator, total_loss, value_and_grad
from infty_func.core.tree import PyTree, tree_add_scaled, tree_scale

__all__ = ["Objective", "as_objective", "DatasetObjective", "hvp", "hvp_batched", "batch_size"]


class Objective:
    """``loss_fn`` at one batch: value, gradient and a reusable Hessian operator."""

    def __init__(self, loss_fn: Callable[[PyTree], Tensor]):
        self.loss_fn = total_loss(loss_fn)

    def value(self, params: PyTree) -> Tensor:
        return evaluate(self.loss_fn, params)

    def value_and_grad(self, params: PyTree):
        return value_and_grad(self.loss_fn)(params)

    def operator(self, params: PyTree) -> Callable[[PyTree], PyTree]:
        """``v -> H v`` at ``params``; batched tangents (leading axis) give batched
        products in one vmapped pullback."""
        single = hvp_operator(self.loss_fn, params)

        def apply(vectors: PyTree, batched: bool = False) -> PyTree:
            return vmap(single)(vectors) if batched else single(vectors)

        return apply


def as_objective(objective: Any) -> Objective:
    """A curvature objective from an :class:`Objective`, a :class:`DatasetObjective` or a
    plain ``loss_fn(params)``."""
    if isinstance(objective, (Objective, DatasetObjective)):
        return objective
    if callable(objective):
        return Objective(objective)
    raise TypeError(f"expected a loss_fn(params) or a curvature objective, got {type(objective).__name__}")


def batch_size(batch) -> int:
    """The weight of a batch in a dataset average: its first tensor's leading size (1 for
    anything else)."""
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(first.shape[0]) if isinstance(first, Tensor) and first.dim() > 0 else 1


class DatasetObjective:
    """The average of ``batch_loss(params, batch)`` over ``batches`` (weighted by batch
    size), with its gradient and Hessian products averaged the same way.

    ``batches`` is any re-iterable (a list, a ``DataLoader``); every value, gradient and
    product makes one pass over it (one forward and backward per batch), with a ``tqdm``
    progress bar when ``progress`` is set. An empty iterable is an error.
    """

    def __init__(self, batch_loss: Callable[[PyTree, Any], Tensor], batches: Iterable, progress: bool = False):
        self.batch_loss = batch_loss
        self.batches = batches
        self.progress = progress

    def each_batch(self, what: str):
        """``(batch, size)`` for every batch (``what`` labels the progress bar); a
        ``ValueError`` once the iterable turns out empty."""
        items = self.batches
        if self.progress:
            from tqdm import tqdm

            items = tqdm(items, desc=what, leave=False)
        seen = 0
        for batch in items:
            size = batch_size(batch)
            seen += size
            yield batch, size
        if seen == 0:
            raise ValueError("DatasetObjective: the batches are empty (an empty loader?)")

    def _objective(self, batch) -> Objective:
        return Objective(lambda params: self.batch_loss(params, batch))

    def value(self, params: PyTree) -> Tensor:
        total, count = 0.0, 0
        for batch, size in self.each_batch("value"):
            total = total + self._objective(batch).value(params).to(torch.float64) * size
            count += size
        return total / count

    def value_and_grad(self, params: PyTree):
        value, grad, count = 0.0, None, 0
        for batch, size in self.each_batch("gradient"):
            v, g = self._objective(batch).value_and_grad(params)
            value = value + v.to(torch.float64) * size
            grad = tree_scale(g, float(size)) if grad is None else tree_add_scaled(grad, float(size), g)
            count += size
        return value / count, tree_scale(grad, 1.0 / count)

    def operator(self, params: PyTree) -> Callable[..., PyTree]:
        """``v -> H v`` averaged over the batches: each application makes one pass (per
        batch, one linearisation and one batched pullback for all given tangents)."""

        def apply(vectors: PyTree, batched: bool = False) -> PyTree:
            total, count = None, 0
            for batch, size in self.each_batch("Hessian products"):
                product = self._objective(batch).operator(params)(vectors, batched)
                total = tree_scale(product, float(size)) if total is None else tree_add_scaled(total, float(size), product)
                count += size
            return tree_scale(total, 1.0 / count)

        return apply


def hvp(loss_fn: Any, params: PyTree, vector: PyTree) -> PyTree:
    """``H v`` for a loss function or objective at ``params``."""
    return as_objective(loss_fn).operator(params)(vector)


def hvp_batched(loss_fn: Any, params: PyTree, vectors: PyTree) -> PyTree:
    """``H v_i`` for ``k`` tangents at once (each leaf of ``vectors`` has a leading axis
    ``k``), from one linearisation and one vmapped pullback."""
    return as_objective(loss_fn).operator(params)(vectors, batched=True)
