"""Smoothing transforms: Laplacian smoothing of the update, and gradient sampling."""

from infty_func.smoothing.gradient_sampling import GradientSamplingState, gradient_sampling, sampling_perturbations
from infty_func.smoothing.laplacian import LaplacianSmoothingState, laplacian_denominator, laplacian_smoothing

__all__ = [
    "laplacian_smoothing",
    "LaplacianSmoothingState",
    "laplacian_denominator",
    "gradient_sampling",
    "GradientSamplingState",
    "sampling_perturbations",
]
