"""Running an inner transform in another space: project the update, transform it there,
map the result back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.func import vmap

from infty_func.core.base import GradientTransformation
from infty_func.core.objective import perturbed
from infty_func.core.tree import PyTree, tree_flatten, tree_unflatten

__all__ = ["projected", "ProjectionState", "ProjectedObjective"]

Project = Callable[[PyTree], PyTree]
Unproject = Callable[[PyTree, PyTree], PyTree]


class ProjectionState(NamedTuple):
    inner: Any  # the inner transform's state, shaped like the projected updates


def projected(
    inner: GradientTransformation,
    project: Project,
    unproject: Unproject,
    project_params: bool = False,
    name: str = "projected",
) -> GradientTransformation:
    """``inner`` applied in the space ``project`` maps to: ``u = U(inner(P(g)))``.

    ``project(tree)`` maps a params-shaped pytree to the projected pytree (any structure);
    ``unproject(projected_tree, like)`` maps one back to the structure and shapes of
    ``like``. The two must be linear and ``U(P(x)) = x``. The inner state is built from
    ``P(params)`` and lives in the projected space.

    What the inner transform sees besides the update:

    - ``project_params=False`` (default): no ``params`` and no ``loss_fn`` (``value`` and
      other extras pass through). A transform that needs params raises its own error;
      set ``project_params=True`` for it.
    - ``project_params=True``: ``P(params)``, and ``loss_fn`` as a
      :class:`ProjectedObjective`, ``z ↦ f(U(z))`` whose gradient is ``P(∇f(U(z)))``:
      the same map that produced the incoming update, so an inner method that compares
      the two (SAM, zeroth order) compares like with like. Inner transforms that need no
      gradient (zeroth order) are allowed only in this mode.

    ``torchzero`` (``ProjectionBase``, ``project_params=False``) hands the inner modules
    the projected *update* in place of the parameters, so an inner weight decay there
    decays towards the update; here the inner transform gets no parameters in that mode
    and a transform that needs them fails loudly. Updates must be shaped like the params
    (not a Jacobian pytree of several objectives).
    """
    if not isinstance(inner, GradientTransformation):
        raise TypeError(f"{name}: inner must be a GradientTransformation, got {type(inner).__name__}")
    if not isinstance(project_params, bool):
        raise ValueError(f"{name}: project_params must be a bool, got {project_params!r}")
    if not inner.needs_gradient and not project_params:
        raise ValueError(
            f"{name}: the inner transform estimates its own gradient from loss_fn; pass project_params=True "
            "so that it can evaluate the objective at projected parameters"
        )

    def init_fn(params):
        return ProjectionState(inner.init(project(params)))

    def update_fn(updates, state, params=None, **extra):
        loss_fn = extra.pop("loss_fn", None)
        inner_params = None
        if project_params and params is not None:
            inner_params = project(params)
            if loss_fn is not None:
                extra["loss_fn"] = ProjectedObjective(loss_fn, project, unproject, params)
        inner_updates = None if updates is None else project(updates)
        out, inner_state = inner.update(inner_updates, state.inner, inner_params, **extra)
        return unproject(out, params if updates is None else updates), ProjectionState(inner_state)

    return GradientTransformation(init_fn, update_fn, inner.needs_gradient, inner.needs_value)


class ProjectedObjective:
    """The objective seen in the projected space: ``z ↦ f(U(z))``, whose gradient is
    defined as ``P(∇f(U(z)))`` (``torchzero``'s projected closure) rather than the
    chain-rule ``Uᵀ∇f``: the two agree for reshapes and splits, not for the FFT, where
    only the first matches how the update itself was projected.

    Works with ``torch.func`` (a custom autograd rule) and with objectives that bring their
    own ``value_and_grad`` / ``jacobian`` (the ``TransformOptimizer``'s closures).
    """

    def __init__(self, loss_fn: Callable, project: Project, unproject: Unproject, like: PyTree):
        self.loss_fn = loss_fn
        self.project = project
        self.unproject = unproject
        self.like = like
        if hasattr(loss_fn, "value_and_grad"):
            self.value_and_grad = self._value_and_grad
        if hasattr(loss_fn, "jacobian"):
            self.jacobian = self._jacobian

    def __call__(self, projected_params: PyTree):
        leaves, spec = tree_flatten(projected_params)
        like_leaves, like_spec = tree_flatten(self.like)
        maps = _FlatMaps(self.project, self.unproject, spec, like_spec, like_leaves)
        return self.loss_fn(tree_unflatten(list(_UnprojectWithProjectedGradient.apply(maps, *leaves)), like_spec))

    def perturbed(self):
        return perturbed(self.loss_fn)

    def _value_and_grad(self, projected_params: PyTree):
        value, grads = self.loss_fn.value_and_grad(self.unproject(projected_params, self.like))
        return value, self.project(grads)

    def _jacobian(self, projected_params: PyTree):
        values, jac = self.loss_fn.jacobian(self.unproject(projected_params, self.like))
        return values, vmap(self.project)(jac)


class _FlatMaps(NamedTuple):
    """``project`` / ``unproject`` on flat lists of leaves, for the autograd rule."""

    project_tree: Project
    unproject_tree: Unproject
    projected_spec: Any
    like_spec: Any
    like_leaves: list

    def unproject(self, projected_leaves) -> list:
        like = tree_unflatten(self.like_leaves, self.like_spec)
        return tree_flatten(self.unproject_tree(tree_unflatten(list(projected_leaves), self.projected_spec), like))[0]

    def project(self, leaves) -> list:
        return tree_flatten(self.project_tree(tree_unflatten(list(leaves), self.like_spec)))[0]


class _UnprojectWithProjectedGradient(torch.autograd.Function):
    """``U`` forward, ``P`` backward (see :class:`ProjectedObjective`); ``U`` is linear,
    so forward-mode tangents go through ``U`` too (Hessian-vector products by ``jvp``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(maps, *projected_leaves):
        return tuple(maps.unproject(projected_leaves))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.maps = inputs[0]

    @staticmethod
    def backward(ctx, *grad_outputs):
        return (None, *ctx.maps.project(grad_outputs))

    @staticmethod
    def jvp(ctx, maps_tangent, *projected_tangents):
        del maps_tangent
        return tuple(ctx.maps.unproject(projected_tangents))
