"""C-Flat: zeroth-order sharpness plus first-order flatness, for continual learning."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.control import cond
from infty_func.core.objective import require_loss_fn, require_params
from infty_func.core.tree import tree_add_scaled, tree_norm, tree_sub
from infty_func.geometry.perturbation import Radius, flatness_probes, radius

__all__ = ["c_flat", "CFlatState"]

STRATEGIES = ("basic", "plus")


class CFlatState(NamedTuple):
    count: Tensor  # int64, updates so far
    threshold: Tensor  # float64, the adaptive amplitude A of the `plus` gate (unused by `basic`)


def c_flat(
    rho: Radius = 0.1,
    lamb: float | Tensor = 0.2,
    strategy: str = "basic",
    A: float = 5.0,
    k: float = 0.01,
    t0: float = 80.0,
    cof: float = 1.0,
    norm_rho: Radius | None = None,
    adaptive: bool = False,
    eps: float = 1e-12,
) -> GradientTransformation:
    """C-Flat (Bian et al. 2024, "Make Continual Learning Stronger via C-Flat", Alg. 1).

    From ``g = ∇f(w)``, the three probes of
    :func:`~infty_func.geometry.perturbation.flatness_probes` give the SAM gradient
    ``g₁ = ∇f(w + e₀)``, ``h = ∇f(w + e₁)`` after a gradient-norm ascent of radius
    ``norm_rho``, and ``g₃ = ∇f(w + e₁ + e₂)``. The output is

        ``g₁ + lamb · (g₃ − h)``

    the zeroth-order sharpness gradient plus ``lamb`` times the first-order flatness
    gradient (``g₃ − h ≈ rho · H h/‖h‖ = rho · ∇‖∇f‖`` at the ascended point).

    ``strategy="plus"`` gates the flatness step. At step ``t`` (from 1)

        ``E = A_t / (1 + exp(−k (t − t0))) − ‖g‖``,   ``A_{t+1} = A_t − cof · E``

    and the step is C-Flat when ``E ≤ 0``, plain ``g`` (no extra evaluation) otherwise, as
    the reference does. The gate is vmap-safe (:func:`~infty_func.cond`).

    Departure from the reference: ``infty.optim.C_Flat`` takes its ascent radius from an
    attribute that is never set and uses 1.0; the C-Flat paper and code use ``rho``,
    which is the default here (``norm_rho=None``). ``c_flat(norm_rho=1.0)`` reproduces
    ``infty``'s numbers.

    Args:
        rho: radius of the SAM steps (number, 0-d tensor or schedule; the reference's
            ``rho_scheduler``).
        lamb: weight of the flatness gradient.
        strategy: ``"basic"`` (every step) or ``"plus"`` (gated).
        A, k, t0, cof: the ``plus`` gate's initial amplitude, sigmoid slope and centre,
            and amplitude update rate.
        norm_rho: radius of the gradient-norm ascent; ``None`` uses ``rho``.
        adaptive: ASAM-style neighbourhoods.
        eps: the reference's ``perturb_eps``.

    Cost: three extra gradient evaluations on every C-Flat step (every step for
    ``basic``). Needs ``loss_fn`` and ``params``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"c_flat: strategy must be one of {STRATEGIES}, got {strategy!r}")

    def init_fn(params):
        del params
        return CFlatState(torch.zeros((), dtype=torch.int64), torch.tensor(float(A), dtype=torch.float64))

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del extra
        loss_fn = require_loss_fn(loss_fn, "c_flat")
        params = require_params(params, "c_flat")
        current_rho = radius(rho, state.count, "c_flat(rho)")
        current_norm_rho = current_rho if norm_rho is None else radius(norm_rho, state.count, "c_flat(norm_rho)")

        def flat_step():
            probes = flatness_probes(loss_fn, updates, params, current_rho, current_norm_rho, adaptive, eps)
            return tree_add_scaled(probes.sharpness, lamb, tree_sub(probes.flatness, probes.ascent))

        if strategy == "basic":
            return flat_step(), CFlatState(state.count + 1, state.threshold)
        t = (state.count + 1).to(torch.float64)
        gate = state.threshold / (1 + torch.exp(-k * (t - t0))) - tree_norm(updates).to(torch.float64)
        threshold = state.threshold - cof * gate
        new_updates = cond(gate <= 0, flat_step, lambda: updates)
        return new_updates, CFlatState(state.count + 1, threshold)

    return GradientTransformation(init_fn, update_fn)
