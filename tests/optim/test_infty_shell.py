"""What every INFTY-compatible class shares (infty_func/optim/infty_shell.py)."""

from __future__ import annotations

import pytest
import torch

import infty_func as ifn
from tests.conftest import make_mlp

CLASSES = ["SAM", "GSAM", "GAM", "LookSAM", "C_Flat", "PCGrad", "CAGrad", "GradVac", "UniGrad_FS", "OGD", "ZeroFlow"]


@pytest.mark.parametrize("name", CLASSES)
def test_step_without_a_closure_is_refused_with_advice(name):
    model = make_mlp()
    opt = getattr(ifn.optim, name)(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(ValueError, match=rf"^{name}\.step needs a closure: call set_closure\(fn\) first or pass step\(closure\)"):
        opt.step()
