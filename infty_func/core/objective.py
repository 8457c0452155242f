"""Differentiating an objective ``loss_fn(params)``: gradients, Jacobians, Hessian products.

``loss_fn`` returns a scalar (one objective) or a 1-D tensor of ``m`` losses (several), and
may return auxiliary outputs after the loss, as ``(loss, aux)``. Every helper here accepts
both forms: with ``has_aux=None`` (the default) a tuple output is read as ``(loss, aux)``.

An objective may also be an object that knows its own gradient: if ``loss_fn`` has a
``value_and_grad(params)`` method (the :class:`~infty_func.optim.TransformOptimizer`
builds such objects from closures), :func:`value_and_grad` calls it instead of
``torch.func``. Transforms therefore differentiate ``loss_fn`` only through these helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor
from torch._C import _functorch
from torch.func import grad, jvp, vjp, vmap

from infty_func.core.tree import PyTree, tree_flatten, tree_map, tree_unflatten

__all__ = [
    "value_and_grad",
    "jacobian",
    "value_and_derivative",
    "hvp",
    "hvp_operator",
    "evaluate",
    "total_loss",
    "summed",
    "perturbed",
    "require_loss_fn",
    "require_params",
    "require_functional_loss_fn",
    "autograd_derivative",
    "LOOP_JACOBIAN_BELOW",
]

# Inside torch.func transforms, below this many objectives the m pullbacks of `jacobian`
# run in a Python loop and from it on under vmap; outside them, plain autograd batches
# them for every m ≥ 2 (is_grads_batched). Measured on the 2-core machine, 100k-parameter MLP, in units of one backward of
# the summed loss: loop 1.43 / 2.70 / 3.13, batched 1.53 / 2.47 / 2.71, vmap(vjp) 2.25 /
# 3.42 / 3.56 for m = 2 / 4 / 8.
LOOP_JACOBIAN_BELOW = 4


def _with_aux(loss_fn: Callable, has_aux: bool | None) -> Callable[[PyTree], tuple[Tensor, tuple]]:
    """``loss_fn`` as a function returning ``(loss, box)``: ``box`` is ``(aux,)`` when
    ``loss_fn`` returned auxiliary outputs and ``()`` otherwise (``torch.func`` needs aux to
    be a pytree of tensors, so "no aux" cannot be ``None``)."""

    def wrapped(params):
        out = loss_fn(params)
        if has_aux is False:
            return out, ()
        if isinstance(out, tuple):
            return out[0], ((out[1] if len(out) == 2 else out[1:]),)
        if has_aux:
            raise ValueError(f"has_aux=True but loss_fn returned a single {type(out).__name__}; return (loss, aux)")
        return out, ()

    return wrapped


def _package(value: Tensor, box: tuple, has_aux: bool | None):
    """``value``, or ``(value, aux)`` when the loss function had aux outputs."""
    if has_aux or (has_aux is None and box):
        return value, (box[0] if box else None)
    return value


def value_and_grad(loss_fn: Callable, has_aux: bool | None = None) -> Callable:
    """``f(params) -> (value, grads)``; ``((value, aux), grads)`` when ``loss_fn`` has aux.

    One forward pass and one backward pass, with ``torch.func`` (so it composes with
    ``vmap``) unless ``loss_fn`` brings its own ``value_and_grad``.
    """
    if hasattr(loss_fn, "value_and_grad"):
        return loss_fn.value_and_grad

    def value_and_grad_fn(params):
        value, box, grads = _value_box_derivative(loss_fn, params, has_aux)
        if value.dim() != 0:
            raise ValueError(
                f"value_and_grad needs a scalar loss, got shape {tuple(value.shape)}; for several losses use ifn.jacobian"
            )
        return _package(value, box, has_aux), grads

    return value_and_grad_fn


def jacobian(loss_fn: Callable, has_aux: bool | None = None) -> Callable:
    """``f(params) -> (values[m], jac)``: the losses and their Jacobian pytree.

    ``jac`` has the structure of ``params``, each leaf with a leading axis of size ``m``
    (row ``i`` is the gradient of loss ``i``). One shared forward pass; outside torch.func
    transforms the ``m`` pullbacks run as one batched backward (``is_grads_batched``),
    inside them they are looped below ``LOOP_JACOBIAN_BELOW`` and vmapped from it on.
    """
    if hasattr(loss_fn, "jacobian"):
        return loss_fn.jacobian

    def jacobian_fn(params):
        values, box, jac = _value_box_derivative(loss_fn, params, has_aux)
        if values.dim() != 1:
            raise ValueError(f"jacobian needs loss_fn to return a 1-D tensor of m losses, got shape {tuple(values.shape)}")
        return _package(values, box, has_aux), jac

    return jacobian_fn


def _value_box_derivative(loss_fn: Callable, params: PyTree, has_aux: bool | None):
    """``(value, box, derivative)`` from one forward pass, ``box`` as in :func:`_with_aux`:
    the gradient for a scalar loss, the Jacobian pytree for a 1-D tensor of losses. Plain
    autograd outside ``torch.func`` transforms (less overhead), ``vjp`` inside them."""
    if not _inside_functorch():
        return _autograd_value_and_derivative(loss_fn, params, has_aux)
    value, pullback, box = vjp(_with_aux(loss_fn, has_aux), params, has_aux=True)
    if value.dim() == 0:
        (derivative,) = pullback(torch.ones_like(value))
    elif value.dim() == 1:
        derivative = _pullback_rows(pullback, value)
    else:
        raise ValueError(f"loss_fn must return a scalar or a 1-D tensor of losses, got shape {tuple(value.shape)}")
    return value.detach(), box, derivative


def _pullback_rows(pullback: Callable, values: Tensor) -> PyTree:
    """The Jacobian pytree from the pullback of ``m`` losses."""
    m = values.shape[0]
    basis = torch.eye(m, dtype=values.dtype, device=values.device)
    if m < LOOP_JACOBIAN_BELOW:
        rows = [pullback(basis[i])[0] for i in range(m)]
        return tree_map(lambda *leaves: torch.stack(leaves), *rows)
    (jac,) = vmap(pullback)(basis)
    return jac


def _inside_functorch() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) is active."""
    return _functorch.peek_interpreter_stack() is not None


