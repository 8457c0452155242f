"""GradMin: descend the magnitude of the gradient instead of the loss (after
``torchzero``'s experimental ``GradMin``). Not expected to be practical."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from torch.func import grad_and_value

from infty_func.core.base import EmptyState, GradientTransformation
from infty_func.core.objective import require_functional_loss_fn, require_loss_fn, require_params, total_loss, value_and_grad
from infty_func.core.tree import PyTree, tree_leaves

__all__ = ["grad_min", "grad_min_objective"]

_NAME = "grad_min"
_COUPLINGS = (None, "loss_to_grad", "grad_to_loss")

Coupling = Literal["loss_to_grad", "grad_to_loss"] | None


def _check(loss_term, relative, graft) -> None:
    if relative not in _COUPLINGS:
        raise ValueError(f"{_NAME}: relative must be one of {_COUPLINGS}, got {relative!r}")
    if graft not in _COUPLINGS:
        raise ValueError(f"{_NAME}: graft must be one of {_COUPLINGS}, got {graft!r}")
    if loss_term is not None and not isinstance(loss_term, (int, float)):
        raise ValueError(f"{_NAME}: loss_term must be a number or None, got {type(loss_term).__name__}")
    if relative is not None and graft is not None:
        warnings.warn(f"{_NAME}: relative and graft are both set; they act on the same terms and clash", stacklevel=3)


def grad_min_objective(
    loss_fn: Callable[[PyTree], Tensor],
    loss_term: float | None = 0.0,
    relative: Coupling = None,
    graft: Coupling = None,
    square: bool = False,
    mean: bool = True,
    maximize_grad: bool = False,
) -> Callable[[PyTree], Tensor]:
    """The reformulated objective ``F(θ)`` that :func:`grad_min` descends, as a
    ``loss_fn`` (differentiable by ``torch.func``); pass it to any transform, e.g. a line
    search, that should see ``F`` rather than ``f``. Arguments as in :func:`grad_min`."""
    _check(loss_term, relative, graft)
    return _objective(loss_fn, loss_term, relative, graft, square, mean, maximize_grad)


def _objective(loss_fn, loss_term, relative, graft, square, mean, maximize_grad) -> Callable[[PyTree], Tensor]:
    """:func:`grad_min_objective` without the argument checks (made once, when built)."""
    loss = total_loss(loss_fn)

    def objective(params: PyTree) -> Tensor:
        gradient, value = grad_and_value(loss)(params)
        leaves = tree_leaves(gradient)
        magnitudes = [leaf.square() if square else leaf.abs() for leaf in leaves]
        total = torch.stack([m.sum() for m in magnitudes]).sum()
        f = total / sum(leaf.numel() for leaf in leaves) if mean else total
        if graft == "grad_to_loss":
            f = f * (value.detach() / f.detach())
        if relative == "grad_to_loss":
            f = f * value
        if loss_term:
            weight = loss_term * f if relative == "loss_to_grad" else loss_term
            term = value * (f.detach() / value.detach()) if graft == "loss_to_grad" else value
            f = f + term * weight
        return -f if maximize_grad else f

    return objective


def grad_min(
    loss_term: float | None = 0.0,
    relative: Coupling = None,
    graft: Coupling = None,
    square: bool = False,
    mean: bool = True,
    maximize_grad: bool = False,
) -> GradientTransformation:
    """GradMin: the update is ``∇F(θ)``, the gradient of the gradient's magnitude

        F = mean_i |∂f/∂θ_i|     (``square``: (∂f/∂θ_i)²; ``mean=False``: the sum)

    found by differentiating through ``∇f`` with ``torch.func`` (a Hessian-vector product,
    ``∇F = H·∂F/∂g``), plus optionally the loss: ``F + loss_term·f``. Every point with
    ``∇f = 0`` minimises ``F``, maxima and saddles of ``f`` as much as its minima, and
    ``∇F`` also vanishes wherever ``∂F/∂g`` lies in the null space of ``H``. Chain a step
    size after it; it ignores the incoming update (and so asks :func:`infty_func.step` for
    no gradient of ``f``, only the value).

    torchzero's warning applies: this is not expected to be practical. It does not
    converge faster than gradient descent on ``f`` (squared, it is gradient descent on a
    problem with the condition number squared), and with ``|·|`` (the default) its
    objective is not smooth at the optimum.

    Args:
        loss_term: weight of ``f`` added to ``F`` (``0`` or ``None``: none).
        relative: ``"grad_to_loss"`` multiplies ``F`` by ``f``; ``"loss_to_grad"`` makes
            the loss term's weight ``loss_term·F``.
        graft: ``"grad_to_loss"`` rescales ``F`` to the value of ``f`` (gradient scaled by
            the constant ``f/F``); ``"loss_to_grad"`` rescales the loss term to the value of
            ``F``.
        square: squared gradient entries instead of absolute values.
        mean: mean over all entries of all leaves; ``False``: sum.
        maximize_grad: ascend ``F`` instead (``−F``).

    As ``torchzero.modules.experimental.GradMin`` (which wraps its child modules): here the
    modules that should see ``F`` follow in a chain. Those that evaluate the objective
    themselves (line searches) should be given :func:`grad_min_objective` as ``loss_fn``,
    as torchzero's ``modify_loss=True`` does. ``create_graph`` is not taken.
    """
    _check(loss_term, relative, graft)

    def init_fn(params):
        del params
        return EmptyState()

    def update_fn(updates, state, params=None, loss_fn=None, **extra):
        del updates, extra
        loss_fn = require_loss_fn(loss_fn, _NAME)
        params = require_params(params, _NAME)
        require_functional_loss_fn(loss_fn, _NAME, "the gradient of the gradient")
        objective = _objective(loss_fn, loss_term, relative, graft, square, mean, maximize_grad)
        # Outside torch.func transforms the outer derivative is plain autograd (1.3× faster).
        _, gradient = value_and_grad(objective)(params)
        return gradient, state

    return GradientTransformation(init_fn, update_fn, needs_gradient=False)
