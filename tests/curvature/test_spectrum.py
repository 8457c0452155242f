"""Curvature on problems with a known Hessian: products, eigenvalues, trace, density."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

import infty_func.curvature as cv
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of


def quadratic(n=14, seed=0):
    """½ wᵀHw with a symmetric H that has negative eigenvalues, on a two-leaf pytree."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    hessian = (a + a.T) / 2
    w = torch.randn(n, generator=generator, dtype=torch.float64)
    params = {"a": w[:9].reshape(3, 3), "b": w[9:]}

    def loss_fn(p):
        flat = torch.cat([p["a"].reshape(-1), p["b"]])
        return 0.5 * flat @ hessian @ flat

    return hessian, params, loss_fn


def flat(tree):
    return torch.cat([tree["a"].reshape(-1), tree["b"]])


def test_hvp_is_h_times_v_exactly_and_batched_equals_the_loop():
    hessian, params, loss_fn = quadratic()
    vectors = {"a": torch.randn(5, 3, 3, dtype=torch.float64), "b": torch.randn(5, 5, dtype=torch.float64)}
    batched = cv.hvp_batched(loss_fn, params, vectors)
    for i in range(5):
        v = {"a": vectors["a"][i], "b": vectors["b"][i]}
        single = cv.hvp(loss_fn, params, v)
        torch.testing.assert_close(flat(single), hessian @ flat(v), rtol=0, atol=1e-12)
        torch.testing.assert_close(flat({"a": batched["a"][i], "b": batched["b"][i]}), flat(single), rtol=0, atol=1e-12)


def test_top_eigenvalues_by_lanczos_match_the_spectrum_to_1e8():
    hessian, params, loss_fn = quadratic()
    top = cv.top_eigenvalues(loss_fn, params, k=4, iters=100, tol=1e-14)
    torch.testing.assert_close(top.eigenvalues, torch.linalg.eigvalsh(hessian).flip(0)[:4], rtol=0, atol=1e-8)
    for value, vector in zip(top.eigenvalues, top.eigenvectors):
        torch.testing.assert_close(hessian @ flat(vector), value * flat(vector), rtol=0, atol=1e-8)
        assert abs(float(flat(vector).norm()) - 1) < 1e-10


def test_power_iteration_finds_the_eigenvalue_of_largest_magnitude():
    hessian, params, loss_fn = quadratic()
    eigenvalues = torch.linalg.eigvalsh(hessian)
    dominant = eigenvalues[eigenvalues.abs().argmax()]
    top = cv.top_eigenvalues(loss_fn, params, k=1, method="power", iters=5000, tol=1e-13)
    assert abs(float(top.eigenvalues[0] - dominant)) < 1e-6 * abs(float(dominant))


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
def test_trace_estimators_are_unbiased_within_three_standard_errors(method):
    hessian, params, loss_fn = quadratic(seed=1)
    estimate = cv.hutchinson_trace(loss_fn, params, n_probes=3000, seed=3, batch=100, method=method)
    assert abs(float(estimate.trace - hessian.trace())) <= 3 * float(estimate.standard_error) + 1e-9


def test_hutch_plus_plus_is_exact_when_the_sketch_spans_the_space():
    hessian, params, loss_fn = quadratic(n=14, seed=2)
    estimate = cv.hutchinson_trace(loss_fn, params, n_probes=45, method="hutch++")
    torch.testing.assert_close(estimate.trace, hessian.trace(), rtol=0, atol=1e-9)