def autograd_derivative(value: Tensor, inputs: Sequence[Tensor]) -> list[Tensor | None]:
    """``∂value/∂inputs`` by plain autograd, from ``value``'s live graph: the gradient for a
    scalar; for a 1-D tensor of ``m`` losses, the ``m`` rows stacked on a leading axis (one
    batched backward, ``is_grads_batched``, or a loop where an op has no batching rule).
    ``None`` for an input that does not require grad or that ``value`` does not reach."""
    wrt = [x for x in inputs if x.requires_grad]

    def spread(found):
        found = iter(found)
        return [next(found) if x.requires_grad else None for x in inputs]

    if not (value.requires_grad and wrt):
        return [None] * len(inputs)
    if value.dim() == 0:
        return spread(torch.autograd.grad(value, wrt, allow_unused=True))
    m = value.shape[0]
    basis = torch.eye(m, dtype=value.dtype, device=value.device)
    if m >= 2:
        # All m pullbacks in one batched backward (autograd's vmap): as fast as a loop at
        # m = 2 and faster beyond, and its rows come out already stacked.
        try:
            return spread(torch.autograd.grad(value, wrt, basis, is_grads_batched=True, allow_unused=True))
        except RuntimeError:  # an op without a batching rule: loop instead
            pass
    rows = [spread(torch.autograd.grad(value, wrt, basis[i], retain_graph=i < m - 1, allow_unused=True)) for i in range(m)]
    columns = []
    for x, column in zip(inputs, zip(*rows)):
        reached = any(g is not None for g in column)
        columns.append(torch.stack([torch.zeros_like(x) if g is None else g for g in column]) if reached else None)
    return columns


def _autograd_value_and_derivative(loss_fn: Callable, params: PyTree, has_aux: bool | None = None):
    """Plain-autograd twin of the ``torch.func`` path, used outside every transform.

    Returns ``(value, box, derivative)`` with ``box`` as in :func:`_with_aux` (aux
    detached). ``torch.func.vjp`` adds about half a backward pass of bookkeeping on small
    models (measured on the 2-core machine: 0.64 ms vs 0.43 ms on a 100k-parameter MLP); a
    leaf-requiring-grad forward and ``torch.autograd.grad`` give the same numbers without
    it. It cannot run inside vmap or grad, where the ``torch.func`` path takes over.
    """
    leaves, spec = tree_flatten(params)
    with torch.enable_grad():
        inputs = [leaf.detach().requires_grad_(leaf.is_floating_point()) for leaf in leaves]
        value, box = _with_aux(loss_fn, has_aux)(tree_unflatten(inputs, spec))
        if value.dim() > 1:
            raise ValueError(f"loss_fn must return a scalar or a 1-D tensor of losses, got shape {tuple(value.shape)}")
        derivative = autograd_derivative(value, inputs)

    def zeros(x):  # for an input the loss does not reach
        return torch.zeros_like(x) if value.dim() == 0 else torch.zeros((value.shape[0], *x.shape), dtype=x.dtype, device=x.device)

    derivative = [zeros(x) if d is None else d for x, d in zip(inputs, derivative)]
    return value.detach(), tree_map(torch.Tensor.detach, box), tree_unflatten(derivative, spec)


