"""INFTY's gradient-filtering optimizers (``PCGrad, CAGrad, GradVac, OGD, UniGrad_FS``) as
thin shells over the aggregators, with INFTY's constructor, closure contract and
``sim_list``.

``opt = ifn.optim.PCGrad(model.parameters(), torch.optim.SGD(...), model, args={})``; each
step ``opt.set_closure(fn)`` with ``fn() -> (logits, loss_list)`` and
``logits, loss_list = opt.step()``. The shell computes the per-loss gradients (one forward,
m pullbacks), runs the aggregator, writes its update into ``.grad`` and steps the base
optimizer. ``sim_list`` (the mean pairwise cosine of each step, as INFTY) is kept as
tensors and converted only when read: no host synchronisation per step.
"""

from __future__ import annotations

import random as python_random
from typing import ClassVar

import torch
from torch import Tensor

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import autograd_derivative
from infty_func.core.tree import tree_flatten, tree_leaves, tree_unflatten
from infty_func.multiobjective.cagrad import cagrad
from infty_func.multiobjective.diagnostics import conflict_diagnostics, mean_pairwise_cosine
from infty_func.multiobjective.gradvac import gradvac
from infty_func.multiobjective.jacobian import combine, gramian
from infty_func.multiobjective.ogd import OGDState, ogd, ogd_add_directions
from infty_func.multiobjective.pcgrad import pcgrad, pcgrad_weights
from infty_func.optim.checkpoint import restored, saved_leaves
from infty_func.optim.closure_objective import ClosureObjective
from infty_func.optim.infty_shell import InftyShell, check_args, closure_total_loss, stacked_losses

__all__ = ["InftyMultiObjectiveOptimizer", "PCGrad", "CAGrad", "GradVac", "OGD", "UniGrad_FS"]


def _granularity(utype: str) -> str:
    if utype in ("model-wise", "model"):
        return "model"
    if utype in ("layer-wise", "layer"):
        return "layer"
    raise ValueError(f"utype must be 'model-wise' or 'layer-wise', got {utype!r}")


def _zero_filled(columns: list, parameters: list, m: int) -> list:
    """Jacobian columns, ``m`` rows of zeros where the losses do not reach a parameter."""
    return [torch.zeros((m, *p.shape), dtype=p.dtype, device=p.device) if c is None else c for p, c in zip(parameters, columns)]


def _mean_pairwise_cosine(diagnostics) -> Tensor | None:
    if not isinstance(diagnostics, tuple) or not hasattr(diagnostics, "cosine"):
        return None
    return mean_pairwise_cosine(diagnostics.cosine) if diagnostics.cosine.shape[-1] >= 2 else None


