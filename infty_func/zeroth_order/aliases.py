"""ZeroFlow's variants as chains of the zeroth-order pieces and a base optimizer."""

from __future__ import annotations

from infty_func.core.base import GradientTransformation, chain
from infty_func.transforms.aliases import adam, sgd
from infty_func.transforms.scale import scale_by_learning_rate
from infty_func.transforms.weight_decay import add_decayed_weights
from infty_func.zeroth_order.conservative import conservative
from infty_func.zeroth_order.forward_gradient import forward_gradient
from infty_func.zeroth_order.spsa import zo_gradient

__all__ = [
    "zo_sgd",
    "zo_adam",
    "zo_sgd_sign",
    "zo_adam_sign",
    "zo_sgd_conserve",
    "zo_adam_conserve",
    "forward_grad",
    "decays_weight",
]


def zo_sgd(
    lr,
    momentum=0.0,
    weight_decay=0.0,
    *,
    zo_eps=1e-3,
    q=1,
    mode="two_side",
    sparsity=None,
    history=None,
    memory_efficient=True,
    seed=0,
    sign=False,
    reduce=None,
) -> GradientTransformation:
    """ZO-SGD (MeZO): :func:`zo_gradient` then :func:`~infty_func.sgd`. ``zo_eps``, ``q``,
    ``mode``, ``sparsity``, ``history``, ``memory_efficient``, ``seed`` and ``reduce`` go
    to the estimator (see :func:`zo_gradient`); the rest to SGD."""
    estimate = zo_gradient(zo_eps, q, mode, sign, sparsity, history, memory_efficient, seed, reduce)
    return chain(estimate, sgd(lr, momentum=momentum, weight_decay=weight_decay))


def zo_adam(
    lr,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.0,
    *,
    zo_eps=1e-3,
    q=1,
    mode="two_side",
    sparsity=None,
    history=None,
    memory_efficient=True,
    seed=0,
    sign=False,
    reduce=None,
) -> GradientTransformation:
    """ZO-Adam: :func:`zo_gradient` then :func:`~infty_func.adam` (``eps`` is Adam's; the
    probe radius is ``zo_eps``)."""
    estimate = zo_gradient(zo_eps, q, mode, sign, sparsity, history, memory_efficient, seed, reduce)
    return chain(estimate, adam(lr, betas=betas, eps=eps, weight_decay=weight_decay))


def zo_sgd_sign(lr, **kwargs) -> GradientTransformation:
    """ZO-signSGD: :func:`zo_sgd` with the sign of each projected difference."""
    return zo_sgd(lr, sign=True, **kwargs)


def zo_adam_sign(lr, **kwargs) -> GradientTransformation:
    """:func:`zo_adam` with the sign of each projected difference."""
    return zo_adam(lr, sign=True, **kwargs)


def zo_sgd_conserve(lr, **kwargs) -> GradientTransformation:
    """:func:`zo_sgd` under the :func:`conservative` accept/reject rule."""
    return conservative(zo_sgd(lr, **kwargs))


def zo_adam_conserve(lr, **kwargs) -> GradientTransformation:
    """:func:`zo_adam` under the :func:`conservative` accept/reject rule."""
    return conservative(zo_adam(lr, **kwargs))


def decays_weight(name: str) -> bool:
    """The reference's forward-gradient weight-decay rule: every parameter except biases
    and layer norms."""
    return not any(part in name for part in ("bias", "layer_norm", "layernorm"))


def forward_grad(lr, weight_decay=0.0, *, n_tangents=1, seed=0) -> GradientTransformation:
    """The reference's ``forward_grad``: ``w ← w − lr (ĝ + weight_decay · w)`` with the
    forward gradient ``ĝ`` (:func:`forward_gradient`), weight decay skipped for biases and
    layer norms (names containing ``bias``, ``layer_norm`` or ``layernorm``)."""
    members = [forward_gradient(seed, n_tangents)]
    if weight_decay:
        members.append(add_decayed_weights(weight_decay, mask=lambda params: {name: decays_weight(str(name)) for name in params}))
    members.append(scale_by_learning_rate(lr))
    return chain(*members)