def value_and_derivative(loss_fn: Callable) -> Callable:
    """``f(params) -> (value, derivative)``, aux dropped, from one forward pass.

    The derivative is the gradient pytree for a scalar loss and the Jacobian pytree for a
    1-D tensor of losses. Outside ``torch.func`` transforms it uses plain autograd (same
    numbers, less overhead); inside them, ``torch.func.vjp``.
    """

    def value_and_derivative_fn(params):
        if hasattr(loss_fn, "value_and_grad"):
            value, derivative = loss_fn.value_and_grad(params)
            return (value[0] if isinstance(value, tuple) else value), derivative
        value, _, derivative = _value_box_derivative(loss_fn, params, None)
        return value, derivative

    return value_and_derivative_fn


def evaluate(loss_fn: Callable, params: PyTree) -> Tensor:
    """The loss (or losses) at ``params`` with no autograd graph, aux dropped."""
    with torch.no_grad():
        value, _ = _with_aux(loss_fn, None)(params)
    return value


def summed(value: Tensor) -> Tensor:
    """A loss value as one scalar: several losses (a 1-D tensor) are summed."""
    return value.sum() if value.dim() > 0 else value


def total_loss(loss_fn: Callable) -> Callable[[PyTree], Tensor]:
    """``params -> loss_fn(params)`` summed to a scalar, aux dropped: the objective of
    methods that treat several losses as their sum (as ``infty`` does with its
    ``loss_list``)."""

    def total(params):
        value, _ = _with_aux(loss_fn, None)(params)
        return summed(value)

    return total


def hvp(loss_fn: Callable, params: PyTree, vector: PyTree) -> PyTree:
    """One Hessian-vector product ``H v`` by forward-over-reverse differentiation.

    For many products at the same ``params`` use :func:`hvp_operator`, which reuses one
    linearisation of the gradient.
    """
    require_functional_loss_fn(loss_fn, "hvp", "Hessian-vector products")
    loss_only = lambda p: _with_aux(loss_fn, None)(p)[0]  # noqa: E731
    _, product = jvp(grad(loss_only), (params,), (vector,))
    return product


def hvp_operator(loss_fn: Callable, params: PyTree) -> Callable[[PyTree], PyTree]:
    """``v -> H v`` at ``params``, reusing one backward graph of the gradient.

    The gradient is computed once and its pullback kept; each product is one pullback
    (``H`` is symmetric, so ``vᵀH = (Hv)ᵀ``). Vectors with a leading batch axis can be
    passed through ``torch.func.vmap(operator)``.
    """
    require_functional_loss_fn(loss_fn, "hvp_operator", "Hessian-vector products")
    loss_only = lambda p: _with_aux(loss_fn, None)(p)[0]  # noqa: E731
    _, pullback = vjp(grad(loss_only), params)

    def operator(vector):
        (product,) = pullback(vector)
        return product

    return operator


def perturbed(loss_fn: Callable) -> AbstractContextManager:
    """The context to enter while evaluating ``loss_fn`` away from the current parameters.

    Objectives with a ``perturbed()`` method (see
    :func:`~infty_func.freeze_batch_norm_when_perturbed`) use it to keep module state such
    as batch-norm running statistics out of those evaluations; for others it does nothing.
    """
    enter = getattr(loss_fn, "perturbed", None)
    return enter() if callable(enter) else nullcontext()


def require_params(params: PyTree | None, method: str) -> PyTree:
    """``params``, or a ``ValueError`` that names ``method``: for transforms that evaluate
    the objective at points built from the parameters."""
    if params is None:
        raise ValueError(f"{method} perturbs the parameters and needs them: call update(updates, state, params, loss_fn=...)")
    return params


def require_loss_fn(loss_fn: Callable | None, method: str) -> Callable:
    """``loss_fn``, or a ``ValueError`` that names ``method`` and says how to pass it."""
    if loss_fn is None:
        raise ValueError(
            f"{method} re-evaluates the objective and needs loss_fn: call "
            f"update(grads, state, params, loss_fn=loss_fn), use ifn.step(transform, state, "
            f"params, loss_fn), or step a TransformOptimizer with a closure"
        )
    if not callable(loss_fn):
        raise TypeError(f"{method}: loss_fn must be callable, got {type(loss_fn).__name__}")
    return loss_fn


def require_functional_loss_fn(loss_fn: Callable, method: str, needs: str = "second derivatives") -> Callable:
    """``loss_fn``, or a ``ValueError`` when it is an objective built from a ``torch.optim``
    closure (it has its own ``value_and_grad``): such an objective swaps the module's
    parameters in place and knows only its gradient, so ``torch.func`` cannot differentiate
    it again (torch 2.13 even crashes on a ``jvp`` through it)."""
    if hasattr(loss_fn, "value_and_grad"):
        raise ValueError(
            f"{method} needs {needs} of loss_fn by torch.func, which a TransformOptimizer closure cannot give "
            "(it knows only its gradient): use ifn.step(transform, state, params, loss_fn) with a "
            "loss_fn(params) written with torch.func.functional_call"
        )
    return loss_fn