def test_slq_weights_sum_to_one_and_its_nodes_reach_the_extremes():
    hessian, params, loss_fn = quadratic(seed=4)
    eigenvalues = torch.linalg.eigvalsh(hessian)
    density = cv.spectral_density(loss_fn, params, n_iter=14, n_runs=3, seed=1)
    torch.testing.assert_close(density.weights.sum(-1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-10)
    assert float(density.nodes.min()) >= float(eigenvalues.min()) - 1e-8
    assert float(density.nodes.max()) <= float(eigenvalues.max()) + 1e-8
    torch.testing.assert_close(density.nodes[:, 0], eigenvalues.min().expand(3), rtol=0, atol=1e-8)
    torch.testing.assert_close(density.nodes[:, -1], eigenvalues.max().expand(3), rtol=0, atol=1e-8)
    grid, values = cv.density_on_grid(density, points=2000)
    assert abs(float(values.sum() * (grid[1] - grid[0])) - 1) < 1e-3


def test_same_seed_same_numbers():
    _, params, loss_fn = quadratic(seed=5)
    first = cv.spectral_density(loss_fn, params, 6, 2, seed=9)
    second = cv.spectral_density(loss_fn, params, 6, 2, seed=9)
    assert torch.equal(first.nodes, second.nodes) and torch.equal(first.weights, second.weights)
    assert torch.equal(
        cv.hutchinson_trace(loss_fn, params, 10, seed=2).trace, cv.hutchinson_trace(loss_fn, params, 10, seed=2).trace
    )


def test_dataset_objective_averages_value_gradient_and_products_over_batches():
    model = make_mlp()
    params = params_of(model)
    batches = make_batches(3, seed=7)
    batches[2] = (batches[2][0][:5], batches[2][1][:5])  # unequal sizes: weighted by batch size
    objective = cv.DatasetObjective(
        lambda p, batch: torch.nn.functional.cross_entropy(functional_call(model, p, (batch[0],)), batch[1]), batches
    )
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    whole = loss_fn_for(model, x, y)
    value, grad = objective.value_and_grad(params)
    reference_value, reference_grad = cv.as_objective(whole).value_and_grad(params)
    torch.testing.assert_close(value, reference_value, rtol=0, atol=1e-12)
    for key in params:
        torch.testing.assert_close(grad[key], reference_grad[key], rtol=0, atol=1e-12)
    v = {k: torch.randn_like(p) for k, p in params.items()}
    product, reference = cv.hvp(objective, params, v), cv.hvp(whole, params, v)
    for key in params:
        torch.testing.assert_close(product[key], reference[key], rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lf, p: cv.top_eigenvalues(lf, p, k=15), "1 <= k <= the number of parameters"),
        (lambda lf, p: cv.top_eigenvalues(lf, p, method="arnoldi"), "method must be 'lanczos' or 'power'"),
        (lambda lf, p: cv.hutchinson_trace(lf, p, n_probes=0), "n_probes >= 1"),
        (lambda lf, p: cv.hutchinson_trace(lf, p, method="hutch+"), "hutchinson' or 'hutch\\+\\+"),
        (lambda lf, p: cv.spectral_density(lf, p, n_iter=0), "n_iter >= 1"),
        (lambda lf, p: cv.DatasetObjective(lambda q, b: lf(q), []).value(p), "the batches are empty"),
    ],
)
def test_bad_input_gets_a_clear_error(call, message):
    _, params, loss_fn = quadratic()
    with pytest.raises(ValueError, match=message):
        call(loss_fn, params)


def test_esd_metrics_follow_the_reference_definitions():
    density = cv.SpectralDensity(
        torch.tensor([[-1.0, 0.5, 2.0]], dtype=torch.float64), torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    )
    metrics = cv.esd_metrics(density, trace=3.0)
    assert metrics["lambda_max"] == 2.0 and metrics["lambda_min"] == -1.0
    assert abs(metrics["mean_eigenvalue"] - (-0.2 + 0.15 + 1.0)) < 1e-12
    assert abs(metrics["negative_mass"] - 0.2) < 1e-12 and abs(metrics["positive_mass"] - 0.8) < 1e-12
    assert abs(metrics["right_tail_mass"] - 0.5) < 1e-12
    entropy = -sum(w * math.log(w + 1e-12) for w in (0.2, 0.3, 0.5))
    assert abs(metrics["spectral_entropy"] - entropy) < 1e-12
    assert abs(metrics["effective_rank"] - math.exp(entropy)) < 1e-12
    assert metrics["mean_trace"] == 3.0
