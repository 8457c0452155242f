"""The loss on a plane through the parameters, evaluated in vmapped chunks of grid points."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import vmap

from infty_func.core.tree import PyTree, tree_leaves, tree_map
from infty_func.curvature.objective import DatasetObjective, Objective

__all__ = ["loss_surface"]


def _on_plane(loss: Callable[[PyTree], Tensor], params: PyTree, first: PyTree, second: PyTree):
    """``(α, β) -> loss(params + α first + β second)`` for scalar ``α, β``."""

    def at(alpha: Tensor, beta: Tensor) -> Tensor:
        point = tree_map(lambda p, u, v: p + alpha.to(p.dtype) * u + beta.to(p.dtype) * v, params, first, second)
        return loss(point).reshape(())

    return at


def _chunked(at, alphas: Tensor, betas: Tensor, chunk: int) -> Tensor:
    batched = vmap(at)
    try:
        parts = [batched(alphas[s : s + chunk], betas[s : s + chunk]) for s in range(0, alphas.numel(), chunk)]
    except RuntimeError as error:
        if "vmap" not in str(error).lower():
            raise
        raise ValueError(
            "the loss surface is evaluated with torch.func.vmap over grid points; the loss could not be "
            f"vmapped ({error}). Write it with torch operations only (no .item(), no in-place updates of captured tensors)"
        ) from error
    return torch.cat(parts).to(torch.float64)


def loss_surface(
    objective: Objective | DatasetObjective,
    params: PyTree,
    directions: list,
    alphas: Tensor,
    betas: Tensor,
    chunk: int = 64,
) -> Tensor:
    """``Z[i, j] = L(params + αᵢ d₁ + βⱼ d₂)`` as a float64 ``[len(alphas), len(betas)]``.

    The grid points go through ``torch.func.vmap`` ``chunk`` at a time (one batched
    forward per chunk, no autograd); for a dataset objective the points see each batch
    once, in one pass over the data, and the losses are averaged weighted by batch size.
    """
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    first, second = directions
    device = tree_leaves(params)[0].device
    grid_a, grid_b = torch.meshgrid(alphas.to(torch.float64), betas.to(torch.float64), indexing="ij")
    grid_a, grid_b = grid_a.to(device), grid_b.to(device)
    grid_a, grid_b = grid_a.reshape(-1), grid_b.reshape(-1)
    with torch.no_grad():
        if isinstance(objective, DatasetObjective):
            total, count = None, 0
            for batch, size in objective.each_batch("loss surface"):
                loss = lambda p, batch=batch: objective.batch_loss(p, batch)
                values = _chunked(_on_plane(loss, params, first, second), grid_a, grid_b, chunk) * size
                total = values if total is None else total + values
                count += size
            values = total / count
        else:
            values = _chunked(_on_plane(objective.loss_fn, params, first, second), grid_a, grid_b, chunk)
    return values.reshape(alphas.numel(), betas.numel()).cpu()