class InftyMultiObjectiveOptimizer(InftyShell, torch.optim.Optimizer):
    """Shared shell; subclasses name their defaults and build their transform."""

    DEFAULTS: ClassVar[dict] = {}

    def __init__(self, params, base_optimizer: torch.optim.Optimizer, model: torch.nn.Module, args: dict | None = None, **kwargs):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(self).__name__} needs a torch.optim.Optimizer as base_optimizer")
        check_args(type(self).__name__, args, {*self.DEFAULTS, "task_id"})
        super().__init__(params, kwargs)
        self.model = model
        self.base_optimizer = base_optimizer
        self.param_groups = base_optimizer.param_groups
        self.name = type(self).__name__.lower()  # infty's attribute
        self.task_id = 0
        self.args = {**self.DEFAULTS, **(args or {})}
        for key, value in self.args.items():
            if not isinstance(getattr(type(self), key, None), property):
                setattr(self, key, value)
        self.forward_func = None
        self._reached: list[bool] = []
        self._similarities: list[Tensor] = []
        self.m: int | None = None
        self._pending = None
        self._transform = None
        self.transform_state = None

    # -- what subclasses provide ---------------------------------------------------------
    def build(self) -> GradientTransformation:
        raise NotImplementedError

    def aggregate(self, jacobian: dict, logits, loss_list) -> dict:
        """The update from the per-loss gradients (default: the transform)."""
        out, self.transform_state = self._transform.update(jacobian, self.transform_state, self._params_tree())
        return out

    # -- INFTY's interface ---------------------------------------------------------------
    @property
    def sim_list(self) -> list[float]:
        """The mean pairwise cosine similarity of the objectives' gradients, one entry per
        step that had several objectives (converted to floats when read)."""
        return [float(value) for value in self._similarities]

    @property
    def sim_arr(self) -> list[float]:
        return self.sim_list

    def set_closure(self, loss_fn) -> None:
        """``loss_fn() -> (logits, loss_list)``."""
        self.forward_func = loss_fn

    def step(self, closure=None, delay: bool = False):
        forward = self._closure(closure, self.forward_func)
        parameters = self._parameters()
        with torch.enable_grad():
            logits, loss_list = forward()
        self._ensure_state(len(loss_list))
        jacobian = self._jacobian(loss_list, parameters)
        with torch.no_grad():
            update = self.aggregate(jacobian, logits, loss_list)
            self._write_grads(parameters, tree_leaves(update))
        if not delay:
            self.base_optimizer.step()
        return logits, loss_list

    def state_dict(self) -> dict:
        """The base optimizer's state dict plus this method's state (targets, basis, keys,
        diagnostics), so a resumed run continues exactly."""
        state = self.transform_state if self.transform_state is not None else (self._pending or [])
        return {**self.base_optimizer.state_dict(), "transform": saved_leaves(state)}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("transform")
        self.base_optimizer.load_state_dict({k: v for k, v in state_dict.items() if k != "transform"})
        if saved is None:
            return
        if self.transform_state is None:  # built at the first step, once m is known
            self._pending = [leaf.clone() for leaf in saved]
            return
        self._restore(saved)

    def _restore(self, saved) -> None:
        self.transform_state = restored(self.transform_state, saved, type(self).__name__)

    def _ensure_state(self, m: int) -> None:
        """Build the transform for ``m`` objectives at the first step (the aggregators keep
        per-objective state and diagnostics of a fixed shape)."""
        if self.transform_state is not None:
            return
        self.m = m
        self._transform = self.build()
        self.transform_state = self._transform.init(self._params_tree())
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    # -- internals -----------------------------------------------------------------------
    def _write_grads(self, parameters, updates) -> None:
        """Set ``.grad`` only where the last differentiation reached the parameter: frozen
        or unused parameters keep ``grad=None``, so the base optimizer skips them (as
        INFTY's)."""
        for p, new, reached in zip(parameters, updates, self._reached):
            if reached:
                p.grad = new.detach().clone()

    def _gradients(self, output, parameters) -> list:
        """``∂output/∂p`` for each parameter (zeros where it does not reach), remembering
        which ones it reached."""
        grads = autograd_derivative(output, parameters)
        self._reached = [g is not None for g in grads]
        return [torch.zeros_like(p) if g is None else g for p, g in zip(parameters, grads)]

    def _jacobian(self, loss_list, parameters) -> dict:
        """One row per loss: the pullbacks of a single forward pass."""
        losses = stacked_losses(loss_list)
        columns = autograd_derivative(losses, parameters)
        self._reached = [c is not None for c in columns]
        return dict(zip(self._names(), _zero_filled(columns, parameters, losses.shape[0])))

    def _record(self) -> None:
        diagnostics = getattr(self.transform_state, "diagnostics", None)
        similarity = _mean_pairwise_cosine(diagnostics)
        if similarity is not None:
            self._similarities.append(similarity)


class PCGrad(InftyMultiObjectiveOptimizer):
    """INFTY's ``PCGrad`` over :func:`infty_func.pcgrad` (sum of projected gradients, the
    reference's ``1e-8`` guard). Each gradient meets the others in a random order drawn
    from Python's ``random`` module, as INFTY does (seed it for reproducibility)."""

    DEFAULTS: ClassVar[dict] = {"task_id": 0}

    def build(self):
        return pcgrad(seed=None, eps=1e-8, m=self.m)

    def aggregate(self, jacobian, logits, loss_list):
        leaves, spec = tree_flatten(jacobian)
        m = leaves[0].shape[0]
        gram = gramian(leaves).to(torch.float64)
        orders = []
        for i in range(m):
            others = [j for j in range(m) if j != i]
            python_random.shuffle(others)
            orders.append(others + [i])
        weights = pcgrad_weights(gram, torch.tensor(orders), eps=1e-8)
        diagnostics = conflict_diagnostics(gram, weights)
        self.transform_state = self.transform_state._replace(diagnostics=diagnostics)
        self._record()
        return combine(weights, leaves, spec)


class CAGrad(InftyMultiObjectiveOptimizer):
    """INFTY's ``CAGrad`` over :func:`infty_func.cagrad` (``calpha``, ``rescale``), with the
    dual solved exactly instead of by SLSQP (agreement about 1e-5)."""

    DEFAULTS: ClassVar[dict] = {"calpha": 0.1, "rescale": 0, "task_id": 0}

    def build(self):
        return cagrad(self.calpha, self.rescale, m=self.m)

    def aggregate(self, jacobian, logits, loss_list):
        out = super().aggregate(jacobian, logits, loss_list)
        self._record()
        return out


