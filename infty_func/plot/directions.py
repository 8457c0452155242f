"""The two directions a loss landscape is drawn along: the Hessian's top two eigenvectors,
or filter-normalised random directions (Li et al. 2018)."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

from infty_func.core import random
from infty_func.core.tree import PyTree, tree_leaves, tree_map, tree_size
from infty_func.curvature.spectrum import top_eigenvalues

__all__ = ["PlaneDirections", "hessian_directions", "filter_normalized_directions", "plane_directions", "DIRECTION_KINDS"]

DIRECTION_KINDS = ("hessian", "random")


class PlaneDirections(NamedTuple):
    kind: str  # "hessian" or "random"
    vectors: list  # two pytrees shaped like the params
    eigenvalues: Tensor | None  # [2] float64, largest first, for Hessian directions


def hessian_directions(objective: Any, params: PyTree, iters: int = 100, tol: float = 1e-3, seed: int = 0) -> PlaneDirections:
    """The eigenvectors of the two largest Hessian eigenvalues (unit norm), by Lanczos
    (:func:`infty_func.curvature.top_eigenvalues`), as ``infty.plot`` draws its landscapes
    (it uses PyHessian's power iteration; the eigenpairs are the same)."""
    count = tree_size(params)
    if count < 2:
        raise ValueError(f"Hessian directions need at least 2 parameters (the top 2 eigenvectors), the params have {count}")
    top = top_eigenvalues(objective, params, k=2, iters=iters, tol=tol, seed=seed)
    return PlaneDirections("hessian", list(top.eigenvectors), top.eigenvalues)


def _normalize_filters(direction: Tensor, param: Tensor) -> Tensor:
    if param.dim() <= 1:  # biases and norm scales stay put (Li et al.'s choice)
        return torch.zeros_like(param)
    rows = direction.reshape(direction.shape[0], -1)
    norms = param.reshape(param.shape[0], -1).norm(dim=1, keepdim=True)
    return (rows * norms / rows.norm(dim=1, keepdim=True).clamp_min(1e-10)).reshape(param.shape)


def filter_normalized_directions(params: PyTree, seed: int = 0) -> PlaneDirections:
    """Two Gaussian directions, each rescaled filter by filter (Li et al. 2018, "Visualizing
    the Loss Landscape of Neural Nets", Sec. 4): every filter — a row along the first axis
    of a weight tensor, i.e. one output unit or channel — gets the norm of the same filter
    in the params, ``d_{i,j} ← d_{i,j} / ‖d_{i,j}‖ · ‖θ_{i,j}‖``, so the picture does not
    depend on the scale of each layer. 1-D parameters (biases, norm scales) get zero, as in
    the paper's code. The noise is a pure function of ``seed``."""
    if all(leaf.dim() <= 1 for leaf in tree_leaves(params)):
        raise ValueError("filter-normalised random directions are zero when every parameter is 1-D; use directions='hessian'")
    key = random.key(seed)
    vectors = [tree_map(_normalize_filters, random.normal_like(random.fold_in(key, index), params), params) for index in range(2)]
    return PlaneDirections("random", vectors, None)


def plane_directions(
    kind: str, objective: Any, params: PyTree, iters: int = 100, tol: float = 1e-3, seed: int = 0
) -> PlaneDirections:
    """The directions of ``kind`` (``"hessian"`` or ``"random"``)."""
    if kind == "hessian":
        return hessian_directions(objective, params, iters, tol, seed)
    if kind == "random":
        return filter_normalized_directions(params, seed)
    raise ValueError(f"unknown direction kind {kind!r}; use one of {DIRECTION_KINDS}")
