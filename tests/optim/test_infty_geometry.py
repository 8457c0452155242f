"""INFTY-compatible geometry classes: the reference's usage, counted closure calls,
resumable state, clear errors. (Agreement with infty itself: tests/geometry.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infty_func as ifn
from tests.adapter_runs import assert_checkpoint_resumes
from tests.conftest import make_batches, make_mlp, params_of

CLASSES = {
    "SAM": (ifn.optim.SAM, {"rho": 0.05}, 2),
    "GSAM": (ifn.optim.GSAM, {"rho": 0.05}, 2),
    "GAM": (ifn.optim.GAM, {"rho": 0.05}, 4),
    "LookSAM": (ifn.optim.LookSAM, {"rho": 0.05, "k": 2}, 1.5),
    "C_Flat": (ifn.optim.C_Flat, {"rho": 0.05}, 4),
}


def build(name, model):
    cls, args, _ = CLASSES[name]
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return cls(model.parameters(), base, model, args=dict(args))


def train(opt, model, batches, calls=None):
    outputs = []
    for x, y in batches:

        def closure():
            if calls is not None:
                calls.append(1)
            logits = model(x)
            return logits, [nn.functional.cross_entropy(logits, y), 0.1 * logits.pow(2).mean()]

        opt.set_closure(closure)
        outputs.append(opt.step())
    return outputs


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_step_returns_logits_and_losses_and_calls_the_closure_the_documented_number_of_times(name):
    model = make_mlp()
    opt = build(name, model)
    calls = []
    batches = make_batches(4)
    outputs = train(opt, model, batches, calls)
    logits, losses = outputs[0]
    assert logits.shape == (12, 4) and len(losses) == 2
    assert len(calls) == CLASSES[name][2] * len(batches)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_state_dict_resumes_bit_identically(name):
    assert_checkpoint_resumes(lambda model: build(name, model), train, make_batches(8, seed=5), split=3)


def test_equals_the_functional_path_with_the_summed_losses():
    model, batches = make_mlp(), make_batches(5)
    train(build("GSAM", model), model, batches)
    functional = make_mlp()
    params = params_of(functional)
    tx = ifn.chain(ifn.gsam(0.05), ifn.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    for x, y in batches:

        def loss_fn(p, x=x, y=y):
            logits = torch.func.functional_call(functional, p, (x,))
            return nn.functional.cross_entropy(logits, y) + 0.1 * logits.pow(2).mean()

        params, state, _ = ifn.step(tx, state, params, loss_fn)
    for key, value in params_of(model).items():
        torch.testing.assert_close(value, params[key], rtol=0, atol=1e-13)


def test_rho_scheduler_is_stepped_like_infty_and_rho_can_be_set():
    class Halving:
        def __init__(self):
            self.value = 0.4

        def step(self):
            self.value /= 2
            return self.value

    model = make_mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = ifn.optim.SAM(model.parameters(), base, model, args={"rho": 1.0, "rho_scheduler": Halving()})
    assert opt.rho == 0.2  # stepped once at construction, as infty does
    opt.update_rho_t()
    assert opt.rho == 0.1
    opt.rho = 0.0  # rho = 0: SAM is plain SGD
    reference = make_mlp()
    sgd = torch.optim.SGD(reference.parameters(), lr=0.1)
    x, y = make_batches(1)[0]
    train(opt, model, [(x, y)])
    sgd.zero_grad()
    logits = reference(x)
    (nn.functional.cross_entropy(logits, y) + 0.1 * logits.pow(2).mean()).backward()
    sgd.step()
    for key, value in params_of(model).items():
        torch.testing.assert_close(value, params_of(reference)[key], rtol=0, atol=1e-15)


def test_delay_leaves_the_update_to_delay_step():
    model = make_mlp()
    opt = build("SAM", model)
    before = params_of(model)
    x, y = make_batches(1)[0]
    opt.set_closure(lambda: (model(x), [nn.functional.cross_entropy(model(x), y)]))
    opt.step(delay=True)
    assert all(torch.equal(v, params_of(model)[k]) for k, v in before.items())
    opt.delay_step()
    assert not all(torch.equal(v, params_of(model)[k]) for k, v in before.items())


def test_errors_name_the_problem():
    model = make_mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"SAM does not take args \['rh0'\]"):
        ifn.optim.SAM(model.parameters(), base, model, args={"rh0": 0.1})
    with pytest.raises(TypeError, match="needs a torch.optim.Optimizer"):
        ifn.optim.SAM(model.parameters(), "sgd", model, args={})
    opt = ifn.optim.SAM(model.parameters(), base, model, args={})
    with pytest.raises(ValueError, match="call set_closure"):
        opt.step()
    x, y = make_batches(1)[0]
    opt.set_closure(lambda: nn.functional.cross_entropy(model(x), y))
    with pytest.raises(TypeError, match=r"returns \(logits, loss_list\)"):
        opt.step()
    assert repr(opt) == "SAM(SGD)"