class GradVac(InftyMultiObjectiveOptimizer):
    """INFTY's ``GradVac`` over :func:`infty_func.gradvac` (``pairs="first"``, ``utype``,
    ``S_T``, ``beta``). With ``task_id == 0`` the update is the summed gradient, as INFTY."""

    DEFAULTS: ClassVar[dict] = {"utype": "model-wise", "k_idx": [-1], "S_T": [0.1], "beta": 0.9, "task_id": 0}

    def build(self):
        targets = list(self.args["S_T"])
        if len(targets) != 1:
            raise ValueError("GradVac here takes one initial S_T for every block; got several")
        return gradvac(self.beta, float(targets[0]), _granularity(self.utype), m=self.m, pairs="first")

    @property
    def S_T(self) -> Tensor:  # noqa: N802 (INFTY's name)
        """The current target similarities (one per block)."""
        if self.transform_state is None:
            return torch.tensor(list(self.args["S_T"]), dtype=torch.float64)
        inner = self.transform_state.inner
        states = inner if isinstance(inner, tuple) and not hasattr(inner, "targets") else (inner,)
        return torch.stack([state.targets[0, 1] for state in states])

    def aggregate(self, jacobian, logits, loss_list):
        if self.task_id == 0:
            return tree_unflatten([leaf.sum(0) for leaf in tree_leaves(jacobian)], tree_flatten(jacobian)[1])
        out = super().aggregate(jacobian, logits, loss_list)
        self._record()
        return out


class _ClosureJacobian(ClosureObjective):
    """``loss_fn`` for UniGrad-FS from an INFTY closure: ``jacobian(params)`` runs the
    closure with the module's parameter data swapped for ``params`` and takes one pullback
    per loss, keeping the closure's outputs; ``perturbed()`` freezes batch-norm statistics."""

    def __init__(self, forward, names, parameters, model):
        super().__init__(forward, names, parameters, model=model, loss_of=closure_total_loss)
        self.outputs = None

    def jacobian(self, params):
        with self._at(params), torch.enable_grad():
            self.outputs = self.closure()
            losses = stacked_losses(self.outputs[1])
            columns = autograd_derivative(losses, self.parameters)
        return losses.detach(), dict(zip(self.names, _zero_filled(columns, self.parameters, losses.shape[0])))


class UniGrad_FS(InftyMultiObjectiveOptimizer):  # noqa: N801 (INFTY's name)
    """INFTY's ``UniGrad_FS`` over :func:`infty_func.unigrad_fs`. With ``task_id == 0`` the
    update is the summed gradient; afterwards the closure must return exactly two losses
    (old task, new task). Unlike INFTY, the gradients at the perturbed point are the true
    ones (see :func:`infty_func.unigrad_fs`); ``step()`` returns the closure's outputs at
    the perturbed point, as INFTY."""

    DEFAULTS: ClassVar[dict] = {
        "utype": "model-wise",
        "k_idx": [-1],
        "S_T": [0.1],
        "beta": 0.9,
        "rho": 0.05,
        "perturb_eps": 1e-12,
        "adaptive": False,
        "task_id": 0,
    }

    def build(self):
        from infty_func.multiobjective.unigrad_fs import unigrad_fs

        return unigrad_fs(
            self.rho, float(list(self.S_T)[0]), self.beta, _granularity(self.utype), self.adaptive, float(self.perturb_eps)
        )

    def step(self, closure=None, delay: bool = False):
        forward = self._closure(closure, self.forward_func)
        parameters = self._parameters()
        with torch.enable_grad():
            logits, loss_list = forward()
        self._ensure_state(len(loss_list))
        if self.task_id != 0 and len(loss_list) != 2:
            raise ValueError(f"UniGrad_FS needs exactly 2 losses (old task, new task) after the first task, got {len(loss_list)}")
        grads = self._gradients(stacked_losses(loss_list).sum(), parameters)
        if self.task_id == 0:
            with torch.no_grad():
                self._write_grads(parameters, grads)
        else:
            # UniGrad-FS only needs the summed gradient at w: one backward, handed over as two
            # rows that sum to it (the aggregation happens at the perturbed point).
            jacobian = {name: torch.stack([g, torch.zeros_like(g)]) for name, g in zip(self._names(), grads)}
            objective = _ClosureJacobian(forward, self._names(), parameters, self.model)
            with torch.no_grad():
                update, self.transform_state = self._transform.update(
                    jacobian, self.transform_state, self._params_tree(), loss_fn=objective
                )
                self._write_grads(parameters, tree_leaves(update))
            if objective.outputs is not None:
                logits, loss_list = objective.outputs
            similarity = _mean_pairwise_cosine(getattr(self.transform_state[0], "diagnostics", None))
            if similarity is not None:
                self._similarities.append(similarity)
        if not delay:
            self.base_optimizer.step()
        return logits, loss_list


