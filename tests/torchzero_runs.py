"""Training a model with a ``torchzero`` optimizer, for the reference tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from torch import nn

from tests.conftest import params_of

TORCHZERO_MISSING = "reference package torchzero not installed (pip install --no-deps torchzero)"


def require_torchzero():
    """The ``torchzero`` module, or a skip that says how to install it."""
    return pytest.importorskip("torchzero", reason=TORCHZERO_MISSING)


def torchzero_trained(model: nn.Module, modules: Sequence, batches, loss: Callable = nn.functional.cross_entropy) -> dict:
    """``model``'s parameters after one ``tz.Optimizer(model.parameters(), *modules)`` step
    per batch, with torchzero's closure convention (``backward=False`` evaluates only)."""
    tz = require_torchzero()
    opt = tz.Optimizer(model.parameters(), *modules)
    for x, y in batches:

        def closure(backward=True, x=x, y=y):
            value = loss(model(x), y)
            if backward:
                opt.zero_grad()
                value.backward()
            return value

        opt.step(closure)
    return params_of(model)
