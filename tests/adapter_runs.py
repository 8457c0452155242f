"""Training the test MLP through ``TransformOptimizer`` or an INFTY-compatible class, and
the checkpoint property every transform keeps: saving midway and resuming gives
bit-identical parameters."""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from torch import nn

import infty_func as ifn
from tests.conftest import loss_fn_for, make_mlp, params_of


def adapter_run(factory: Callable[[], ifn.GradientTransformation], batches, model=None, opt=None):
    """Step a ``TransformOptimizer`` over ``batches`` with an ordinary closure."""
    model = model or make_mlp()
    opt = opt or ifn.optim.TransformOptimizer(model.named_parameters(), factory())
    for x, y in batches:

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return model, opt


def functional_trained(transform: ifn.GradientTransformation, batches, model: nn.Module | None = None) -> dict:
    """The test MLP's (or ``model``'s) parameters after one ``ifn.step`` of ``transform``
    per batch: the functional twin of :func:`adapter_run`."""
    model = model or make_mlp()
    params = params_of(model)
    state = transform.init(params)
    for x, y in batches:
        params, state, _ = ifn.step(transform, state, params, loss_fn_for(model, x, y))
    return params


def infty_two_task_run(opt, model: nn.Module, batches) -> None:
    """Step an INFTY multi-objective class over ``batches`` taken in pairs: one closure per
    pair, one cross-entropy loss per batch of the pair."""
    for (x, y), (x2, y2) in zip(batches[::2], batches[1::2]):
        opt.set_closure(
            lambda x=x, y=y, x2=x2, y2=y2: (
                model(x),
                [nn.functional.cross_entropy(model(x), y), nn.functional.cross_entropy(model(x2), y2)],
            )
        )
        opt.step()


def assert_resume_is_bit_identical(factory: Callable[[], ifn.GradientTransformation], batches, split: int) -> None:
    """``assert_checkpoint_resumes`` for a ``TransformOptimizer`` over ``factory()``."""
    assert_checkpoint_resumes(
        lambda model: ifn.optim.TransformOptimizer(model.named_parameters(), factory()),
        lambda opt, model, part: adapter_run(factory, part, model, opt),
        batches,
        split,
    )


def assert_checkpoint_resumes(
    build: Callable[[nn.Module], torch.optim.Optimizer],
    train: Callable[[torch.optim.Optimizer, nn.Module, list], object],
    batches,
    split: int,
    start: Callable[[], object] = lambda: None,
) -> None:
    """An uninterrupted run equals one saved (``torch.save``) after ``split`` batches and
    resumed into a fresh model and optimizer, bit for bit. ``build(model)`` makes the
    optimizer, ``train(opt, model, batches)`` steps it, and ``start()`` runs before each of
    the two runs that begin from scratch (to seed a global generator the optimizer reads)."""
    start()
    uninterrupted = make_mlp()
    train(build(uninterrupted), uninterrupted, batches)
    start()
    model = make_mlp()
    opt = build(model)
    train(opt, model, batches[:split])
    resumed, resumed_opt = resumed_copy(model, opt, build)
    train(resumed_opt, resumed, batches[split:])
    assert_same_parameters(uninterrupted, resumed)


def resumed_copy(model: nn.Module, opt, build: Callable[[nn.Module], torch.optim.Optimizer]):
    """A fresh test MLP and optimizer (``build(model)``) loaded from a ``torch.save`` of
    ``model``'s and ``opt``'s state dicts."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = make_mlp(seed=99)
    resumed.load_state_dict(saved["model"])
    resumed_opt = build(resumed)
    resumed_opt.load_state_dict(saved["opt"])
    return resumed, resumed_opt


def assert_same_parameters(expected: nn.Module, actual: nn.Module) -> None:
    """Bit for bit."""
    for key, value in params_of(expected).items():
        assert torch.equal(value, params_of(actual)[key]), key