class OGD(InftyMultiObjectiveOptimizer):
    """INFTY's ``OGD`` over :func:`infty_func.ogd`: the summed gradient with its components
    along the stored basis removed (from ``task_id > 0``). ``post_process(train_loader)`` at
    the end of a task adds, for ``num_sample_per_task`` random samples ``(index, x, y)`` of
    the task, the gradient of the true class's logit (Gram–Schmidt, as INFTY). The basis
    grows as needed; samples are drawn with a generator seeded by ``seed + task_id`` (INFTY
    uses the global RNG: ``torch.manual_seed(s)`` before its ``post_process`` of task ``t``
    equals ``seed = s - t`` here)."""

    DEFAULTS: ClassVar[dict] = {
        "strategy": "base",
        "pca": False,
        "num_sample_per_task": 20,
        "init_cls": None,
        "increment": None,
        "basis_path": None,
        "ckp_dir": None,
        "seed": 0,
        "task_id": 0,
    }

    def build(self):
        if self.strategy != "base" or self.pca:
            raise NotImplementedError("OGD supports strategy='base' without pca, as INFTY")
        self._capacity = max(1, int(self.num_sample_per_task))
        return ogd(self._capacity)

    def step(self, closure=None, delay: bool = False):
        forward = self._closure(closure, self.forward_func)
        parameters = self._parameters()
        with torch.enable_grad():
            logits, loss_list = forward()
            grads = self._gradients(stacked_losses(loss_list).sum(), parameters)
        self._ensure_state(len(loss_list))
        gradient = dict(zip(self._names(), grads))
        with torch.no_grad():
            if self.task_id > 0:
                gradient, _ = self._transform.update(gradient, self.transform_state, self._params_tree())
            self._write_grads(parameters, tree_leaves(gradient))
        if not delay:
            self.base_optimizer.step()
        return logits, loss_list

    def post_process(self, train_loader=None) -> None:
        """Add the current task's directions to the basis."""
        if train_loader is None:
            raise ValueError("OGD.post_process needs the task's train_loader (items (index, x, y))")
        self._ensure_state(1)
        dataset = train_loader.dataset
        targets = [int(dataset[i][2]) for i in range(len(dataset))]
        if self.init_cls is None or self.increment is None:
            chosen = list(range(len(dataset)))
        else:
            low = 0 if self.task_id == 0 else self.init_cls + (self.task_id - 1) * self.increment
            high = self.init_cls if self.task_id == 0 else low + self.increment
            chosen = [i for i, y in enumerate(targets) if low <= y < high]
        generator = torch.Generator().manual_seed(int(self.seed) + int(self.task_id))
        picked = [chosen[i] for i in torch.randperm(len(chosen), generator=generator)[: self.num_sample_per_task].tolist()]
        parameters = self._parameters()
        was_training = self.model.training
        self.model.eval()
        rows = []
        for index in picked:
            _, x, y = dataset[index]
            with torch.enable_grad():
                out = self.model(x.unsqueeze(0).to(parameters[0].device))
                logits = out["logits"] if isinstance(out, dict) else out
                grads = self._gradients(logits[0, int(y)], parameters)
            rows.append([g.detach() for g in grads])
        self.model.train(was_training)
        if not rows:
            return
        directions = {name: torch.stack([row[i] for row in rows]) for i, name in enumerate(self._names())}
        needed = int(self.transform_state.count) + len(rows)
        if needed > self._capacity:
            self._grow(needed)
        self.transform_state = ogd_add_directions(self.transform_state, directions)

    def _grow(self, capacity: int) -> None:
        old = self.transform_state
        self._capacity = capacity
        self._transform = ogd(capacity)
        fresh = self._transform.init(self._params_tree())
        basis = [torch.cat([b, f[b.shape[0] :]]) for b, f in zip(tree_leaves(old.basis), tree_leaves(fresh.basis))]
        self.transform_state = OGDState(tree_unflatten(basis, tree_flatten(fresh.basis)[1]), old.count)

    @property
    def ogd_basis(self) -> Tensor:
        """The stored basis as INFTY shows it: ``[D, k]`` (parameters flattened, ``k``
        directions)."""
        count = int(self.transform_state.count)
        return torch.cat([b[:count].reshape(count, -1) for b in tree_leaves(self.transform_state.basis)], dim=1).T
