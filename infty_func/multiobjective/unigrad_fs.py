"""UniGrad-FS: a SAM step from the summed gradient, then GradVac on the two objectives'
gradients at the perturbed point (old task, new task)."""

from __future__ import annotations

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import jacobian, perturbed, require_loss_fn, require_params
from infty_func.core.tree import tree_flatten, tree_unflatten
from infty_func.geometry.perturbation import Radius, ascent_point, radius
from infty_func.multiobjective.gradvac import gradvac
from infty_func.multiobjective.jacobian import jacobian_rows

__all__ = ["unigrad_fs"]


def unigrad_fs(
    rho: Radius = 0.05,
    target: float = 0.1,
    beta: float = 0.9,
    granularity: str = "model",
    adaptive: bool = False,
    eps: float = 1e-12,
) -> GradientTransformation:
    """UniGrad-FS (the ``infty`` reference's algorithm): with the Jacobian ``J`` of the two
    losses (old task, new task) at ``w`` as the incoming update,

    1. ``e`` = the SAM step of radius ``rho`` from the summed gradient ``Σ_i g_i``
       (:func:`~infty_func.sam`'s, ASAM with ``adaptive``);
    2. ``J'`` = the Jacobian at ``w + e`` (one forward, two pullbacks);
    3. the update is :func:`gradvac` on ``J'`` (``pairs="first"``, targets and ``beta`` in
       the state, ``granularity`` model or layer).

    On the first task there is no old task: a Jacobian with one row is passed through as
    the plain gradient, as the reference does. More than two rows is an error.

    Built from the geometry pieces (the ascent step) and the GradVac aggregator; ``rho``
    may be a schedule. Needs ``loss_fn`` returning the two losses and ``params``.

    Departure from ``infty.optim.UniGrad_FS``: it restores the weights before its backward
    passes, so its "perturbed" gradients mix activations at ``w + e`` with weights at
    ``w`` (they equal the true ones only for a single linear layer); this computes the
    true gradients at ``w + e``.
    """
    aggregate = gradvac(beta, target, granularity, m=2, pairs="first")

    def init_fn(params):
        return aggregate.init(params), torch.zeros((), dtype=torch.int64)

    def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
        del extra
        leaves, spec, m = jacobian_rows(updates, "unigrad_fs")
        aggregator_state, count = state
        if m == 1:
            return tree_unflatten([leaf[0] for leaf in leaves], spec), (aggregator_state, count + 1)
        if m != 2:
            raise ValueError(
                f"unigrad_fs needs exactly 2 losses (old task, new task), got {m}; pass loss_fn returning a tensor of shape [2]"
            )
        loss_fn = require_loss_fn(loss_fn, "unigrad_fs")
        params = require_params(params, "unigrad_fs")
        summed = tree_unflatten([leaf.sum(0) for leaf in leaves], spec)
        point = ascent_point(summed, params, radius(rho, count, "unigrad_fs"), adaptive, eps)
        with perturbed(loss_fn):
            _, perturbed_jacobian = jacobian(loss_fn)(point)
        rows = tree_flatten(perturbed_jacobian)[0]
        if rows[0].shape[0] != 2:
            raise ValueError(f"unigrad_fs: loss_fn returned {rows[0].shape[0]} losses at the perturbed point, expected 2")
        out, aggregator_state = aggregate.update(perturbed_jacobian, aggregator_state, params)
        return out, (aggregator_state, count + 1)

    return GradientTransformation(init_fn, update_fn)
