"""Batch-norm running statistics during re-evaluations away from the current parameters.

Methods such as SAM evaluate the loss at perturbed parameters. In training mode a batch-norm
layer would fold those perturbed batch statistics into its running mean and variance,
which then describe a model that was never trained. The reference (``infty``) sets the
layers' momentum to zero around its perturbed passes; the helpers here do the same, so the
running statistics (and ``num_batches_tracked``) end exactly as the reference leaves them.

A transform that re-evaluates ``loss_fn`` enters ``ifn.perturbed(loss_fn)`` around the
call; objectives built with :func:`freeze_batch_norm_when_perturbed` (and the closures of
:class:`~infty_func.optim.TransformOptimizer` given ``model=``) freeze the statistics
there, and only there: the pass at the current parameters still updates them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["frozen_batch_norm", "freeze_batch_norm_when_perturbed", "FrozenBatchNormObjective"]


@contextmanager
def frozen_batch_norm(model: nn.Module) -> Iterator[None]:
    """Inside the block, no batch-norm layer of ``model`` changes its running statistics.

    Their momentum is set to 0 (``running = 1·running + 0·batch``) and restored on exit,
    also when the block raises. Normalisation itself still uses the batch statistics in
    training mode, so losses and gradients are unchanged. As in ``infty``,
    ``num_batches_tracked`` still counts the frozen passes; it only matters for layers
    built with ``momentum=None`` (a cumulative average), whose later updates it weights.
    """
    layers = [module for module in model.modules() if isinstance(module, _BatchNorm)]
    saved = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 0.0
        yield
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum


class FrozenBatchNormObjective:
    """``loss_fn`` unchanged, plus a ``perturbed()`` context that freezes ``model``'s
    batch-norm statistics. Build it with :func:`freeze_batch_norm_when_perturbed`."""

    def __init__(self, loss_fn: Callable, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"freeze_batch_norm_when_perturbed needs an nn.Module, got {type(model).__name__}")
        self.loss_fn = loss_fn
        self.model = model
        # Keep objectives that bring their own derivatives (closures) working as before.
        for name in ("value_and_grad", "jacobian"):
            if hasattr(loss_fn, name):
                setattr(self, name, getattr(loss_fn, name))

    def __call__(self, params):
        return self.loss_fn(params)

    def perturbed(self):
        return frozen_batch_norm(self.model)


def freeze_batch_norm_when_perturbed(loss_fn: Callable, model: nn.Module) -> FrozenBatchNormObjective:
    """Wrap a module-based ``loss_fn`` so that evaluations a transform makes away from the
    current parameters (SAM's ascent point, zeroth-order probes) leave ``model``'s
    batch-norm running statistics untouched, as ``infty`` does.

    ``ifn.step(ifn.chain(ifn.sam(0.05), ifn.sgd(0.1)), state, params,
    ifn.freeze_batch_norm_when_perturbed(loss_fn, model))``
    """
    return FrozenBatchNormObjective(loss_fn, model)
