"""Training the test MLP through ``TransformOptimizer``, and the checkpoint property every
transform keeps: saving midway and resuming gives bit-identical parameters."""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from torch import nn

import infty_func as ifn
from tests.conftest import make_mlp, params_of


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


def assert_resume_is_bit_identical(factory: Callable[[], ifn.GradientTransformation], batches, split: int) -> None:
    """An uninterrupted run equals one saved (``torch.save``) after ``split`` batches and
    resumed into a fresh model and optimizer, bit for bit."""
    uninterrupted, _ = adapter_run(factory, batches)
    model, opt = adapter_run(factory, batches[:split])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = make_mlp(seed=99)
    resumed.load_state_dict(saved["model"])
    resumed_opt = ifn.optim.TransformOptimizer(resumed.named_parameters(), factory())
    resumed_opt.load_state_dict(saved["opt"])
    adapter_run(factory, batches[split:], resumed, resumed_opt)
    for key, value in params_of(uninterrupted).items():
        assert torch.equal(value, params_of(resumed)[key]), key
