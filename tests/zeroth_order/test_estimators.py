"""What the zeroth-order and forward-gradient transforms promise: unbiased estimates, no
backward graph, the documented number of evaluations, keyed reproducibility, vmap over
seeds, the conservative rule, and clear errors."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of


def quadratic(n=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    root = torch.randn(n, n, generator=generator, dtype=torch.float64)
    hessian = root @ root.T / n + torch.eye(n, dtype=torch.float64)
    shift = torch.randn(n, generator=generator, dtype=torch.float64)
    w = torch.randn(n, generator=generator, dtype=torch.float64)

    def loss_fn(p):
        return 0.5 * p["w"] @ hessian @ p["w"] + shift @ p["w"]

    return {"w": w}, loss_fn, hessian @ w + shift


def many_estimates(transform, samples=4000):
    params, loss_fn, gradient = quadratic()
    state = transform.init(params)
    states = ifn.random.reseed(state, range(samples))
    estimates, _ = vmap(lambda s: transform.update(None, s, params, loss_fn=loss_fn))(states)
    return estimates["w"], gradient


@pytest.mark.parametrize(
    "transform",
    [ifn.zo_gradient(1e-4), ifn.zo_gradient(1e-4, memory_efficient=False), ifn.forward_gradient()],
    ids=["spsa_memory_efficient", "spsa", "forward_gradient"],
)
def test_the_mean_of_4000_estimates_is_the_gradient_within_three_standard_errors(transform):
    estimates, gradient = many_estimates(transform)
    mean = estimates.mean(0)
    standard_error = estimates.std(0) / estimates.shape[0] ** 0.5
    assert torch.all((mean - gradient).abs() <= 3 * standard_error), (mean, gradient, standard_error)
    assert torch.all(standard_error > 0)


def recording(loss_fn):
    seen = []

    def recorded(params):
        value = loss_fn(params)
        seen.append(value)
        return value

    return recorded, seen


@pytest.mark.parametrize(
    "transform",
    [ifn.zo_sgd(0.1), ifn.zo_sgd(0.1, mode="one_side"), ifn.zo_sgd_conserve(0.1), ifn.forward_grad(0.1)],
    ids=["two_side", "one_side", "conserve", "forward_grad"],
)
def test_no_backward_graph_is_built(transform):
    model = make_mlp()
    params = {k: v.requires_grad_(True) for k, v in params_of(model).items()}
    x, y = make_batches(1)[0]
    loss_fn, seen = recording(loss_fn_for(model, x, y))
    new_params, _, _ = ifn.step(transform, transform.init(params), params, loss_fn)
    assert seen and not any(v.requires_grad for v in seen)
    assert not any(p.requires_grad for p in ifn.tree_leaves(new_params))


@pytest.mark.parametrize(
    ("transform", "calls"),
    [
        (ifn.zo_sgd(0.1), 2),
        (ifn.zo_sgd(0.1, q=3), 6),
        (ifn.zo_sgd(0.1, mode="one_side"), 2),  # f(w) once, by step, then one probe
        (ifn.zo_sgd(0.1, mode="one_side", q=3), 4),
        (ifn.zo_sgd_conserve(0.1), 5),  # f(w), two probes, w + Δ, w − Δ
        (ifn.forward_grad(0.1), 1),  # one vmapped jvp
    ],
    ids=["two_side", "two_side_q3", "one_side", "one_side_q3", "conserve", "forward_grad"],
)
def test_loss_evaluations_per_step(transform, calls):
    model = make_mlp()
    params = params_of(model)
    x, y = make_batches(1)[0]
    loss_fn, seen = recording(loss_fn_for(model, x, y))
    _, state, value = ifn.step(transform, transform.init(params), params, loss_fn)
    assert len(seen) == calls
    if transform.needs_value:
        assert value is not None
    else:  # two-sided and forward gradients skip f(w); the state keeps a loss estimate
        assert value is None and torch.isfinite(ifn.tree_get(state, "loss"))


def test_memory_efficient_state_holds_no_parameter_sized_tensor():
    params = params_of(make_mlp())
    largest = max(p.numel() for p in params.values())
    for transform in (ifn.zo_sgd(0.1), ifn.zo_adam(0.1, q=2), ifn.zo_gradient(1e-3, sparsity=0.3)):
        estimator_state = ifn.tree_get_all(transform.init(params), "key")
        assert estimator_state, "the estimator keeps a key"
    state = ifn.zo_gradient(1e-3, q=4, sparsity=0.5).init(params)
    assert all(leaf.numel() <= 2 for leaf in ifn.tree_leaves(state)) and largest > 2


def train(transform, steps=6, seed_batches=3):
    model = make_mlp()
    params = params_of(model)
    state = transform.init(params)
    for x, y in make_batches(steps, seed=seed_batches):
        params, state, _ = ifn.step(transform, state, params, loss_fn_for(model, x, y))
    return params


@pytest.mark.parametrize(
    "factory",
    [
        lambda seed: ifn.zo_sgd(0.1, seed=seed, sparsity=0.3),
        lambda seed: ifn.zo_adam(0.01, seed=seed, q=2, history=0.5),
        lambda seed: ifn.forward_grad(0.1, seed=seed, n_tangents=3),
    ],
    ids=["zo_sgd", "zo_adam", "forward_grad"],
)
def test_same_seed_gives_the_same_bits_and_another_seed_other_bits(factory):
    first, second, other = train(factory(7)), train(factory(7)), train(factory(8))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize(
    "factory",
    [
        lambda seed: ifn.zo_sgd(0.1, seed=seed, momentum=0.9),
        lambda seed: ifn.zo_adam(0.01, seed=seed, q=2, mode="one_side"),
        lambda seed: ifn.zo_sgd_conserve(0.1, seed=seed, sparsity={"0.weight": 0.5}),
        lambda seed: ifn.forward_grad(0.1, seed=seed, n_tangents=2),
    ],
    ids=["zo_sgd", "zo_adam_one_side", "zo_sgd_conserve", "forward_grad"],
)
def test_vmap_over_four_seeds_equals_four_separate_runs(factory):
    seeds = [0, 1, 2, 3]
    model = make_mlp()
    params = params_of(model)
    batches = make_batches(4, seed=5)
    transform = factory(0)
    states = ifn.random.reseed(transform.init(params), seeds)
    stacked = {k: v.expand(len(seeds), *v.shape).clone() for k, v in params.items()}

    def train_step(p, s, x, y):
        return ifn.step(transform, s, p, loss_fn_for(model, x, y))[:2]

    for x, y in batches:
        stacked, states = vmap(train_step, in_dims=(0, 0, None, None))(stacked, states, x, y)
    for index, seed in enumerate(seeds):
        alone = factory(seed)
        p, s = params, alone.init(params)
        for x, y in batches:
            p, s = train_step(p, s, x, y)
        for key in p:
            torch.testing.assert_close(stacked[key][index], p[key], rtol=0, atol=1e-12)


def test_conservative_never_increases_the_loss_on_the_evaluated_batch():
    model = make_mlp()
    params = params_of(model)
    transform = ifn.zo_sgd_conserve(2.0, zo_eps=1e-2)  # a large step: many candidates are worse
    state = transform.init(params)
    rejected = 0
    for x, y in make_batches(25, seed=6):
        loss_fn = loss_fn_for(model, x, y)
        before = loss_fn(params)
        new_params, state, _ = ifn.step(transform, state, params, loss_fn)
        after = loss_fn(new_params)
        assert after <= before
        rejected += all(torch.equal(new_params[k], params[k]) for k in params)
        params = new_params
    assert rejected > 0  # the rule did refuse some steps


def test_sparsity_zeroes_the_given_fraction_and_only_in_named_parameters():
    params = {"big": torch.zeros(200, 100), "other": torch.zeros(50)}
    loss_fn = lambda p: (p["big"].sum() + p["other"].sum()) ** 2 + p["big"].sum()  # noqa: E731
    uniform = ifn.zo_gradient(1e-3, sparsity=0.3)
    estimate, _ = uniform.update(None, uniform.init(params), params, loss_fn=loss_fn)
    zero_fraction = (estimate["big"] == 0).float().mean().item()
    assert abs(zero_fraction - 0.3) < 0.02
    named = ifn.zo_gradient(1e-3, sparsity={"big": 0.5})
    estimate, _ = named.update(None, named.init(params), params, loss_fn=loss_fn)
    assert abs((estimate["big"] == 0).float().mean().item() - 0.5) < 0.02
    assert (estimate["other"] != 0).all()


def test_history_smooths_directions_from_the_first_one():
    params, loss_fn, _ = quadratic()
    transform = ifn.zo_gradient(1e-3, history=0.5, memory_efficient=False)
    plain = ifn.zo_gradient(1e-3, memory_efficient=False)
    first, state = transform.update(None, transform.init(params), params, loss_fn=loss_fn)
    reference, _ = plain.update(None, plain.init(params), params, loss_fn=loss_fn)
    torch.testing.assert_close(first["w"], reference["w"], rtol=0, atol=0)  # h starts at z
    assert state.history["w"].shape == params["w"].shape


@pytest.mark.parametrize("kind", ["zero", "flat"])
def test_degenerate_objectives_give_finite_updates(kind):
    params, _, _ = quadratic()
    loss_fn = (lambda p: p["w"].sum() * 0.0) if kind == "zero" else (lambda p: torch.tensor(3.0, dtype=torch.float64))
    for transform in (ifn.zo_sgd(0.1), ifn.zo_sgd_sign(0.1), ifn.zo_sgd_conserve(0.1), ifn.forward_grad(0.1)):
        new_params, _, _ = ifn.step(transform, transform.init(params), params, loss_fn)
        assert bool(ifn.tree_all_finite(new_params))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ifn.zo_gradient(q=0), "q >= 1"),
        (lambda: ifn.zo_gradient(eps=0.0), "eps > 0"),
        (lambda: ifn.zo_gradient(eps=-1e-3), "eps > 0"),
        (lambda: ifn.zo_gradient(mode="three_side"), "unknown mode 'three_side'"),
        (lambda: ifn.zo_gradient(history=1.5), "history"),
        (lambda: ifn.zo_gradient(sparsity=1.0).init({"w": torch.ones(2)}), r"sparsity must be a fraction in \[0, 1\)"),
        (lambda: ifn.zo_gradient(sparsity=-0.1).init({"w": torch.ones(2)}), "sparsity must be a fraction"),
        (lambda: ifn.zo_gradient(sparsity={"v": 0.1}).init({"w": torch.ones(2)}), r"names parameters \['v'\]"),
        (lambda: ifn.forward_gradient(n_tangents=0), "n_tangents >= 1"),
    ],
)
def test_bad_input_gets_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_missing_loss_fn_names_the_transform():
    params = {"w": torch.ones(2)}
    for name, transform in [
        ("zo_gradient", ifn.zo_gradient()),
        ("forward_gradient", ifn.forward_gradient()),
        ("conservative", ifn.conservative(ifn.sgd(0.1))),
    ]:
        with pytest.raises(ValueError, match=f"^{name} re-evaluates the objective and needs loss_fn"):
            transform.update(params, transform.init(params), params)


def test_missing_params_names_the_transform():
    params = {"w": torch.ones(2)}
    loss_fn = lambda p: p["w"].sum()  # noqa: E731
    for name, transform in [
        ("zo_gradient", ifn.zo_gradient()),
        ("forward_gradient", ifn.forward_gradient()),
        ("conservative", ifn.conservative(ifn.sgd(0.1))),
    ]:
        with pytest.raises(ValueError, match=f"^{name} perturbs the parameters and needs them"):
            transform.update(params, transform.init(params), loss_fn=loss_fn)


def test_forward_gradient_through_a_closure_is_refused_with_advice():
    model = make_mlp()
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.forward_grad(0.1))
    x, y = make_batches(1)[0]

    def closure(backward=True):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    with pytest.raises(ValueError, match="forward_gradient pushes tangents through loss_fn with torch.func.jvp"):
        opt.step(closure)


def test_probes_leave_batch_norm_statistics_alone_when_asked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4)).double()
    x, y = make_batches(1)[0]
    buffers = dict(model.named_buffers())
    before = {k: v.clone() for k, v in buffers.items()}

    def loss_fn(p):
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, {**p, **buffers}, (x,)), y)

    frozen = ifn.freeze_batch_norm_when_perturbed(loss_fn, model)
    for transform in (ifn.zo_sgd(0.1), ifn.zo_sgd_conserve(0.1)):
        params = params_of(model)
        ifn.step(transform, transform.init(params), params, frozen)
    # two-sided probes are the only evaluations of zo_sgd; conserve's f(w) does update them
    assert not torch.equal(buffers["1.running_mean"], before["1.running_mean"])
    for key in before:
        buffers[key].copy_(before[key])
    params = params_of(model)
    ifn.step(ifn.zo_sgd(0.1), ifn.zo_sgd(0.1).init(params), params, frozen)
    assert torch.equal(buffers["1.running_mean"], before["1.running_mean"])


def test_memory_efficient_and_held_directions_give_the_same_numbers():
    """One stream over all parameters: drawn at once (held) or leaf by leaf (rebuilt)."""
    first = train(ifn.zo_sgd(0.1, q=2, sparsity={"0.weight": 0.3}, memory_efficient=True))
    second = train(ifn.zo_sgd(0.1, q=2, sparsity={"0.weight": 0.3}, memory_efficient=False))
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-15)
