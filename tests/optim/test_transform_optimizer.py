"""The torch.optim adapter: a real Optimizer, lr schedulers, closures, loss_fn from closures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infty_func as ifn
from infty_func.core.objective import value_and_grad
from tests.conftest import make_batches, make_mlp, max_abs_diff, params_of


def test_is_a_torch_optimizer_and_accepts_plain_parameters():
    model = make_mlp()
    opt = ifn.optim.TransformOptimizer(model.parameters(), ifn.sgd(0.1))
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_step_lr_changes_the_step_size_as_for_torch_sgd(momentum):
    batches = make_batches(30, seed=5)
    reference = make_mlp()
    ours = make_mlp()
    torch_opt = torch.optim.SGD(reference.parameters(), lr=0.2, momentum=momentum)
    our_opt = ifn.optim.TransformOptimizer(ours.named_parameters(), ifn.sgd(0.2, momentum=momentum))
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3) for o in (torch_opt, our_opt)]
    for x, y in batches:
        lr_used = torch_opt.param_groups[0]["lr"]
        for model, opt in ((reference, torch_opt), (ours, our_opt)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        # the transform stepped with exactly the scheduler's value
        assert float(ifn.tree_get(our_opt.transform_state, "lr")) == lr_used
        for scheduler in schedulers:
            scheduler.step()
        assert our_opt.param_groups[0]["lr"] == torch_opt.param_groups[0]["lr"]
    assert torch_opt.param_groups[0]["lr"] < 0.2 * 0.3**3  # the schedule really decayed
    assert max_abs_diff(params_of(ours), params_of(reference)) <= 1e-12


def test_lr_set_by_hand_reaches_the_transform():
    model = make_mlp()
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.sgd(0.1))
    opt.param_groups[0]["lr"] = 0.0
    before = params_of(model)
    x, y = make_batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert max_abs_diff(before, params_of(model)) == 0.0


def counting_reevaluation():
    """A transform that replaces the gradient by the gradient at params - 0.01·g, through
    loss_fn (as SAM-like methods do)."""

    def init_fn(params):
        return ifn.EmptyState()

    def update_fn(updates, state, params=None, loss_fn=None, **extra):
        if loss_fn is None:
            raise ValueError("reevaluate needs loss_fn")
        shifted = ifn.tree_add_scaled(params, -0.01, updates)
        _, grads = value_and_grad(loss_fn)(shifted)
        return grads, state

    return ifn.GradientTransformation(init_fn, update_fn)


def test_loss_fn_built_from_the_closure_equals_the_functional_path():
    x, y = make_batches(1)[0]
    tx = ifn.chain(counting_reevaluation(), ifn.sgd(0.1))

    model = make_mlp()
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), tx)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)

    reference = make_mlp()
    params = params_of(reference)
    state = tx.init(params)
    for _ in range(3):
        params, state, _ = ifn.step(
            tx,
            state,
            params,
            lambda p: nn.functional.cross_entropy(torch.func.functional_call(reference, p, (x,)), y),
        )
    assert max_abs_diff(params_of(model), params) <= 1e-12
    # the closure's own gradient (at the unperturbed point) is what .grad holds afterwards
    assert all(p.grad is not None for p in model.parameters())


def test_closure_objective_restores_parameters_and_grads():
    model = make_mlp()
    x, y = make_batches(1)[0]
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.sgd(0.1))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    closure()
    grads_before = [p.grad.clone() for p in model.parameters()]
    params_before = params_of(model)
    objective = ifn.optim.ClosureObjective(closure, list(params_before), list(model.parameters()))
    shifted = {k: v + 1.0 for k, v in params_before.items()}
    value, grads = objective.value_and_grad(shifted)
    assert value.item() != pytest.approx(closure().item())
    assert max_abs_diff(params_before, params_of(model)) == 0.0
    closure()
    for before, p in zip(grads_before, model.parameters()):
        assert torch.equal(before, p.grad)


def test_value_only_closure_with_backward_flag_builds_no_graph():
    model = make_mlp()
    x, y = make_batches(1)[0]
    seen = []

    def closure(backward=True):
        loss = nn.functional.cross_entropy(model(x), y)
        seen.append(loss.requires_grad)
        if backward:
            loss.backward()
        return loss

    objective = ifn.optim.ClosureObjective(closure, [n for n, _ in model.named_parameters()], list(model.parameters()))
    objective(params_of(model))
    assert seen == [False]


def test_more_than_one_param_group_is_refused_with_advice():
    model = make_mlp()
    groups = [{"params": [model[0].weight]}, {"params": [model[0].bias]}]
    with pytest.raises(ValueError, match="partition"):
        ifn.optim.TransformOptimizer(groups, ifn.sgd(0.1))


def test_load_state_dict_from_another_transform_is_refused():
    model = make_mlp()
    saved = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.adam(0.1)).state_dict()
    other = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.sgd(0.1, momentum=0.9))
    with pytest.raises(ValueError, match="same transform"):
        other.load_state_dict(saved)


def test_load_state_dict_with_other_shapes_is_refused():
    saved = ifn.optim.TransformOptimizer(make_mlp().named_parameters(), ifn.adam(0.1)).state_dict()
    wider = make_mlp(sizes=(6, 20, 4))
    with pytest.raises(ValueError, match=r"saved state tensor \d+ has shape \(16, 6\), expected \(20, 6\)"):
        ifn.optim.TransformOptimizer(wider.named_parameters(), ifn.adam(0.1)).load_state_dict(saved)

