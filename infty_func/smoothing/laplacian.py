"""Laplacian smoothing of the update (Osher et al. 2022)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import tree_flatten, tree_unflatten

__all__ = ["laplacian_smoothing", "LaplacianSmoothingState", "laplacian_denominator"]


class LaplacianSmoothingState(NamedTuple):
    denominators: tuple  # per smoothed block: the real FFT-domain denominator (empty tensor when not smoothed)


def laplacian_denominator(n: int, sigma: float, dtype=torch.float64, device=None) -> Tensor:
    """The spectrum of ``I − σΔ`` for the periodic 1-D Laplacian ``Δ`` on ``n`` points, at
    the ``n // 2 + 1`` frequencies a real FFT keeps: ``1 + 2σ(1 − cos(2πk/n))``.
    (``torchzero`` forms it as ``1 − σ·fft([−2, 1, 0, …, 0, 1])``, the same numbers.)"""
    k = torch.arange(n // 2 + 1, dtype=torch.float64, device=device)
    return (1.0 + 2.0 * sigma * (1.0 - torch.cos(2.0 * math.pi * k / n))).to(dtype)


def _smooth(flat: Tensor, denominator: Tensor) -> Tensor:
    """Solve ``(I − σΔ) u = g`` for one flattened block: ``u = irfft(rfft(g) / denom)``."""
    return torch.fft.irfft(torch.fft.rfft(flat) / denominator, n=flat.shape[-1])


def laplacian_smoothing(sigma: float = 1.0, layerwise: bool = True, min_numel: int = 4) -> GradientTransformation:
    """Laplacian smoothing (Osher et al. 2022, "Laplacian Smoothing Gradient Descent"):
    the update ``u`` solving ``(I − σΔ) u = g``, with ``Δ`` the periodic discrete Laplacian
    on the flattened gradient, by a real FFT: ``u = F⁻¹(F g / (1 + 2σ(1 − cos 2πk/n)))``.

    ``layerwise=True`` smooths each leaf with more than ``min_numel`` entries on its own
    (smaller ones pass through, as ``torchzero.modules.LaplacianSmoothing``); ``False``
    smooths all leaves as one concatenated vector. The denominators depend only on the
    sizes and ``σ``: they are computed once, at ``init``, and kept in the state (half a
    leaf each, the real FFT's frequencies).
    """
    if not isinstance(min_numel, int) or min_numel < 0:
        raise ValueError(f"laplacian_smoothing: min_numel must be a non-negative int, got {min_numel!r}")

    def init_fn(params):
        leaves, _ = tree_flatten(params)
        if not layerwise:
            total = sum(leaf.numel() for leaf in leaves)
            return LaplacianSmoothingState((laplacian_denominator(total, sigma, leaves[0].dtype, leaves[0].device),))
        return LaplacianSmoothingState(
            tuple(
                laplacian_denominator(leaf.numel(), sigma, leaf.dtype, leaf.device)
                if leaf.numel() > min_numel
                else torch.zeros(0, dtype=leaf.dtype, device=leaf.device)
                for leaf in leaves
            )
        )

    def update_fn(updates, state, params=None, **extra):
        del params, extra
        leaves, spec = tree_flatten(updates)
        if not layerwise:
            sizes = [leaf.numel() for leaf in leaves]
            flat = torch.cat([leaf.reshape(-1) for leaf in leaves])
            smooth = torch.split(_smooth(flat, state.denominators[0]), sizes)
            out = [part.reshape(leaf.shape) for part, leaf in zip(smooth, leaves)]
            return tree_unflatten(out, spec), state
        out = [
            _smooth(leaf.reshape(-1), denominator).reshape(leaf.shape) if denominator.numel() else leaf
            for leaf, denominator in zip(leaves, state.denominators)
        ]
        return tree_unflatten(out, spec), state

    return GradientTransformation(init_fn, update_fn)
