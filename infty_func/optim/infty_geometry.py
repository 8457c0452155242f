"""INFTY's geometry optimizers (``SAM, GSAM, GAM, LookSAM, C_Flat``) as thin shells over
the functional transforms, with INFTY's constructor, closure contract and ``step()``.

``opt = ifn.optim.SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1,
momentum=0.9), model, args={"rho": 0.05})``, then each step ``opt.set_closure(fn)`` with
``fn() -> (logits, loss_list)`` and ``logits, loss_list = opt.step()``. The shell turns the
closure into ``loss_fn`` (parameters swapped, batch-norm statistics frozen in perturbed
passes), runs the transform, writes its output into ``.grad`` and lets the base optimizer
apply it. Numbers equal the functional path; where ``infty`` has a defect the functional
transform documents the difference (GAM's and C-Flat's ascent radius, LookSAM's reuse step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from infty_func.core.base import GradientTransformation
from infty_func.core.tree import tree_leaves
from infty_func.geometry import c_flat, gam, gsam, looksam, sam
from infty_func.optim.checkpoint import restored, saved_leaves
from infty_func.optim.closure_objective import ClosureObjective
from infty_func.optim.infty_shell import InftyShell, check_args, closure_total_loss

__all__ = ["SAM", "GSAM", "GAM", "LookSAM", "C_Flat", "InftyGeometryOptimizer"]


class InftyGeometryOptimizer(InftyShell, torch.optim.Optimizer):
    """Shared shell; subclasses name their defaults and build their transform."""

    NAME: ClassVar[str] = "base"
    DEFAULTS: ClassVar[dict] = {}

    def __init__(
        self,
        params,
        base_optimizer: torch.optim.Optimizer,
        model: torch.nn.Module,
        args: dict | None = None,
        adaptive: bool = False,
        perturb_eps: float | str = 1e-12,
        grad_reduce: str = "mean",
        **kwargs,
    ):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"{type(self).__name__} needs a torch.optim.Optimizer as base_optimizer, got {type(base_optimizer).__name__}"
            )
        check_args(type(self).__name__, args, self.DEFAULTS)
        if grad_reduce.lower() not in ("mean", "sum"):
            raise ValueError('"grad_reduce" should be one of ["mean", "sum"].')
        super().__init__(params, dict(adaptive=adaptive, **kwargs))
        self.model = model
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.name = self.NAME  # infty's attribute
        self.adaptive = adaptive
        self.perturb_eps = float(perturb_eps)
        self.grad_reduce = grad_reduce.lower()
        self.rho_scheduler = None
        self.norm_rho_scheduler = None
        for key, value in {**self.DEFAULTS, **(args or {})}.items():
            setattr(self, key, value)
        self.forward_backward_func: Callable | None = None
        self.update_rho_t()
        self.transform_state = self.transform().init(self._params_tree())

    # -- what subclasses provide ---------------------------------------------------------
    def transform(self) -> GradientTransformation:
        """The functional transform for the current attributes (``opt.rho = ...`` works)."""
        raise NotImplementedError

    # -- INFTY's interface ---------------------------------------------------------------
    @torch.no_grad()
    def update_rho_t(self) -> None:
        """Advance the radius schedulers (``scheduler.step()`` returns the new value), as INFTY does."""
        if self.rho_scheduler is not None:
            self.rho = self.rho_scheduler.step()
        if self.norm_rho_scheduler is not None:
            self.norm_rho = self.norm_rho_scheduler.step()

    def set_closure(self, loss_fn: Callable[[], tuple[Any, list]]) -> None:
        """``loss_fn() -> (logits, loss_list)``; ``step()`` differentiates their sum."""

        def get_grad():
            self.zero_grad()
            with torch.enable_grad():
                output = loss_fn()
                total = closure_total_loss(output)
            total.backward()
            return output

        self.forward_backward_func = get_grad

    def step(self, closure: Callable | None = None, delay: bool = False):
        """One step; returns the closure's ``(logits, loss_list)`` at the current parameters."""
        get_grad = self._closure(closure, self.forward_backward_func)
        parameters = self._parameters()
        with self._maybe_no_sync():
            logits, loss_list = get_grad()
            had_grad = [p.grad is not None for p in parameters]
            objective = ClosureObjective(get_grad, self._names(), parameters, model=self.model, loss_of=closure_total_loss)
            with torch.no_grad():
                grads = {
                    name: (p.grad if p.grad is not None else torch.zeros_like(p)) for name, p in zip(self._names(), parameters)
                }
                updates, self.transform_state = self.transform().update(
                    grads,
                    self.transform_state,
                    self._params_tree(),
                    loss_fn=objective,
                    value=closure_total_loss((logits, loss_list)).detach(),
                )
                for p, has, new in zip(parameters, had_grad, tree_leaves(updates)):
                    if has:
                        p.grad = new
        self._sync_grad()
        if not delay:
            self.base_optimizer.step()
        return logits, loss_list

    def state_dict(self) -> dict:
        """The base optimizer's state dict plus this method's own state (step counters,
        LookSAM's stored direction, C-Flat's gate), so a resumed run is bit-identical."""
        return {**self.base_optimizer.state_dict(), "transform": saved_leaves(self.transform_state)}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("transform")
        self.base_optimizer.load_state_dict({k: v for k, v in state_dict.items() if k != "transform"})
        if saved is not None:
            self.transform_state = restored(self.transform_state, saved, type(self).__name__)

    # -- internals -----------------------------------------------------------------------
    def _maybe_no_sync(self):
        if torch.distributed.is_available() and torch.distributed.is_initialized() and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    @torch.no_grad()
    def _sync_grad(self) -> None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        grads = [p.grad for p in self._parameters() if p.grad is not None]
        for grad in grads:
            torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        if self.grad_reduce == "mean":
            torch._foreach_div_(grads, float(torch.distributed.get_world_size()))


