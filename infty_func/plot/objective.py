"""What a plot evaluates: a functional objective at some parameters, from either a
``loss_fn(params)`` (or a curvature objective) with ``params``, or a
``(model, loader, criterion)`` triple turned into a dataset objective with
``torch.func.functional_call``.

A plot given a model must leave it as it found it: :func:`model_kept` restores its
parameters, buffers and train/eval mode whatever happens, and evaluates in eval mode (as
``infty.plot`` does), so batch norm uses its running statistics and dropout is off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call

from infty_func.core.tree import PyTree
from infty_func.curvature.objective import DatasetObjective, Objective, as_objective

__all__ = ["PlotTarget", "resolve_target", "model_objective", "model_kept"]


class PlotTarget(NamedTuple):
    objective: Objective | DatasetObjective
    params: PyTree
    model: nn.Module | None  # the module to restore afterwards, when one was given


def model_objective(model: nn.Module, loader: Iterable, criterion: Callable, buffers: dict | None = None) -> DatasetObjective:
    """The mean of ``criterion(model(inputs), targets)`` over ``loader`` as a function of
    the parameters, by ``functional_call`` (the model's own tensors are never touched).

    Each batch is a tuple or list whose last two items are ``inputs, targets`` (so
    ``(x, y)`` and the reference's ``(index, x, y)`` both work); they are moved to the
    parameters' device. ``buffers`` defaults to detached copies of the model's buffers.
    """
    if buffers is None:
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))

    def batch_loss(params: dict, batch: Any) -> torch.Tensor:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError(
                f"each batch must be a tuple (inputs, targets) or (index, inputs, targets), got {type(batch).__name__}"
            )
        inputs, targets = batch[-2].to(device), batch[-1].to(device)
        return criterion(functional_call(model, {**params, **buffers}, (inputs,)), targets)

    return DatasetObjective(batch_loss, loader)


def resolve_target(target: Any, params: PyTree | None, who: str) -> PlotTarget:
    """A :class:`PlotTarget` from a ``loss_fn(params)`` or curvature objective with
    ``params``, or from ``(model, loader, criterion)`` (``params`` then defaults to the
    model's named parameters, detached)."""
    if isinstance(target, tuple):
        if len(target) != 3 or not isinstance(target[0], nn.Module) or not callable(target[2]):
            raise ValueError(f"{who}: a tuple target must be (model, loader, criterion), got {len(target)} items")
        model, loader, criterion = target
        if params is None:
            params = {name: p.detach() for name, p in model.named_parameters()}
        return PlotTarget(model_objective(model, loader, criterion), params, model)
    if params is None:
        raise ValueError(f"{who}: pass params together with a loss_fn(params), or give (model, loader, criterion)")
    try:
        objective = as_objective(target)
    except TypeError as error:
        raise ValueError(
            f"{who}: expected a loss_fn(params), a curvature objective or (model, loader, criterion); {error}"
        ) from None
    return PlotTarget(objective, params, None)


@contextmanager
def model_kept(model: nn.Module | None) -> Iterator[None]:
    """Inside: ``model`` in eval mode. After, even on an error: its parameters, buffers and
    train/eval mode (of every submodule) exactly as before."""
    if model is None:
        yield
        return
    saved = {name: value.detach().clone() for name, value in model.state_dict().items()}
    modes = {name: module.training for name, module in model.named_modules()}
    try:
        model.eval()
        yield
    finally:
        model.load_state_dict(saved, strict=True)
        for name, module in model.named_modules():
            module.training = modes[name]
