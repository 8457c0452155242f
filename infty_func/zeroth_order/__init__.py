"""Zeroth-order and forward-gradient training: gradient estimates from loss values or
forward-mode products, with no backward graph, seeded by keys."""

from infty_func.zeroth_order.aliases import (
    forward_grad,
    zo_adam,
    zo_adam_conserve,
    zo_adam_sign,
    zo_sgd,
    zo_sgd_conserve,
    zo_sgd_sign,
)
from infty_func.zeroth_order.conservative import conservative
from infty_func.zeroth_order.distributed import all_reduce_mean
from infty_func.zeroth_order.forward_gradient import ForwardGradientState, forward_gradient
from infty_func.zeroth_order.spsa import ZOGradientState, zo_gradient

__all__ = [
    "zo_gradient",
    "ZOGradientState",
    "conservative",
    "all_reduce_mean",
    "forward_gradient",
    "ForwardGradientState",
    "zo_sgd",
    "zo_adam",
    "zo_sgd_sign",
    "zo_adam_sign",
    "zo_sgd_conserve",
    "zo_adam_conserve",
    "forward_grad",
]
