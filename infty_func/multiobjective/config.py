"""ConFIG (Liu et al. 2024, "ConFIG: Towards Conflict-free Training of Physics Informed
Neural Networks"): the direction with equal (or weighted) cosine to every gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.multiobjective.aggregator import weighted_aggregator

__all__ = [
    "config",
    "config_update",
    "config_weights",
    "equal_weight",
    "projection_length",
    "track_minimum",
    "track_maximum",
    "track_harmonic_average",
    "track_arithmetic_average",
    "track_geometric_average",
    "track_specific",
    "LENGTH_MODELS",
]

# A weight model maps (gram, losses) to the target cosines w (one per objective).
WeightModel = Callable[[Tensor, Tensor | None], Tensor]
# A length model maps (norms, projections of the gradients onto the unit direction,
# projections of the unit gradients onto it, losses) to the update's length.
LengthModel = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def equal_weight() -> WeightModel:
    """``w = 1``: the same cosine to every gradient (conflictfree's ``EqualWeight``)."""
    return lambda gram, losses: torch.ones(gram.shape[0], dtype=torch.float64, device=gram.device)


def projection_length() -> LengthModel:
    """``L = Σ_i g_i · û`` (conflictfree's ``ProjectionLength``, the default)."""
    return lambda norms, projections, unit_projections, losses: projections.sum()


def _tracking(name: str, summary: Callable[[Tensor], Tensor]) -> LengthModel:
    def length(norms, projections, unit_projections, losses):
        return summary(norms) * unit_projections.sum()

    length.__name__ = name
    return length


def track_minimum() -> LengthModel:
    """``L = min_i ‖g_i‖ · Σ_i u_i · û`` (``TrackMinimum``)."""
    return _tracking("track_minimum", lambda r: r.min())


def track_maximum() -> LengthModel:
    """``L = max_i ‖g_i‖ · Σ_i u_i · û`` (``TrackMaximum``)."""
    return _tracking("track_maximum", lambda r: r.max())


def track_harmonic_average() -> LengthModel:
    """``L = m / Σ_i ‖g_i‖⁻¹ · Σ_i u_i · û`` (``TrackHarmonicAverage``)."""
    return _tracking("track_harmonic_average", lambda r: r.shape[0] / torch.sum(1.0 / r))


def track_arithmetic_average() -> LengthModel:
    """``L = mean_i ‖g_i‖ · Σ_i u_i · û`` (``TrackArithmeticAverage``)."""
    return _tracking("track_arithmetic_average", lambda r: r.mean())


def track_geometric_average() -> LengthModel:
    """``L = (Π_i ‖g_i‖)^{1/m} · Σ_i u_i · û`` (``TrackGeometricAverage``)."""
    return _tracking("track_geometric_average", lambda r: torch.prod(r) ** (1.0 / r.shape[0]))


def track_specific(track_id: int) -> LengthModel:
    """``L = ‖g_{track_id}‖ · Σ_i u_i · û`` (``TrackSpecific``)."""
    return _tracking("track_specific", lambda r: r[track_id])


LENGTH_MODELS = {
    "projection": projection_length,
    "minimum": track_minimum,
    "maximum": track_maximum,
    "harmonic": track_harmonic_average,
    "arithmetic": track_arithmetic_average,
    "geometric": track_geometric_average,
}


def length_model_of(length_model: LengthModel | str | None, owner: str) -> LengthModel:
    """``length_model`` as a function: a name from :data:`LENGTH_MODELS`, a function as
    given, ``None`` for :func:`projection_length`."""
    if isinstance(length_model, str):
        if length_model not in LENGTH_MODELS:
            raise ValueError(f"{owner}: unknown length model {length_model!r}; use one of {sorted(LENGTH_MODELS)}")
        return LENGTH_MODELS[length_model]()
    return length_model or projection_length()


def config_weights(
    gram: Tensor,
    target: Tensor,
    length_model: LengthModel,
    losses: Tensor | None = None,
    use_double: bool = True,
) -> Tensor:
    """The ConFIG update as weights on the gradients, from the Gramian alone.

    With ``n_i = ‖g_i‖`` and unit gradients ``u_i = g_i / n_i`` (zero rows stay zero), the
    direction ``x`` is the minimum-norm solution of ``u_iᵀ x = target_i`` (what
    ``torch.linalg.lstsq`` and ``pinv`` give): ``x = Σ_i a_i u_i`` with ``a = Ĝ⁺ target``,
    ``Ĝ = U Uᵀ`` the Gramian of the unit gradients. For ``m = 2`` (and ``use_double``) the
    closed form of ``ConFIG_update_double`` is used: ``o₁ + c₁ ... `` the sum of the unit
    parts of each gradient orthogonal to the other, which equals the general form.
    Then ``d = L · x/‖x‖`` with the length model's ``L``.
    """
    m = gram.shape[0]
    norms = torch.diagonal(gram).clamp_min(0).sqrt()
    inverse = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), torch.zeros_like(norms))
    unit_gram = inverse[:, None] * gram * inverse[None, :]
    general = torch.linalg.pinv(unit_gram, hermitian=True) @ target
    if m == 2 and use_double:
        # The closed form divides by sin θ: for (anti)parallel gradients use the general form.
        sine = (1.0 - unit_gram[0, 1] ** 2).clamp_min(0).sqrt()
        coefficients = torch.where(sine > 1e-12, _double_coefficients(unit_gram, target), general)
    else:
        coefficients = general
    direction_norm = (coefficients @ unit_gram @ coefficients).clamp_min(0).sqrt()
    unit_direction = coefficients / torch.where(direction_norm > 0, direction_norm, 1.0)  # on the u_i
    unit_projections = unit_gram @ unit_direction  # u_i · û
    projections = norms * unit_projections  # g_i · û
    length = length_model(norms, projections, unit_projections, losses)
    return length * unit_direction * inverse  # weights on the g_i


