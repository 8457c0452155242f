"""Aggregators from torchjd's family: UPGrad, DualProj, IMTL-G and Aligned-MTL, each a
weighting of the Gramian."""

from __future__ import annotations

import torch

from infty_func.core.base import GradientTransformation
from infty_func.multiobjective.aggregator import weighted_aggregator
from infty_func.multiobjective.box_qp import lower_bounded_qp

__all__ = ["upgrad", "dualproj", "imtlg", "aligned_mtl"]


def _preference(pref_vector, m, device):
    if pref_vector is None:
        return torch.full((m,), 1.0 / m, dtype=torch.float64, device=device)
    pref = torch.as_tensor(pref_vector, dtype=torch.float64, device=device)
    if pref.shape != (m,):
        raise ValueError(f"pref_vector must have shape [{m}], got {tuple(pref.shape)}")
    return pref


def _normalised(gram, norm_eps, reg_eps):
    trace = torch.diagonal(gram).sum()
    scaled = torch.where(trace >= norm_eps, gram / trace.clamp_min(1e-300), torch.zeros_like(gram))
    return scaled + reg_eps * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def upgrad(pref_vector=None, norm_eps: float = 1e-4, reg_eps: float = 1e-4, m: int | None = None) -> GradientTransformation:
    """UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization"), as
    ``torchjd.aggregation.UPGrad``: each gradient, weighted by the preference ``p_i``
    (``1/m``), is projected onto the dual cone of the rows,
    ``w⁽ⁱ⁾ = argmin_{v ≥ p_i e_i} vᵀ P v``, and the update is ``Σ_i w⁽ⁱ⁾`` applied to the
    rows. ``P = G / tr G + reg_eps·I`` (``0 + reg_eps·I`` when ``tr G < norm_eps``), as in
    torchjd. The box QPs are solved exactly (active-set enumeration, vmappable).
    """

    def weighting(gram, inner, value=None):
        m_ = gram.shape[0]
        pref = _preference(pref_vector, m_, gram.device)
        lower = torch.diag(pref)  # row i: p_i e_i
        return lower_bounded_qp(_normalised(gram, norm_eps, reg_eps), lower).sum(0), inner

    return weighted_aggregator("upgrad", weighting, m)


def dualproj(pref_vector=None, norm_eps: float = 1e-4, reg_eps: float = 1e-4, m: int | None = None) -> GradientTransformation:
    """DualProj (as ``torchjd.aggregation.DualProj``): the preference-weighted mean of the
    rows projected onto their dual cone, ``w = argmin_{v ≥ p} vᵀ P v`` with ``P`` as in
    :func:`upgrad`."""

    def weighting(gram, inner, value=None):
        pref = _preference(pref_vector, gram.shape[0], gram.device)
        return lower_bounded_qp(_normalised(gram, norm_eps, reg_eps), pref), inner

    return weighted_aggregator("dualproj", weighting, m)


def imtlg(m: int | None = None) -> GradientTransformation:
    """IMTL-G (Liu et al. 2021, "Towards Impartial Multi-task Learning"): the update whose
    projections onto every gradient's direction are equal. From the Gramian (as torchjd):
    ``v = G⁺ √diag G``, weights ``v / Σ v`` (zero when ``|Σ v| < 1e-12``)."""

    def weighting(gram, inner, value=None):
        v = torch.linalg.pinv(gram, hermitian=True) @ torch.diagonal(gram).clamp_min(0).sqrt()
        total = v.sum()
        return torch.where(total.abs() < 1e-12, torch.zeros_like(v), v / torch.where(total == 0, 1.0, total)), inner

    return weighted_aggregator("imtlg", weighting, m)


def aligned_mtl(pref_vector=None, scale_mode: str = "min", m: int | None = None) -> GradientTransformation:
    """Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task
    Learning"), as torchjd: with ``G = V Λ Vᵀ`` (eigenvalues above ``max λ · m · eps``),
    ``B = √s · V Λ^{-1/2} Vᵀ`` and weights ``B p``; ``s`` is the smallest kept eigenvalue
    (``"min"``), the lower median (``"median"``) or their mean (``"rmse"``)."""
    if scale_mode not in ("min", "median", "rmse"):
        raise ValueError(f"aligned_mtl: scale_mode must be 'min', 'median' or 'rmse', got {scale_mode!r}")

    def weighting(gram, inner, value=None):
        m_ = gram.shape[0]
        pref = _preference(pref_vector, m_, gram.device)
        eigenvalues, vectors = torch.linalg.eigh(gram)
        keep = eigenvalues > eigenvalues.max() * m_ * torch.finfo(gram.dtype).eps
        safe = torch.where(keep, eigenvalues, torch.ones_like(eigenvalues))
        kept = torch.where(keep, eigenvalues, torch.full_like(eigenvalues, float("inf")))
        if scale_mode == "min":
            scale = kept.min()
        elif scale_mode == "median":
            ordered = torch.sort(torch.where(keep, eigenvalues, torch.full_like(eigenvalues, float("inf")))).values
            scale = ordered[torch.div(keep.sum() - 1, 2, rounding_mode="floor").clamp_min(0)]
        else:
            scale = (eigenvalues * keep).sum() / keep.sum().clamp_min(1)
        inverse_sqrt = torch.where(keep, safe.rsqrt(), torch.zeros_like(safe))
        b = scale.clamp_min(0).sqrt() * (vectors * inverse_sqrt) @ vectors.transpose(0, 1)
        weights = torch.where(keep.any(), b @ pref, pref)
        return weights, inner

    return weighted_aggregator("aligned_mtl", weighting, m)
