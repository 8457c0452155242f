"""Smoothing transforms: Laplacian smoothing of the update."""

from infty_func.smoothing.laplacian import LaplacianSmoothingState, laplacian_denominator, laplacian_smoothing

__all__ = ["laplacian_smoothing", "LaplacianSmoothingState", "laplacian_denominator"]
