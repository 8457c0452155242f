"""A trust region in the L∞ norm, its subproblem solved by ``scipy.optimize.lsq_linear``
(after ``torchzero``'s experimental ``InfinityNormTrustRegion``)."""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.control import refuse_vmap
from infty_func.core.objective import (
    evaluate,
    perturbed,
    require_functional_loss_fn,
    require_loss_fn,
    require_params,
    summed,
    total_loss,
)
from infty_func.core.tree import tree_map, tree_ravel
from infty_func.experimental.hessian_model import HessianModel, hessian_model

__all__ = ["infinity_norm_trust_region", "InfinityNormTrustRegionState"]

_NAME = "infinity_norm_trust_region"


class InfinityNormTrustRegionState(NamedTuple):
    count: Tensor  # int64: updates made (the Hessian model is refreshed when count % update_freq == 0)
    trust_radius: Tensor  # float64: r, the bound on ‖d‖∞
    hessian: Any  # the Hessian model's state; its .matrix is B


def infinity_norm_trust_region(
    hess_model: str | HessianModel,
    prefer_dense: bool = True,
    tol: float = 1e-10,
    eta: float = 0.0,
    nplus: float = 3.5,
    nminus: float = 0.25,
    rho_good: float = 0.99,
    rho_bad: float = 1e-4,
    boundary_tol: float | None = None,
    init: float = 1.0,
    max_attempts: int = 10,
    radius_strategy: str = "default",
    update_freq: int = 1,
) -> GradientTransformation:
    """Trust-region steps bounded in the L∞ norm (after ``torchzero``'s
    ``InfinityNormTrustRegion``; the radius rule follows Conn, Gould & Toint,
    *Trust-Region Methods*, 2000, ch. 6, with the parameter values of Gould et al. 2005,
    "Sensitivity of trust-region algorithms to their parameters").

    With ``g`` the incoming update (the gradient, or what earlier transforms made of it),
    ``B`` the Hessian model and ``r`` the radius, the step ``d`` solves the box-bounded
    linear least-squares problem

    ``d = argmin_{‖d‖∞ ≤ r} ‖B d − g‖²``

    with ``scipy.optimize.lsq_linear`` (trust-region reflective, tolerance ``tol``), and
    the update is ``−d``. Note this is the least-squares residual of the Newton equation
    ``B d = g`` over the box, not the quadratic model ``gᵀd − ½dᵀBd``: the two agree in
    the interior for positive definite ``B``, not on the boundary. The trial point is
    judged by ``ρ = (f(x) − f(x − d)) / max(gᵀd − ½ dᵀBd, 2·tiny)``:

    * ``ρ < rho_bad`` or ``f(x − d)`` not finite: ``r ← nminus·‖d‖∞``;
    * ``ρ > rho_good``: ``r ← max(r, nplus·‖d‖∞)`` when ``boundary_tol`` is ``None`` or
      ``(r − ‖d‖∞)/r < boundary_tol`` (the step reached the boundary);
    * a radius under ``2·tiny`` or over ``max/2`` of the dtype restarts from ``init``;
    * the step is taken when ``ρ > eta`` and ``f(x − d)`` is finite; otherwise the
      subproblem is solved again with the new radius, at most ``max_attempts`` times, and
      the update is zero if none is taken.

    ``radius_strategy="fixed"`` always takes the step with ``r = init`` (no trial
    evaluation). Costs per attempt: one ``lsq_linear`` on an ``n × n`` matrix and one
    evaluation of ``loss_fn``; plus the model's update (the Newton model: a full
    Hessian, ``n²`` memory): for problems of up to a few hundred parameters.

    Args:
        hess_model: ``"newton"`` (the exact Hessian, ``n`` batched Hessian-vector
            products; ``loss_fn`` must be differentiable twice, so not a
            ``TransformOptimizer`` closure), ``"bfgs"`` (BFGS estimate of the Hessian from successive gradients;
            works with closures), or a :class:`~infty_func.experimental.hessian_model.HessianModel`
            such as ``newton_hessian(damping)`` / ``bfgs_hessian(init_scale, ...)``.
            ``torchzero`` takes any module with a Hessian approximation
            (``hess_module=tz.m.Newton()``, ``tz.m.BFGS(inverse=False)``, ...).
        prefer_dense: give ``lsq_linear`` the dense matrix (its exact solver); ``False``
            gives it a ``scipy.sparse.linalg.LinearOperator`` (its LSMR solver).
        tol: ``lsq_linear``'s tolerance.
        eta: acceptance threshold on ``ρ``.
        nplus, nminus: growth and shrink factors of the radius.
        rho_good, rho_bad: ``ρ`` above which the radius may grow, below which it shrinks.
        boundary_tol: grow only when the step is within this relative distance of the
            boundary; ``None`` always allows growth.
        init: initial radius, and the radius after a restart.
        max_attempts: subproblem solves per update before giving up (zero update).
        radius_strategy: ``"default"`` (the rule above) or ``"fixed"``.
        update_freq: refresh the Hessian model every this many updates.

    Needs ``loss_fn`` (``update(grads, state, params, loss_fn=...)`` or ``ifn.step``) and
    uses ``value`` (the loss at ``params``) when given. Its output is the step itself:
    use it alone, not followed by a learning rate.

    Not vmappable: the subproblem is solved by SciPy on the host, so the update raises a
    ``ValueError`` under ``torch.func.vmap`` (loop over the members instead).

    Differences from ``torchzero`` 0.4.4:

    * ``torchzero`` passes ``lsq_linear`` a tolerance read from a setting named
      ``"bounds"`` that does not exist, so every step raises ``KeyError``; here ``tol`` is
      used, as its docstring intends.
    * ``torchzero`` measures the step with ``torch.amax(d)``, the largest *signed* entry,
      not ``‖d‖∞``: a step whose entries are all negative gets a negative "radius", which
      its overflow check then resets to ``init`` (a failed step grows the region instead
      of shrinking it). Here the radius rule uses ``‖d‖∞ = max|dᵢ|``, which is what the
      L∞ trust region needs; its ``LinAlgError`` fallback (scale ``g`` to the radius,
      restart the Hessian model) likewise uses ``max|gᵢ|``.
    * ``torchzero`` warns at every step when ``eta > rho_bad``; here once, when built.
    * ``torchzero``'s ``inner=`` is ``chain(inner, infinity_norm_trust_region(...))``
      here; the BFGS model then sees the inner transform's output instead of the raw
      gradient.
    """
    model = hessian_model(hess_model, _NAME)
    if radius_strategy not in ("default", "fixed"):
        raise ValueError(f"{_NAME}: radius_strategy must be 'default' or 'fixed', got {radius_strategy!r}")
    if not (isinstance(max_attempts, int) and max_attempts >= 1):
        raise ValueError(f"{_NAME}: max_attempts must be an int ≥ 1, got {max_attempts!r}")
    if not (isinstance(update_freq, int) and update_freq >= 1):
        raise ValueError(f"{_NAME}: update_freq must be an int ≥ 1, got {update_freq!r}")
    if not (init > 0 and math.isfinite(init)):
        raise ValueError(f"{_NAME}: init (the initial radius) must be positive and finite, got {init!r}")
    if not (nplus >= 1 and 0 < nminus < 1):
        raise ValueError(f"{_NAME}: need nplus ≥ 1 and 0 < nminus < 1, got nplus={nplus!r}, nminus={nminus!r}")
    if not (tol > 0):
        raise ValueError(f"{_NAME}: tol must be positive, got {tol!r}")
    if eta > rho_bad:
        warnings.warn(
            f"{_NAME}: eta={eta} > rho_bad={rho_bad}: steps with rho_bad < ρ ≤ eta are rejected "
            "without shrinking the region, which can stall it",
            stacklevel=2,
        )

    def init_fn(params):
        x, _ = tree_ravel(params)
        return InfinityNormTrustRegionState(
            torch.zeros((), dtype=torch.int64), torch.tensor(float(init), dtype=torch.float64), model.init(x.detach())
        )

    def update_fn(updates, state, params=None, loss_fn=None, value=None, **extra):
        del extra
        refuse_vmap(_NAME, "solves its subproblem with SciPy on the host", params, updates)
        loss_fn = require_loss_fn(loss_fn, _NAME)
        params = require_params(params, _NAME)
        if model.differentiates_twice:
            needs = "second derivatives (or use hess_model='bfgs')"
            require_functional_loss_fn(loss_fn, f"{_NAME} with hess_model={model.name!r}", needs)
        x, unflatten = tree_ravel(params)
        g, _ = tree_ravel(updates)
        f = float(summed(value if value is not None else evaluate(loss_fn, params)))
        objective = total_loss(loss_fn)
        hessian = state.hessian
        # Refresh on schedule, and always after a failed solve reset the model (a reset
        # Newton model holds zeros until it is recomputed).
        if int(state.count) % update_freq == 0 or not bool(hessian.started):
            hessian = model.update(hessian, x, g, lambda v: objective(unflatten(v)))
        matrix = hessian.matrix
        finfo = torch.finfo(g.dtype)
        radius, success, step = float(state.trust_radius), False, torch.zeros_like(g)
        for _ in range(max_attempts):
            step, solve_failed = _box_least_squares(matrix, g, radius, tol, prefer_dense)
            if solve_failed:
                hessian = model.init(x)
            if radius_strategy == "fixed":
                radius, success = float(init), True
                break
            trial = tree_map(torch.sub, params, unflatten(step))
            with perturbed(loss_fn):
                trial_loss = summed(evaluate(loss_fn, trial))
            finite = math.isfinite(float(trial_loss))
            predicted = g.dot(step) - 0.5 * step.dot(matrix @ step)
            rho = (f - trial_loss) / predicted.clip(min=finfo.tiny * 2)
            step_radius = step.abs().amax()
            if rho < rho_bad or not finite:
                radius = float(step_radius * nminus)
            elif rho > rho_good and (boundary_tol is None or (radius - step_radius) / radius < boundary_tol):
                radius = max(radius, float(step_radius * nplus))
            if radius < finfo.tiny * 2 or radius > finfo.max / 2:
                radius = float(init)
            success = bool(rho > eta) and finite
            if success:
                break
        new_updates = unflatten(-step) if success else tree_map(torch.zeros_like, params)
        new_state = InfinityNormTrustRegionState(state.count + 1, torch.tensor(radius, dtype=torch.float64), hessian)
        return new_updates, new_state

    return GradientTransformation(init_fn, update_fn)


def _box_least_squares(matrix: Tensor, g: Tensor, radius: float, tol: float, dense: bool) -> tuple[Tensor, bool]:
    """``argmin_{‖d‖∞ ≤ radius} ‖B d − g‖²`` by ``lsq_linear``, and whether it failed (then
    ``g`` scaled into the box is returned instead)."""
    from scipy.optimize import lsq_linear  # imported on use: SciPy's optimizers add 0.3 s to import infty_func
    from scipy.sparse.linalg import LinearOperator

    array = matrix.detach().cpu().numpy().astype(np.float64)
    operator = array
    if not dense:  # matrix-free: lsq_linear then uses LSMR
        operator = LinearOperator(array.shape, matvec=array.__matmul__, rmatvec=array.T.__matmul__, dtype=np.float64)
    try:
        solution = lsq_linear(operator, g.detach().cpu().numpy().astype(np.float64), tol=tol, bounds=(-radius, radius)).x
    except np.linalg.LinAlgError:
        largest = g.abs().amax()
        return (g * (radius / largest) if largest > radius else g), True
    return torch.as_tensor(solution, dtype=g.dtype, device=g.device), False
