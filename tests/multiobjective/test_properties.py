"""What every aggregator keeps: vmap over members equals a loop, one objective gives its
gradient back, degenerate Jacobians stay finite, and each method's defining property."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, grad

import infty_func as ifn
from tests.conftest import make_batches, make_mlp, params_of
from tests.multiobjective.catalogue import AGGREGATORS, NAMES
from tests.multiobjective.jacobians import aggregate, flat_update, random_jacobian
from tests.vmap_loop import assert_vmap_equals_loop


def three_losses(model, x, y):
    def loss_fn(params):
        logits = functional_call(model, params, (x,))
        return torch.stack(
            [
                torch.nn.functional.cross_entropy(logits, y),
                torch.nn.functional.cross_entropy(logits[:, [1, 0, 3, 2]], y),
                0.1 * logits.pow(2).mean(),
            ]
        )

    return loss_fn


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_members_equals_python_loop(name):
    tx = ifn.chain(AGGREGATORS[name](), ifn.sgd(0.1, momentum=0.9))
    assert_vmap_equals_loop(tx, steps=4, loss_for=three_losses, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in NAMES if not n.startswith("gradvac")])
def test_one_objective_gives_its_gradient_back(name):
    jac, flat = random_jacobian(1, 5)
    torch.testing.assert_close(aggregate(AGGREGATORS[name](), jac), flat[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["identical", "orthogonal", "opposite", "zero", "one_zero"])
def test_degenerate_jacobians_give_finite_updates(name, kind):
    g = torch.linspace(-1.0, 1.0, 20, dtype=torch.float64)
    h = torch.zeros(20, dtype=torch.float64)
    h[:10], h[10:] = 1.0, -1.0 * (g[:10] @ torch.ones(10, dtype=torch.float64)) / (g[10:] @ torch.ones(10, dtype=torch.float64))
    rows = {
        "identical": [g, g, g],
        "orthogonal": [g, g.flip(0).abs(), torch.ones(20, dtype=torch.float64)],
        "opposite": [g, -g, g],
        "zero": [torch.zeros(20, dtype=torch.float64)] * 3,
        "one_zero": [g, torch.zeros(20, dtype=torch.float64), 2 * g.abs()],
    }[kind]
    flat = torch.stack(rows)
    jac = {"weight": flat[:, :15].reshape(3, 3, 5), "bias": flat[:, 15:]}
    out = aggregate(AGGREGATORS[name](), jac)
    assert torch.isfinite(out).all(), (name, kind, out)


@pytest.mark.parametrize(("m", "seed"), [(2, 0), (3, 1), (5, 2)])
def test_config_has_a_positive_inner_product_with_every_gradient(m, seed):
    """When a conflict-free direction exists (here: gradients in a common half-space)."""
    jac, flat = random_jacobian(m, seed)
    flat = flat + 3.0 * torch.ones(20, dtype=torch.float64)  # a shared component: conflict-free directions exist
    jac = {"weight": flat[:, :15].reshape(m, 3, 5), "bias": flat[:, 15:]}
    out = aggregate(ifn.config(), jac)
    assert torch.all(flat @ out > 0)


@pytest.mark.parametrize(("m", "seed"), [(2, 0), (3, 1), (5, 2), (5, 3)])
def test_mgda_output_has_minimal_norm_among_convex_combinations(m, seed):
    jac, flat = random_jacobian(m, seed, "conflicting")
    out = aggregate(ifn.mgda(), jac)
    torch.manual_seed(seed)
    weights = torch.distributions.Dirichlet(torch.ones(m, dtype=torch.float64)).sample((2000,))
    assert out.norm() <= (weights @ flat).norm(dim=-1).min() + 1e-12


@pytest.mark.parametrize(("m", "seed"), [(2, 0), (3, 1), (5, 2)])
def test_pcgrad_projected_gradients_do_not_conflict_with_the_originals(m, seed):
    from infty_func.multiobjective.pcgrad import pcgrad_weights

    _, flat = random_jacobian(m, seed, "conflicting")
    gram = flat @ flat.T
    order = torch.arange(m).expand(m, m)
    # projected rows, rebuilt explicitly:
    rows = []
    for i in range(m):
        v = flat[i].clone()
        for j in range(m):
            if j != i and v @ flat[j] < 0:
                v = v - (v @ flat[j]) / (flat[j] @ flat[j]) * flat[j]
        rows.append(v)
    torch.testing.assert_close(torch.stack(rows).sum(0), pcgrad_weights(gram, order) @ flat, rtol=0, atol=1e-12)
    for i, v in enumerate(rows):
        last = max(j for j in range(m) if j != i)
        assert v @ flat[last] >= -1e-12  # the last projection leaves no conflict with its target


def test_jacobian_equals_m_separate_grad_calls():
    model = make_mlp()
    params = params_of(model)
    x, y = make_batches(1)[0]
    loss_fn = three_losses(model, x, y)
    values, jac = ifn.jacobian(loss_fn)(params)
    for i in range(3):
        single = grad(lambda p, i=i: loss_fn(p)[i])(params)
        for key in params:
            torch.testing.assert_close(jac[key][i], single[key], rtol=0, atol=1e-12)
    torch.testing.assert_close(values, loss_fn(params))


def test_diagnostics_describe_the_step_without_extra_passes():
    jac, flat = random_jacobian(3, 7, "conflicting")
    tx = ifn.mean()
    params = {"weight": torch.zeros(3, 5, dtype=torch.float64), "bias": torch.zeros(5, dtype=torch.float64)}
    out, state = tx.update(jac, tx.init(params), params)
    d = state.diagnostics
    normalized = torch.nn.functional.normalize(flat, dim=1)
    torch.testing.assert_close(d.cosine, normalized @ normalized.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(d.gains, flat @ flat_update(out), rtol=0, atol=1e-12)
    torch.testing.assert_close(d.update_norm, flat_update(out).norm(), rtol=0, atol=1e-12)
    assert d.cosine[0, 1] < 0  # the conflict the problem was built with


@pytest.mark.parametrize(
    ("build", "jac_rows", "message"),
    [
        (lambda: ifn.unigrad_fs(), 3, "unigrad_fs needs exactly 2 losses"),
        (lambda: ifn.gradvac(m=2), 3, "built for m=2 objectives"),
    ],
)
def test_wrong_number_of_objectives_is_refused(build, jac_rows, message):
    jac, _ = random_jacobian(jac_rows, 0)
    tx = build()
    params = {"weight": torch.zeros(3, 5, dtype=torch.float64), "bias": torch.zeros(5, dtype=torch.float64)}
    with pytest.raises(ValueError, match=message):
        tx.update(jac, tx.init(params), params, loss_fn=lambda p: torch.stack([p["bias"].sum()] * jac_rows))


def test_a_jacobian_whose_leaves_disagree_on_m_is_refused():
    jac = {"weight": torch.zeros(2, 3, 5), "bias": torch.zeros(3, 5)}
    with pytest.raises(ValueError, match="disagree on the number of objectives"):
        ifn.pcgrad().update(jac, ifn.pcgrad().init({"weight": torch.zeros(3, 5), "bias": torch.zeros(5)}))


def test_a_scalar_loss_given_to_an_aggregator_is_refused():
    model = make_mlp()
    params = params_of(model)
    x, y = make_batches(1)[0]
    loss_fn = lambda p: torch.nn.functional.cross_entropy(functional_call(model, p, (x,)), y)  # noqa: E731
    tx = ifn.chain(ifn.pcgrad(), ifn.sgd(0.1))
    with pytest.raises(ValueError, match="pcgrad aggregates several objectives but got a scalar loss"):
        ifn.step(tx, tx.init(params), params, loss_fn)


@pytest.mark.parametrize(
    ("build", "owner"),
    [
        (lambda: ifn.multiobjective.config(length_model="median"), "config"),
        (lambda: ifn.multiobjective.config_momentum(2, length_model="median"), "config_momentum"),
        (lambda: ifn.multiobjective.config_update(torch.eye(2, 3), length_model="median"), "config_update"),
    ],
)
def test_an_unknown_length_model_name_is_refused(build, owner):
    with pytest.raises(ValueError, match=f"{owner}: unknown length model 'median'; use one of"):
        build()


def test_unigrad_fs_without_params_is_refused():
    jac, _ = random_jacobian(2, 0)
    params = {"weight": torch.zeros(3, 5, dtype=torch.float64), "bias": torch.zeros(5, dtype=torch.float64)}
    tx = ifn.unigrad_fs()
    with pytest.raises(ValueError, match="^unigrad_fs perturbs the parameters and needs them"):
        tx.update(jac, tx.init(params), loss_fn=lambda p: torch.stack([p["bias"].sum()] * 2))


def test_ogd_removes_the_stored_directions_and_skips_dependent_ones():
    params = {"w": torch.zeros(4, dtype=torch.float64)}
    tx = ifn.ogd(3)
    state = tx.init(params)
    e0 = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    state = ifn.ogd_add_directions(state, {"w": torch.stack([2 * e0, 4 * e0, torch.tensor([1.0, 1, 0, 0], dtype=torch.float64)])})
    assert int(state.count) == 2  # 4·e0 depends on 2·e0: dropped
    out, _ = tx.update({"w": torch.tensor([3.0, 2, 1, 5], dtype=torch.float64)}, state, params)
    torch.testing.assert_close(out["w"], torch.tensor([0.0, 0, 1, 5], dtype=torch.float64))
    full = ifn.ogd_add_directions(state, {"w": torch.eye(4, dtype=torch.float64)})
    assert int(full.count) == 3  # capacity


def test_config_stays_finite_for_exactly_opposite_gradients():
    g = torch.linspace(-1.0, 2.0, 20, dtype=torch.float64)
    flat = torch.stack([g, -g])
    jac = {"weight": flat[:, :15].reshape(2, 3, 5), "bias": flat[:, 15:]}
    out = aggregate(ifn.config(), jac)
    assert torch.isfinite(out).all()


def test_a_non_finite_jacobian_gives_nan_not_a_solver_crash():
    _, flat = random_jacobian(3, 0)
    flat[1, 4] = float("nan")
    jac = {"weight": flat[:, :15].reshape(3, 3, 5), "bias": flat[:, 15:]}
    for transform in (ifn.mgda(), ifn.cagrad(), ifn.upgrad(), ifn.config()):
        assert torch.isnan(aggregate(transform, jac)).any()


@pytest.mark.parametrize("recorder", ["latest", "momentum"])
def test_config_momentum_records_the_losses_its_models_read(recorder):
    seen = []

    def weight_model(gram, losses):
        seen.append(None if losses is None else losses.clone())
        return torch.ones(gram.shape[0], dtype=torch.float64)

    tx = ifn.config_momentum(2, "pseudo", weight_model=weight_model, loss_recorder=recorder, loss_beta=0.5)
    params = {"w": torch.zeros(3, dtype=torch.float64)}
    state = tx.init(params)
    for step, (index, loss) in enumerate([(0, 4.0), (1, 2.0), (0, 2.0)]):
        jac = {"w": torch.tensor([[1.0, 0.5, -1.0]], dtype=torch.float64) * (step + 1)}
        _, state = tx.update(jac, state, params, index=index, value=torch.tensor([loss], dtype=torch.float64))
    expected = torch.tensor([2.0, 2.0]) if recorder == "latest" else torch.tensor([(0.5 * 0.5 * 4 + 0.5 * 2) / 0.75, 2.0])
    torch.testing.assert_close(seen[-1], expected.to(torch.float64))


def test_config_momentum_state_has_no_shape_changes_and_separate_kind_runs():
    params = {"w": torch.zeros(3, dtype=torch.float64)}
    for kind in ("pseudo", "separate"):
        tx = ifn.config_momentum(3, kind)
        state = tx.init(params)
        shapes = [leaf.shape for leaf in ifn.tree_leaves(state)]
        for step in range(5):
            jac = {"w": torch.randn(1, 3, dtype=torch.float64)}
            out, state = tx.update(jac, state, params, index=step % 3)
            assert torch.isfinite(out["w"]).all()
        assert [leaf.shape for leaf in ifn.tree_leaves(state)] == shapes


def test_a_vanishing_update_reports_a_zero_cosine_not_rounding_noise():
    g = torch.linspace(-1.0, 2.0, 20, dtype=torch.float64)
    flat = torch.stack([g, -g])
    jac = {"weight": flat[:, :15].reshape(2, 3, 5), "bias": flat[:, 15:]}
    tx = ifn.pcgrad(seed=None)
    params = {"weight": torch.zeros(3, 5, dtype=torch.float64), "bias": torch.zeros(5, dtype=torch.float64)}
    _, state = tx.update(jac, tx.init(params), params)
    assert torch.equal(state.diagnostics.update_cosine, torch.zeros(2, dtype=torch.float64))
