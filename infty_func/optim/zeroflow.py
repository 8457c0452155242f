"""INFTY's ``ZeroFlow`` optimizer over the zeroth-order transforms, with INFTY's
constructor, ``args`` and closure contract.

``opt = ifn.optim.ZeroFlow(model.parameters(), torch.optim.SGD(model.parameters(), lr=1e-3),
model, args={"inftyopt": "zo_sgd", "zo_eps": 1e-3})``; each step ``opt.set_closure(fn)``
with ``fn() -> (logits, loss_list)`` and ``logits, loss_list = opt.step()``
(``forward_grad``: ``opt.set_closure(fn, batch)`` with
``fn(params_list, names, buffers, model, batch) -> (logits, loss_list)``, as INFTY).

The class owns the parameters, so it perturbs them in place
(:mod:`infty_func.zeroth_order.in_place`); with ``memory_efficient=True`` it also hands the
estimate to the base optimizer one parameter at a time, so a step needs one inference pass
and one temporary the size of the largest parameter above the model. The numbers are those of the functional
transforms (``ifn.zo_sgd`` and friends) with the same seed, up to the rounding of the
in-place perturbation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.func import jvp

from infty_func.core import random
from infty_func.core.tree import tree_leaves
from infty_func.optim.checkpoint import restored, saved_leaves
from infty_func.optim.infty_shell import InftyShell, check_args, stacked_losses
from infty_func.zeroth_order.aliases import decays_weight
from infty_func.zeroth_order.in_place import estimate_in_place
from infty_func.zeroth_order.spsa import MODES, zo_gradient

__all__ = ["ZeroFlow"]

INFTYOPTS = (
    "zo_sgd",
    "zo_adam",
    "zo_sgd_sign",
    "zo_adam_sign",
    "zo_sgd_conserve",
    "zo_adam_conserve",
    "forward_grad",
)


class ZeroFlow(InftyShell, torch.optim.Optimizer):
    """INFTY's ``ZeroFlow``. ``args``: ``inftyopt`` (one of :data:`INFTYOPTS`), ``q`` (1),
    ``zo_eps`` (1e-3), ``perturbation_mode`` (``"two_side"``/``"one_side"``),
    ``use_history_grad`` (False), ``alpha`` (0.9), ``gradient_sparsity`` (None, a fraction
    or a dict name -> fraction), ``memory_efficient`` (False), and ``seed`` (0; INFTY draws
    from the global RNG instead). ``lr`` and ``weight_decay`` keywords are used by
    ``forward_grad``, which, like INFTY's, updates the parameters itself.

    Differences from INFTY, by design: noise comes from ``seed`` through the library's
    keyed generator (reproducible, no global RNG); a sparsity fraction zeroes a fresh
    random fraction of each direction (see :func:`~infty_func.zo_gradient`). The
    ``*_conserve`` variants step the base optimizer as INFTY does (``+g``, ``−2g``, then
    ``+g`` or ``+2g``), so the numbers match INFTY for any base optimizer; the functional
    :func:`~infty_func.conservative` updates its inner optimizer once.
    """

    DEFAULTS: ClassVar[dict] = {
        "q": 1,
        "inftyopt": "zo_sgd",
        "perturbation_mode": "two_side",
        "zo_eps": 0.001,
        "use_history_grad": False,
        "alpha": 0.9,
        "gradient_sparsity": None,
        "memory_efficient": False,
        "seed": 0,
    }

    def __init__(self, params, base_optimizer: torch.optim.Optimizer, model: torch.nn.Module, args: dict | None = None, **kwargs):
        check_args("ZeroFlow", args, self.DEFAULTS)
        super().__init__(params, {"lr": 1e-3, **kwargs})
        merged = {**self.DEFAULTS, **(args or {})}
        for key, value in merged.items():
            setattr(self, key, value)
        if self.inftyopt not in INFTYOPTS:
            raise ValueError(f"ZeroFlow: unknown inftyopt {self.inftyopt!r}; use one of {INFTYOPTS}")
        if self.perturbation_mode not in MODES:
            raise ValueError(f"ZeroFlow: unknown perturbation_mode {self.perturbation_mode!r}; use one of {MODES}")
        if self.inftyopt.endswith("conserve") and self.q != 1:
            raise ValueError(f"ZeroFlow: {self.inftyopt} takes q=1 (as INFTY), got q={self.q}")
        self.model = model
        self.base_optimizer = base_optimizer
        self.name = "zeroflow"  # infty's attribute
        self.sign = self.inftyopt.endswith("sign")
        self._named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        # The estimator validates q, eps, mode and sparsity, and owns the state layout.
        self.estimator = zo_gradient(
            self.zo_eps,
            self.q,
            self.perturbation_mode,
            self.sign,
            self.gradient_sparsity,
            self.alpha if self.use_history_grad else None,
            self.memory_efficient,
            self.seed,
        )
        self.zo_state = self.estimator.init({name: p.detach() for name, p in self._named})
        self.forward_func = None
        self.functional_call_loss = None
        self.batch = None

    # -- INFTY's interface ---------------------------------------------------------------
    def set_closure(self, loss_fn, batch=None) -> None:
        """``loss_fn() -> (logits, loss_list)``; for ``forward_grad``,
        ``loss_fn(params_list, names, buffers, model, batch)`` and the ``batch``."""
        if batch is None:
            self.forward_func = loss_fn
        else:
            self.functional_call_loss = loss_fn
            self.batch = batch

    def step(self, closure=None, delay: bool = False):
        """One step; returns ``(logits, loss_list)`` at the last query's ``w + εz``, as INFTY."""
        del delay
        self._refresh_trainable()
        if self.inftyopt == "forward_grad":
            return self._forward_grad_step()
        forward = self._closure(closure, self.forward_func)
        if self.inftyopt.endswith("conserve"):
            return self._conservative_step(forward)
        estimate = self._estimate(forward)
        self._apply(estimate)
        self.zo_state = estimate.finish()
        return estimate.probe_outputs

    def state_dict(self) -> dict:
        """The base optimizer's state dict plus the estimator's state (key, step count,
        smoothed directions), so a resumed run draws the same noise."""
        return {**self.base_optimizer.state_dict(), "zeroflow": saved_leaves(self.zo_state)}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("zeroflow")
        self.base_optimizer.load_state_dict({k: v for k, v in state_dict.items() if k != "zeroflow"})
        if saved is not None:
            self.zo_state = restored(self.zo_state, saved, "ZeroFlow")

    def __repr__(self) -> str:
        return f"ZeroFlow({self.inftyopt})"

    # -- internals -----------------------------------------------------------------------
    def _refresh_trainable(self) -> None:
        """Follow parameters frozen or unfrozen since the last step, as INFTY (which lists
        them every step): only trainable parameters are perturbed and updated."""
        current = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        if [name for name, _ in current] == [name for name, _ in self._named]:
            return
        if self.use_history_grad:
            raise ValueError(
                "ZeroFlow: the set of trainable parameters changed, but use_history_grad keeps one smoothed "
                "direction per parameter; build a new ZeroFlow after freezing or unfreezing"
            )
        self._named = current

    def _evaluator(self, forward):
        def evaluate():
            self.model.eval()  # as INFTY: probes run in eval mode
            with torch.inference_mode():
                logits, loss_list = forward()
            return stacked_losses(loss_list).sum(), (logits, loss_list)

        return evaluate

    def _estimate(self, forward):
        return estimate_in_place(
            [p.data for _, p in self._named],
            [name for name, _ in self._named],
            self.zo_state,
            self._evaluator(forward),
            eps=self.zo_eps,
            q=self.q,
            mode=self.perturbation_mode,
            sign=self.sign,
            sparsity=self.gradient_sparsity,
            history=self.alpha if self.use_history_grad else None,
            hold=not self.memory_efficient,
        )

    def _apply(self, estimate, scale: float = 1.0) -> None:
        """Hand ``scale · ĝ`` to the base optimizer: leaf by leaf when memory matters (each
        built, stepped and freed in turn; per-parameter optimizers give the same result),
        all at once otherwise."""
        parameters = [p for _, p in self._named]
        if self.memory_efficient:
            for index, p in enumerate(parameters):
                p.grad = estimate.leaf(index, scale)
                self.base_optimizer.step()
                p.grad = None
        else:
            for index, p in enumerate(parameters):
                p.grad = estimate.leaf(index, scale)
            self.base_optimizer.step()
            self.base_optimizer.zero_grad(set_to_none=True)

    def _conservative_step(self, forward):
        evaluate = self._evaluator(forward)
        with torch.no_grad():
            current, (logits, _) = evaluate()
        estimate = self._estimate(forward)
        self._apply(estimate, 1.0)
        plus, (_, plus_losses) = evaluate()
        self._apply(estimate, -2.0)
        minus, _ = evaluate()
        if plus > current:
            if current < minus:
                self._apply(estimate, 1.0)
        elif plus < minus:
            self._apply(estimate, 2.0)
        self.zo_state = estimate.finish()
        return logits, plus_losses

    def _forward_grad_step(self):
        if self.functional_call_loss is None:
            raise ValueError(
                "ZeroFlow(forward_grad).step needs set_closure(fn, batch) with fn(params, names, buffers, model, batch)"
            )
        names = [name for name, _ in self._named]
        params = [p.detach() for _, p in self._named]
        key = self.zo_state.key
        # the tangent of the functional forward_gradient with n_tangents=1
        tangents = tree_leaves(random.normal_like(random.fold_in(key, 0), dict(zip(names, params))))
        buffers = dict(self.model.named_buffers())

        def objective(plist):
            return self.functional_call_loss(plist, names=names, buffers=buffers, model=self.model, batch=self.batch)

        with torch.no_grad():
            (logits, loss_list), (_, tangent_losses) = jvp(objective, (params,), (tangents,))
        derivative = stacked_losses(tangent_losses).sum().detach()
        lr = self.defaults.get("lr", 1e-3)
        weight_decay = self.defaults.get("weight_decay", 0)
        with torch.no_grad():
            for (name, p), v in zip(self._named, tangents):
                step = v * derivative.to(p.device)
                if weight_decay and decays_weight(name):
                    step = step + weight_decay * p.data
                p.data.sub_(lr * step)
        self.zo_state = self.zo_state._replace(key=random.next_key(key), count=self.zo_state.count + 1)
        return logits, loss_list
