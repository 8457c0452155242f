"""``TransformOptimizer``: any gradient transformation as a ``torch.optim.Optimizer``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation, update_in_place
from infty_func.core.tree import tree_get, tree_get_all, tree_leaves, tree_set
from infty_func.optim.checkpoint import restored, saved_leaves
from infty_func.optim.closure_objective import ClosureObjective

__all__ = ["TransformOptimizer"]


def _split_named(params: Any) -> tuple[list[str], list[Tensor], dict]:
    """Names and tensors from ``model.parameters()``, ``model.named_parameters()`` or one
    param-group dict; the remaining group options come back as a dict."""
    options: dict = {}
    items = list(params)
    if items and isinstance(items[0], dict):
        if len(items) > 1:
            raise ValueError(
                "TransformOptimizer takes one parameter group; for per-group hyperparameters use ifn.partition inside the transform"
            )
        options = {k: v for k, v in items[0].items() if k != "params"}
        items = list(items[0]["params"])
    if not items:
        raise ValueError("TransformOptimizer got an empty parameter list")
    if isinstance(items[0], tuple):
        names = [name for name, _ in items]
        tensors = [tensor for _, tensor in items]
    else:
        names = [str(index) for index in range(len(items))]
        tensors = items
    for name, tensor in zip(names, tensors):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"parameter {name!r} is a {type(tensor).__name__}, not a tensor")
    if len(set(names)) != len(names):
        raise ValueError("parameter names must be unique")
    return names, tensors, options


class TransformOptimizer(torch.optim.Optimizer):
    """Run a :class:`~infty_func.GradientTransformation` as a ``torch.optim.Optimizer``.

    ``TransformOptimizer(model.named_parameters(), ifn.chain(ifn.clip_by_global_norm(1.0),
    ifn.sgd(0.1, momentum=0.9)))`` then ``opt.step(closure)`` or ``loss.backward();
    opt.step()``.

    * The transform sees the parameters as a dict ``name -> tensor`` (names are
      ``"0", "1", ...`` when plain ``parameters()`` are given), their ``.grad`` as the
      incoming updates (a missing grad counts as zero), and ``loss_fn``/``value`` extras
      built from the closure (see :class:`ClosureObjective`).
    * When the transform keeps exactly one learning rate in its state (every alias does),
      it appears as ``param_groups[0]["lr"]``; a value set there, by hand or by any
      ``torch.optim.lr_scheduler``, reaches the transform at the next step.
    * With ``model=``, the re-evaluations a transform makes away from the current
      parameters (SAM's ascent point, zeroth-order probes) leave the model's batch-norm
      running statistics untouched, as ``infty`` does.
    * ``state_dict`` / ``load_state_dict`` save and restore the transform's state, so a
      resumed run is bit-identical to an uninterrupted one.
    * Results equal the functional path (``update`` then ``apply_updates``) bit for bit.
      The optimizer owns the transform's state, so it steps through
      :func:`~infty_func.update_in_place`: members that have an in-place form (Adam, the
      learning rate) overwrite their buffers instead of allocating new ones, and the final
      addition runs in place.
    """

    def __init__(self, params: Iterable[Any], transform: GradientTransformation, model: torch.nn.Module | None = None):
        if not isinstance(transform, GradientTransformation):
            raise TypeError(f"TransformOptimizer needs a GradientTransformation, got {type(transform).__name__}")
        names, tensors, options = _split_named(params)
        super().__init__([{"params": tensors, **options}], {})
        self.transform = transform
        self.model = model
        self._names = names
        self.transform_state = transform.init(self._params_tree())
        learning_rates = tree_get_all(self.transform_state, "lr")
        self._has_lr = len(learning_rates) == 1
        if self._has_lr:
            self.param_groups[0].setdefault("lr", float(learning_rates[0]))
            self._sync_lr()

    # -- views ---------------------------------------------------------------------------
    def _params_tree(self) -> dict:
        return {name: p.detach() for name, p in zip(self._names, self.param_groups[0]["params"])}

    def _grads_tree(self) -> dict:
        return {
            name: (p.grad.detach() if p.grad is not None else torch.zeros_like(p))
            for name, p in zip(self._names, self.param_groups[0]["params"])
        }

    def _sync_lr(self) -> None:
        if not self._has_lr:
            return
        lr = self.param_groups[0]["lr"]
        current = tree_get_all(self.transform_state, "lr")[0]
        if float(current) != float(lr):
            self.transform_state = tree_set(self.transform_state, lr=lr)

    # -- stepping ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        """One update; ``closure`` (optional) recomputes the loss and its gradient."""
        parameters = self.param_groups[0]["params"]
        extra: dict[str, Any] = {}
        loss = None
        if closure is not None:
            objective = ClosureObjective(closure, self._names, parameters, model=self.model)
            if self.transform.needs_gradient:
                with torch.enable_grad():
                    loss = closure()
            elif self.transform.needs_value:
                loss = objective(self._params_tree())
            extra["loss_fn"] = objective
            extra["value"] = objective._loss(loss).detach() if loss is not None else None
        self._sync_lr()
        grads = self._grads_tree() if self.transform.needs_gradient else None
        # The optimizer owns its state, so the transform may reuse its buffers; the grads
        # belong to the user (owned=False) and are never written.
        updates, self.transform_state, _ = update_in_place(
            self.transform, grads, self.transform_state, self._params_tree(), owned=False, **extra
        )
        torch._foreach_add_(list(parameters), tree_leaves(updates))
        if loss is None and closure is not None:
            # A method that never evaluates f(w) (two-sided zeroth order) keeps an estimate.
            loss = tree_get(self.transform_state, "loss")
        return loss

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self._names)))
        group["names"] = list(self._names)
        return {
            "state": {"transform": saved_leaves(self.transform_state)},
            "param_groups": [group],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        state = restored(
            self.transform_state,
            state_dict["state"]["transform"],
            "this transform",
            "; was it saved from the same transform? (an aggregator built without m= adds its "
            "diagnostics at the first step: build it with m= to checkpoint before stepping)",
        )
        for index, (old, new) in enumerate(zip(tree_leaves(self.transform_state), tree_leaves(state))):
            if old.shape != new.shape:
                raise ValueError(f"saved state tensor {index} has shape {tuple(new.shape)}, expected {tuple(old.shape)}")
        self.transform_state = state
        group = state_dict["param_groups"][0]
        for key, value in group.items():
            if key not in ("params", "names"):
                self.param_groups[0][key] = value
