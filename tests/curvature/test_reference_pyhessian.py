"""Against PyHessian (top eigenvalue, trace) and infty's maintained fork of it (spectral
density; PyHessian's own density calls the removed torch.eig), on one MLP and batch in
float64. Both read the default dtype for their random vectors, so it is float64 here."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infty_func.curvature as cv
from tests.conftest import loss_fn_for, params_of

pyhessian = pytest.importorskip("pyhessian", reason="reference package pyhessian not installed (pip install --no-deps pyhessian)")


pytestmark = pytest.mark.usefixtures("float64_default")


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.Tanh(), nn.Linear(20, 3)).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 10, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=generator)
    params = params_of(model)
    return model, x, y, params, loss_fn_for(model, x, y)


def test_top_eigenvalue_matches_pyhessian_within_1e4_relative():
    model, x, y, params, loss_fn = problem()
    torch.manual_seed(3)
    reference = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).eigenvalues(maxIter=2000, tol=1e-10)
    ours = cv.top_eigenvalues(loss_fn, params, k=1, tol=1e-10)
    assert abs(float(ours.eigenvalues[0]) - reference[0][0]) <= 1e-4 * abs(reference[0][0])


def test_trace_agrees_with_pyhessian_within_their_combined_standard_error():
    model, x, y, params, loss_fn = problem()
    torch.manual_seed(4)
    samples = torch.tensor(pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).trace(maxIter=400, tol=0.0))
    reference, reference_error = samples.mean(), samples.std() / len(samples) ** 0.5
    ours = cv.hutchinson_trace(loss_fn, params, n_probes=400, seed=5, batch=50)
    combined = (ours.standard_error**2 + reference_error**2).sqrt()
    assert abs(float(ours.trace - reference)) <= 3 * float(combined)


def test_density_ritz_values_match_infty_from_the_same_start():
    hessian_module = pytest.importorskip("infty.utils.hessian", reason="reference package infty not installed")
    model, x, y, params, loss_fn = problem()
    n_iter = 30

    def rademacher_start():
        vectors = [torch.randint_like(p, high=2) for p in model.parameters()]
        for v in vectors:
            v[v == 0] = -1
        return {name: v.unsqueeze(0) for (name, _), v in zip(model.named_parameters(), vectors)}

    def create_loss_fn(inputs, targets):
        return lambda: (model(inputs), [nn.functional.cross_entropy(model(inputs), targets)])

    torch.manual_seed(6)
    nodes, weights = hessian_module.hessian(model, create_loss_fn, data=(x, y), device="cpu").density(iter=n_iter, n_v=1)
    torch.manual_seed(6)
    ours = cv.spectral_density(loss_fn, params, n_iter=n_iter, n_runs=1, start=rademacher_start())
    reference_nodes = torch.tensor(nodes[0], dtype=torch.float64)
    reference_weights = torch.tensor(weights[0], dtype=torch.float64)
    # infty normalises every Lanczos vector with a +1e-6 guard (so they are unit only to
    # about 1e-6) and reorthogonalises once where we do twice: nodes agree to 1e-5 relative, weights to 1e-5.
    torch.testing.assert_close(ours.nodes[0], reference_nodes, rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(ours.weights[0], reference_weights, rtol=0, atol=1e-5)
