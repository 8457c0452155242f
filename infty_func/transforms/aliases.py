"""Ready optimizers with ``torch.optim``'s argument names, each a chain of building blocks.

Each alias reproduces the corresponding ``torch.optim`` class update for update (tested to
1e-10 in float64 over 200 steps). The learning rate is kept in the state, so
``ifn.tree_set(state, lr=...)`` changes it and the adapter's ``param_groups`` reach it.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from infty_func.core.base import GradientTransformation, chain, identity
from infty_func.transforms.adam import scale_by_adam
from infty_func.transforms.momentum import trace
from infty_func.transforms.rms import scale_by_rms
from infty_func.transforms.scale import scale_by_learning_rate
from infty_func.transforms.weight_decay import add_decayed_weights

__all__ = ["sgd", "adam", "adamw", "rmsprop"]

LearningRate = float | Tensor | Callable[[Tensor], Tensor]


def _present(value: float | Tensor) -> bool:
    """Whether an optional piece is needed: a number that is nonzero, or any tensor
    (a tensor comes from inject_hyperparams and may change between steps)."""
    return isinstance(value, Tensor) or value != 0


def _decay(weight_decay: float | Tensor) -> GradientTransformation:
    return add_decayed_weights(weight_decay) if _present(weight_decay) else identity()


def sgd(
    lr: LearningRate = 1e-3,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> GradientTransformation:
    """Stochastic gradient descent as ``torch.optim.SGD`` (``dampening=0``).

    ``d = g + weight_decay·w``; with momentum ``b ← momentum·b + d`` and ``d = b`` (or
    ``d + momentum·b`` with ``nesterov``); ``w ← w - lr·d``.
    """
    if nesterov and not _present(momentum):
        raise ValueError("sgd: nesterov momentum needs momentum > 0")
    return chain(
        _decay(weight_decay),
        trace(momentum, nesterov) if _present(momentum) else identity(),
        scale_by_learning_rate(lr),
    )


def adam(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
) -> GradientTransformation:
    """Adam as ``torch.optim.Adam`` (Kingma & Ba, 2015): L2 ``weight_decay`` is added to
    the gradient before the moments."""
    return chain(
        _decay(weight_decay),
        scale_by_adam(betas[0], betas[1], eps, amsgrad),
        scale_by_learning_rate(lr),
    )


def adamw(
    lr: LearningRate = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
) -> GradientTransformation:
    """AdamW as ``torch.optim.AdamW`` (Loshchilov & Hutter, 2019): decay decoupled from
    the moments, ``w ← w - lr·(adam_direction + weight_decay·w)``."""
    return chain(
        scale_by_adam(betas[0], betas[1], eps, amsgrad),
        _decay(weight_decay),
        scale_by_learning_rate(lr),
    )


def rmsprop(
    lr: LearningRate = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
) -> GradientTransformation:
    """RMSprop as ``torch.optim.RMSprop`` (Tieleman & Hinton, 2012): with momentum
    ``b ← momentum·b + g/(sqrt(v)+eps)`` and ``w ← w - lr·b``."""
    return chain(
        _decay(weight_decay),
        scale_by_rms(alpha, eps, centered),
        trace(momentum) if _present(momentum) else identity(),
        scale_by_learning_rate(lr),
    )
