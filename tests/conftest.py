"""Shared fixtures: a small float64 MLP, its functional loss, and deterministic batches."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call


def make_mlp(seed: int = 0, sizes=(6, 16, 4), dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def make_batches(count: int, seed: int = 1, batch: int = 12, features: int = 6, classes: int = 4, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch, features, generator=generator, dtype=dtype),
            torch.randint(0, classes, (batch,), generator=generator),
        )
        for _ in range(count)
    ]


def infty_closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """INFTY's closure form: ``() -> (logits, [cross-entropy])``."""

    def closure():
        logits = model(x)
        return logits, [nn.functional.cross_entropy(logits, y)]

    return closure


def params_of(model: nn.Module) -> dict:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def loss_fn_for(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def loss_fn(params):
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return loss_fn


def max_abs_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype for one test (reference packages that make tensors
    in the default dtype: conflictfree's weights, PyHessian's and INFTY's internals)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def mlp():
    return make_mlp()


def _counting(monkeypatch, name: str) -> list[int]:
    """Replace ``torch.<name>`` by a wrapper that records how many tensors each call gets."""
    calls = []
    kernel = getattr(torch, name)

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return kernel(*args, **kwargs)

    monkeypatch.setattr(torch, name, counting)
    return calls


@pytest.fixture
def fused_calls(monkeypatch):
    """The calls of torch's fused Adam kernel."""
    return _counting(monkeypatch, "_fused_adam_")


@pytest.fixture
def adamw_kernel_calls(monkeypatch):
    """The calls of torch's fused AdamW kernel, which writes Adam's direction into owned
    gradients."""
    return _counting(monkeypatch, "_fused_adamw_")
