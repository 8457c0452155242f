"""Core helpers: chain, named_chain, step, jacobian, hvp, cond, tree_get/tree_set,
inject_hyperparams, schedules and multi_steps."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

import infty_func as ifn
from infty_func.transforms import schedules


def quadratic(hessian):
    return lambda p: 0.5 * p["w"] @ hessian @ p["w"]


def test_step_on_a_quadratic_is_one_gradient_step():
    h = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    params = {"w": torch.tensor([1.0, -1.0], dtype=torch.float64)}
    tx = ifn.sgd(0.1)
    new, _, value = ifn.step(tx, tx.init(params), params, quadratic(h))
    torch.testing.assert_close(new["w"], params["w"] - 0.1 * h @ params["w"])
    torch.testing.assert_close(value, quadratic(h)(params))


def test_step_passes_loss_fn_and_value_to_the_transform():
    seen = {}

    def spy_update(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    tx = ifn.chain(ifn.GradientTransformation(lambda p: ifn.EmptyState(), spy_update), ifn.sgd(0.1))
    params = {"w": torch.ones(2)}
    ifn.step(tx, tx.init(params), params, lambda p: p["w"].sum(), batch_index=3)
    assert set(seen) == {"loss_fn", "value", "batch_index"}
    assert seen["value"].item() == 2.0


def test_jacobian_rows_are_the_per_loss_gradients_from_one_forward():
    calls = []

    def losses(p):
        calls.append(1)
        return torch.stack([p["w"].pow(2).sum(), (3 * p["w"]).sum(), p["w"].prod(), p["w"][0] ** 3, p["w"][1]])

    params = {"w": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    values, jac = ifn.jacobian(losses)(params)
    assert len(calls) == 1
    expected = torch.tensor([[2.0, 4.0], [3.0, 3.0], [2.0, 1.0], [3.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(jac["w"], expected)
    torch.testing.assert_close(values, losses(params))
    values2, jac2 = ifn.jacobian(lambda p: losses(p)[:2])(params)  # the looped path
    torch.testing.assert_close(jac2["w"], expected[:2])


def test_step_with_several_losses_hands_the_jacobian_to_the_transform():
    seen = {}

    def spy_update(updates, state, params=None, **extra):
        seen["shape"] = updates["w"].shape
        return {"w": updates["w"].sum(0)}, state

    tx = ifn.chain(ifn.GradientTransformation(lambda p: ifn.EmptyState(), spy_update), ifn.sgd(0.1))
    params = {"w": torch.ones(3)}
    ifn.step(tx, tx.init(params), params, lambda p: torch.stack([p["w"].sum(), p["w"].pow(2).sum()]))
    assert seen["shape"] == (2, 3)


def test_value_and_grad_with_aux_returns_it():
    (value, aux), grads = ifn.value_and_grad(lambda p: (p["w"].sum(), p["w"] * 2))({"w": torch.ones(2)})
    assert value.item() == 2.0 and torch.equal(aux, torch.full((2,), 2.0))
    assert torch.equal(grads["w"], torch.ones(2))


def test_hvp_and_hvp_operator_equal_the_hessian_product():
    h = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 4.0]], dtype=torch.float64)
    params = {"w": torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)}
    v = {"w": torch.tensor([0.3, 0.2, -1.0], dtype=torch.float64)}
    torch.testing.assert_close(ifn.hvp(quadratic(h), params, v)["w"], h @ v["w"])
    operator = ifn.hvp_operator(quadratic(h), params)
    torch.testing.assert_close(operator(v)["w"], h @ v["w"])
    basis = {"w": torch.eye(3, dtype=torch.float64)}
    torch.testing.assert_close(vmap(operator)(basis)["w"], h)


def test_cond_takes_one_branch_for_a_plain_predicate_and_selects_under_vmap():
    taken = []

    def on_true(x):
        taken.append("true")
        return x + 1

    def on_false(x):
        taken.append("false")
        return x - 1

    assert ifn.cond(torch.tensor(True), on_true, on_false, torch.zeros(())).item() == 1
    assert taken == ["true"]
    taken.clear()
    out = vmap(lambda p, x: ifn.cond(p, on_true, on_false, x))(torch.tensor([True, False]), torch.zeros(2))
    assert out.tolist() == [1.0, -1.0] and sorted(taken) == ["false", "true"]


def test_named_chain_state_is_readable_by_name():
    tx = ifn.named_chain(("clip", ifn.clip_by_global_norm(1.0)), ("opt", ifn.adam(0.1)))
    state = tx.init({"w": torch.zeros(2)})
    assert set(state) == {"clip", "opt"}
    assert float(ifn.tree_get(state["opt"], "lr")) == 0.1


def test_tree_set_replaces_the_learning_rate_and_keeps_its_dtype():
    tx = ifn.sgd(0.1, momentum=0.9)
    state = ifn.tree_set(tx.init({"w": torch.zeros(2)}), lr=0.5)
    assert ifn.tree_get(state, "lr").dtype == torch.float64 and float(ifn.tree_get(state, "lr")) == 0.5
    with pytest.raises(KeyError, match="no field named"):
        ifn.tree_set(state, nonsense=1.0)


def test_one_learning_rate_per_vmapped_member():
    tx = ifn.sgd(0.1)
    params = {"w": torch.ones(4, 2)}
    state = vmap(tx.init)(params)
    state = ifn.tree_set(state, lr=torch.tensor([0.0, 0.1, 0.2, 0.3], dtype=torch.float64))
    grads = {"w": torch.ones(4, 2)}
    updates, _ = vmap(tx.update)(grads, state, params)
    torch.testing.assert_close(updates["w"][:, 0], torch.tensor([0.0, -0.1, -0.2, -0.3]))


def test_inject_hyperparams_keeps_values_in_state_and_follows_schedules():
    tx = ifn.inject_hyperparams(ifn.sgd)(lr=schedules.piecewise_constant(1.0, {2: 0.1}), momentum=0.0)
    params = {"w": torch.zeros(1, dtype=torch.float64)}
    state = tx.init(params)
    steps = []
    for _ in range(4):
        updates, state = tx.update({"w": torch.ones(1, dtype=torch.float64)}, state, params)
        steps.append(round(-updates["w"].item(), 12))
    assert steps == [1.0, 1.0, 0.1, 0.1]
    assert state.hyperparams["lr"].item() == pytest.approx(0.1)
    state = ifn.tree_set(state, momentum=0.5)
    assert state.hyperparams["momentum"].item() == 0.5


def test_inject_hyperparams_value_changed_between_steps_takes_effect():
    tx = ifn.inject_hyperparams(ifn.adam)(lr=0.1)
    params = {"w": torch.zeros(1)}
    state = ifn.tree_set(tx.init(params), lr=0.0)
    updates, _ = tx.update({"w": torch.ones(1)}, state, params)
    assert updates["w"].item() == 0.0


def test_multi_steps_averages_k_gradients_then_steps_once():
    tx = ifn.multi_steps(ifn.sgd(1.0), every_k=3)
    params = {"w": torch.zeros(1)}
    state = tx.init(params)
    outs = []
    for g in [1.0, 2.0, 6.0, 1.0]:
        updates, state = tx.update({"w": torch.tensor([g])}, state, params)
        outs.append(updates["w"].item())
    assert outs == [0.0, 0.0, -3.0, 0.0]


@pytest.mark.parametrize(
    "schedule,expected",
    [
        (schedules.constant(0.5), [0.5, 0.5, 0.5]),
        (schedules.linear(1.0, 0.0, 4), [1.0, 0.5, 0.0]),
        (schedules.cosine_decay(1.0, 4), [1.0, 0.5, 0.0]),
        (schedules.exponential_decay(1.0, 2, 0.5), [1.0, 0.5, 0.25]),
        (schedules.exponential_decay(1.0, 3, 0.5, staircase=True), [1.0, 1.0, 0.5]),
        (schedules.piecewise_constant(1.0, {1: 0.5, 3: 0.1}), [1.0, 0.5, 0.05]),
        (schedules.warmup_cosine_decay(0.0, 1.0, 2, 6), [0.0, 1.0, 0.5]),
        (schedules.join([schedules.constant(1.0), schedules.linear(1.0, 0.0, 2)], [2]), [1.0, 1.0, 0.0]),
    ],
)
def test_schedules_at_steps_0_2_4(schedule, expected):
    values = [float(schedule(torch.tensor(t))) for t in (0, 2, 4)]
    assert values == pytest.approx(expected)


def test_schedules_run_under_vmap_over_counts():
    schedule = schedules.warmup_cosine_decay(0.0, 1.0, 2, 6)
    counts = torch.arange(7)
    batched = vmap(schedule)(counts)
    torch.testing.assert_close(batched, torch.stack([schedule(c) for c in counts]))


@pytest.mark.parametrize("losses", [1, 2, 5])
def test_plain_autograd_and_torch_func_paths_agree(monkeypatch, losses):
    from infty_func.core import objective

    weights = {"w": torch.randn(4, 3, dtype=torch.float64), "b": torch.randn(3, dtype=torch.float64)}
    x = torch.randn(6, 4, dtype=torch.float64)

    def loss_fn(p):
        out = torch.tanh(x @ p["w"] + p["b"])
        per = torch.stack([out[:, i % 3].pow(i + 1).mean() for i in range(losses)])
        return per[0] if losses == 1 else per

    fast_value, fast = objective.value_and_derivative(loss_fn)(weights)
    monkeypatch.setattr(objective, "_inside_functorch", lambda: True)
    func_value, reference = objective.value_and_derivative(loss_fn)(weights)
    torch.testing.assert_close(fast_value, func_value, rtol=0, atol=1e-14)
    for key in weights:
        torch.testing.assert_close(fast[key], reference[key], rtol=0, atol=1e-14)


def test_a_parameter_outside_the_loss_gets_a_zero_gradient():
    params = {"used": torch.ones(2), "unused": torch.ones(3)}
    _, grads = ifn.value_and_derivative(lambda p: p["used"].sum())(params)
    assert torch.equal(grads["unused"], torch.zeros(3)) and torch.equal(grads["used"], torch.ones(2))


def test_value_and_grad_with_aux_is_the_same_on_both_paths(monkeypatch):
    from infty_func.core import objective

    params = {"w": torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)}
    loss_fn = lambda p: ((p["w"] ** 3).sum(), p["w"] * 2)  # noqa: E731
    (fast_value, fast_aux), fast = ifn.value_and_grad(loss_fn)(params)
    assert not fast_aux.requires_grad
    monkeypatch.setattr(objective, "_inside_functorch", lambda: True)
    (value, aux), reference = ifn.value_and_grad(loss_fn)(params)
    torch.testing.assert_close(fast_value, value, rtol=0, atol=0)
    torch.testing.assert_close(fast_aux, aux, rtol=0, atol=0)
    torch.testing.assert_close(fast["w"], reference["w"], rtol=0, atol=0)


def test_tree_vdot_promotes_mixed_dtypes():
    import infty_func as ifn

    a = {"w": torch.ones(3, dtype=torch.float32)}
    b = {"w": torch.full((3,), 2.0, dtype=torch.float64)}
    assert ifn.tree_vdot(a, b).dtype == torch.float64 and float(ifn.tree_vdot(a, b)) == 6.0