def _double_coefficients(unit_gram: Tensor, target: Tensor) -> Tensor:
    """``ConFIG_update_double``'s direction ``c₁ o₁ + o₂`` as coefficients on ``u₁, u₂``:
    ``o₁ = unit(u₂ − cos u₁)``, ``o₂ = unit(u₁ − cos u₂)``,
    ``c₁ = (o₂ · u₁) / ((w₁/w₂)(o₁ · u₂))``."""
    cos = unit_gram[0, 1]
    rest = (1.0 - cos * cos).clamp_min(0).sqrt()  # ‖u₂ − cos u₁‖ = ‖u₁ − cos u₂‖ = sin θ
    safe = torch.where(rest > 0, rest, 1.0)
    o1 = torch.stack([-cos, torch.ones_like(cos)]) / safe  # on (u₁, u₂)
    o2 = torch.stack([torch.ones_like(cos), -cos]) / safe
    o2_dot_u1 = o2 @ unit_gram[:, 0]
    o1_dot_u2 = o1 @ unit_gram[:, 1]
    c1 = o2_dot_u1 / ((target[0] / target[1]) * o1_dot_u2)
    return c1 * o1 + o2


def config(
    weight_model: WeightModel | None = None,
    length_model: LengthModel | str | None = None,
    use_least_square: bool = True,
    m: int | None = None,
    use_double: bool = True,
) -> GradientTransformation:
    """ConFIG as an aggregator (as ``conflictfree.grad_operator.ConFIGOperator``).

    The update has the same positive cosine (or the cosines ``weight_model`` asks for) with
    every gradient, so when a conflict-free direction exists it lowers every loss; its
    length comes from ``length_model`` (a function, or one of :data:`LENGTH_MODELS`'
    names; ``projection_length()`` by default). ``m = 2`` uses the closed form
    automatically. Computed on the ``m × m`` Gramian: the solve is tiny, and no parameter
    vector is concatenated. ``use_least_square`` is kept for conflictfree's signature
    (``lstsq`` and ``pinv`` give the same minimum-norm solution).
    """
    del use_least_square
    weights_of = weight_model or equal_weight()
    length_of = length_model_of(length_model, "config")

    def weighting(gram, inner, value=None):
        return config_weights(gram, weights_of(gram, value), length_of, value, use_double), inner

    return weighted_aggregator("config", weighting, m)


def config_update(
    grads: Tensor | list[Tensor],
    weight_model: WeightModel | None = None,
    length_model: LengthModel | str | None = None,
    use_least_square: bool = True,
    losses: Tensor | None = None,
) -> Tensor:
    """``conflictfree.grad_operator.ConFIG_update`` for users of conflictfree: the ConFIG
    update of ``grads``, an ``m × n`` tensor of flattened gradients (or a list of vectors),
    as one vector. Computed from the ``m × m`` Gramian; ``m = 2`` uses the closed form
    (``ConFIG_update_double``'s), as ``ConFIGOperator`` does."""
    del use_least_square
    matrix = torch.stack(list(grads)) if isinstance(grads, (list, tuple)) else grads
    if matrix.dim() != 2:
        raise ValueError(f"config_update takes an m × n tensor of gradients, got shape {tuple(matrix.shape)}")
    length_of = length_model_of(length_model, "config_update")
    gram = (matrix @ matrix.transpose(0, 1)).to(torch.float64)
    target = (weight_model or equal_weight())(gram, losses)
    weights = config_weights(gram, target, length_of, losses)
    return weights.to(matrix.dtype) @ matrix
