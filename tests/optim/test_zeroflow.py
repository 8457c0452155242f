"""INFTY-compatible ZeroFlow: the functional numbers through INFTY's interface, the
memory-efficient path, resumable state, clear errors. (Agreement with infty itself:
tests/zeroth_order/test_reference_infty.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infty_func as ifn
from tests.adapter_runs import assert_checkpoint_resumes
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of


def run(args, batches, model=None, opt=None, base_lr=0.05):
    model = model or make_mlp()
    opt = opt or ifn.optim.ZeroFlow(
        model.parameters(), torch.optim.SGD(model.parameters(), lr=base_lr, momentum=0.9), model, args=args
    )
    outputs = []
    for x, y in batches:

        def closure(x=x, y=y):
            logits = model(x)
            return logits, [nn.functional.cross_entropy(logits, y), 0.5 * logits.pow(2).mean()]

        opt.set_closure(closure)
        outputs.append(opt.step())
    return model, opt, outputs


@pytest.mark.parametrize("args", [{"q": 1}, {"q": 3, "perturbation_mode": "one_side"}, {"q": 2, "use_history_grad": True}])
def test_compat_class_equals_the_functional_alias(args):
    batches = make_batches(5)
    model, _, outputs = run({"inftyopt": "zo_sgd", **args}, batches)
    logits, losses = outputs[0]
    assert logits.shape == (12, 4) and len(losses) == 2
    functional = make_mlp()
    params = params_of(functional)
    tx = ifn.zo_sgd(
        0.05,
        momentum=0.9,
        q=args["q"],
        mode=args.get("perturbation_mode", "two_side"),
        history=0.9 if args.get("use_history_grad") else None,
    )
    state = tx.init(params)
    for x, y in batches:
        base = loss_fn_for(functional, x, y)

        def loss_fn(p, x=x):
            logits = torch.func.functional_call(functional, p, (x,))
            return torch.stack([base(p), 0.5 * logits.pow(2).mean()])

        params, state, _ = ifn.step(tx, state, params, loss_fn)
    for key, value in params_of(model).items():
        torch.testing.assert_close(value, params[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize("inftyopt", ["zo_sgd", "zo_adam", "zo_sgd_conserve"])
def test_memory_efficient_path_gives_the_same_numbers(inftyopt):
    batches = make_batches(4)
    dense, _, _ = run({"inftyopt": inftyopt, "memory_efficient": False}, batches)
    lean, _, _ = run({"inftyopt": inftyopt, "memory_efficient": True}, batches)
    for key, value in params_of(dense).items():
        torch.testing.assert_close(params_of(lean)[key], value, rtol=0, atol=1e-15)


def test_state_dict_resumes_bit_identically():
    args = {"inftyopt": "zo_adam", "q": 2, "use_history_grad": True}
    assert_checkpoint_resumes(
        lambda model: run(args, [], model)[1],
        lambda opt, model, batches: run(args, batches, model, opt),
        make_batches(6, seed=3),
        split=3,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"inftyopt": "zo_rmsprop"}, "unknown inftyopt 'zo_rmsprop'"),
        ({"perturbation_mode": "sideways"}, "unknown perturbation_mode"),
        ({"inftyopt": "zo_sgd_conserve", "q": 2}, "takes q=1"),
        ({"q": 0}, "q >= 1"),
        ({"zo_eps": 0.0}, "eps > 0"),
        ({"gradient_sparsity": 1.2}, "sparsity must be a fraction"),
        ({"gradient_sparsity": {"nope": 0.1}}, r"names parameters \['nope'\]"),
        ({"zo_epsilon": 1e-3}, r"does not take args \['zo_epsilon'\]"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(args, message):
    model = make_mlp()
    with pytest.raises(ValueError, match=message):
        ifn.optim.ZeroFlow(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), model, args=args)


def test_step_without_closure_says_how_to_set_one():
    model = make_mlp()
    opt = ifn.optim.ZeroFlow(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), model, args={})
    with pytest.raises(ValueError, match="set_closure"):
        opt.step()
    assert repr(opt) == "ZeroFlow(zo_sgd)"


def test_transform_optimizer_runs_a_two_sided_estimate_without_evaluating_f_at_w():
    model = make_mlp()
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.zo_sgd(0.05))
    x, y = make_batches(1)[0]
    calls = []

    def closure(backward=True):
        calls.append(backward)
        loss = nn.functional.cross_entropy(model(x), y)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [False, False] and torch.isfinite(loss)


def test_parameters_frozen_after_construction_are_left_alone():
    model = make_mlp()
    opt = ifn.optim.ZeroFlow(
        model.parameters(), torch.optim.SGD(model.parameters(), lr=0.05, weight_decay=0.5), model, args={"inftyopt": "zo_sgd"}
    )
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    run({"inftyopt": "zo_sgd"}, make_batches(3), model, opt)
    assert torch.equal(model[0].weight, frozen)