class SAM(InftyGeometryOptimizer):
    """INFTY's ``SAM`` (and ASAM with ``adaptive=True``) over :func:`infty_func.sam`.
    ``args``: ``rho`` (0.1), ``rho_scheduler``."""

    NAME = "sam"
    DEFAULTS: ClassVar[dict] = {"rho": 0.1, "rho_scheduler": None}

    def transform(self):
        return sam(self.rho, adaptive=self.adaptive, eps=self.perturb_eps)


class GSAM(InftyGeometryOptimizer):
    """INFTY's ``GSAM`` over :func:`infty_func.gsam`. ``args``: ``rho`` (0.1), ``alpha`` (0.2), ``rho_scheduler``."""

    NAME = "gsam"
    DEFAULTS: ClassVar[dict] = {"rho": 0.1, "alpha": 0.2, "rho_scheduler": None}

    def transform(self):
        return gsam(self.rho, self.alpha, adaptive=self.adaptive, eps=self.perturb_eps)


class GAM(InftyGeometryOptimizer):
    """INFTY's ``GAM`` over :func:`infty_func.gam`. ``args``: ``rho`` (0.1), ``norm_rho``
    (0.02), ``grad_beta_1`` (1), ``grad_beta_2`` (−1), ``grad_beta_3`` (1), ``grad_gamma``
    (0.3), ``rho_scheduler``, ``norm_rho_scheduler``. Uses ``norm_rho`` for the ascent,
    where ``infty`` uses 1.0 (see :func:`infty_func.gam`)."""

    NAME = "gam"
    DEFAULTS: ClassVar[dict] = {
        "rho": 0.1,
        "norm_rho": 0.02,
        "grad_beta_1": 1,
        "grad_beta_2": -1,
        "grad_beta_3": 1,
        "grad_gamma": 0.3,
        "rho_scheduler": None,
        "norm_rho_scheduler": None,
    }

    def transform(self):
        return gam(
            self.rho,
            self.norm_rho,
            self.grad_beta_1,
            self.grad_beta_2,
            self.grad_beta_3,
            self.grad_gamma,
            adaptive=self.adaptive,
            eps=self.perturb_eps,
        )


class LookSAM(InftyGeometryOptimizer):
    """INFTY's ``LookSAM`` over :func:`infty_func.looksam`. ``args``: ``rho`` (0.1), ``k``
    (5), ``alpha`` (0.7), ``rho_scheduler``. Reuses the stored direction between SAM steps
    as the paper does, where ``infty`` never applies it (see :func:`infty_func.looksam`)."""

    NAME = "looksam"
    DEFAULTS: ClassVar[dict] = {"rho": 0.1, "k": 5, "alpha": 0.7, "rho_scheduler": None}

    def transform(self):
        return looksam(self.rho, self.k, self.alpha, adaptive=self.adaptive, eps=self.perturb_eps)


class C_Flat(InftyGeometryOptimizer):  # noqa: N801 (INFTY's name)
    """INFTY's ``C_Flat`` over :func:`infty_func.c_flat`. ``args``: ``strategy``
    (``"basic"``), ``rho`` (0.1), ``lamb`` (0.2), ``rho_scheduler``, ``A`` (5.0), ``k``
    (0.01), ``t0`` (80), ``cof`` (1.0), and ``norm_rho`` (``None``: ``rho``, as the C-Flat
    paper; ``infty`` uses 1.0, see :func:`infty_func.c_flat`)."""

    NAME = "c_flat"
    DEFAULTS: ClassVar[dict] = {
        "strategy": "basic",
        "rho": 0.1,
        "lamb": 0.2,
        "rho_scheduler": None,
        "A": 5.0,
        "k": 0.01,
        "t0": 80,
        "cof": 1.0,
        "norm_rho": None,
    }

    @property
    def A(self) -> float:  # noqa: N802 (infty's name)
        """The ``plus`` gate's current amplitude (infty updates ``self.A``; here it lives in
        the transform state)."""
        state = getattr(self, "transform_state", None)
        return float(state.threshold) if state is not None else self._initial_A

    @A.setter
    def A(self, value: float) -> None:  # noqa: N802
        self._initial_A = float(value)

    def transform(self):
        return c_flat(
            self.rho,
            self.lamb,
            self.strategy,
            self._initial_A,
            self.k,
            self.t0,
            self.cof,
            norm_rho=self.norm_rho,
            adaptive=self.adaptive,
            eps=self.perturb_eps,
        )
