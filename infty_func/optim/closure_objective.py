"""An objective ``loss_fn(params)`` built from a ``torch.optim`` closure.

The closure evaluates a module whose parameters the optimizer holds. To evaluate it at
other parameter values (a SAM perturbation, a zeroth-order probe), the parameters' data
is swapped for the given tensors around the call and swapped back after, as are their
``.grad`` fields, so the caller's gradients survive.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, nn

from infty_func.core.batch_norm import frozen_batch_norm


def _accepts_backward(closure: Callable) -> bool:
    try:
        return "backward" in inspect.signature(closure).parameters
    except (TypeError, ValueError):
        return False


class ClosureObjective:
    """``loss_fn`` for transforms, from a closure that zeroes grads, computes the loss,
    calls ``backward`` and returns the loss.

    A closure with a ``backward`` keyword (torchzero's convention,
    ``closure(backward=True)``) is called with ``backward=False`` for value-only
    evaluations, which then build no autograd graph; any other closure runs its backward
    pass even then, and the gradients it leaves are discarded.

    With ``model``, evaluations a transform makes inside ``ifn.perturbed(loss_fn)`` leave
    the model's batch-norm running statistics untouched. ``loss_of`` turns what the
    closure returns into the scalar loss (INFTY closures return ``(logits, loss_list)``);
    by default a tuple's first element, or the value itself.
    """

    def __init__(
        self,
        closure: Callable,
        names: Sequence[str],
        parameters: Sequence[Tensor],
        model: nn.Module | None = None,
        loss_of: Callable | None = None,
    ):
        self.closure = closure
        self.names = list(names)
        self.parameters = list(parameters)
        self.model = model
        self.loss_of = loss_of
        self.backward_flag = _accepts_backward(closure)
        self.calls = 0

    def perturbed(self) -> AbstractContextManager:
        """Freeze the model's batch-norm statistics (when a model was given)."""
        return frozen_batch_norm(self.model) if self.model is not None else nullcontext()

    @contextmanager
    def _at(self, params: dict):
        saved_data = [p.data for p in self.parameters]
        saved_grads = [p.grad for p in self.parameters]
        try:
            for name, p in zip(self.names, self.parameters):
                p.data = params[name].detach()
            yield
        finally:
            for p, data, grad in zip(self.parameters, saved_data, saved_grads):
                p.data = data
                p.grad = grad

    def _loss(self, value) -> Tensor:
        if self.loss_of is not None:
            value = self.loss_of(value)
        elif isinstance(value, tuple):
            value = value[0]
        if not isinstance(value, Tensor):
            raise TypeError(f"the closure must return the loss as a tensor, got {type(value).__name__}")
        return value

    def __call__(self, params: dict) -> Tensor:
        self.calls += 1
        with self._at(params):
            if self.backward_flag:
                with torch.no_grad():
                    return self._loss(self.closure(backward=False)).detach()
            with torch.enable_grad():
                return self._loss(self.closure()).detach()

    def value_and_grad(self, params: dict) -> tuple[Tensor, dict]:
        self.calls += 1
        with self._at(params):
            for p in self.parameters:
                p.grad = None
            with torch.enable_grad():
                value = self._loss(self.closure(backward=True) if self.backward_flag else self.closure())
            grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in zip(self.names, self.parameters)}
        return value.detach(), grads

    def jacobian(self, params: dict):
        raise NotImplementedError(
            "TransformOptimizer closures give one scalar loss; for several objectives use "
            "the functional API (ifn.step with a loss_fn returning m losses)"
        )
