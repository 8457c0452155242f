"""The same numbers as torchzero's SPSA, RDSA, MeZO and ForwardGradient, given the same
directions (injected into torchzero's modules: they draw from their own generators)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import infty_func as ifn
from tests.conftest import loss_fn_for, params_of
from tests.torchzero_runs import torchzero_trained
from tests.zeroth_order.injection import forward_tangents, spsa_directions

tz = pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")
from torchzero.utils import TensorList  # noqa: E402

STEPS, LR, H = 4, 0.05, 1e-3


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def batches():
    generator = torch.Generator().manual_seed(2)
    return [
        (torch.randn(10, 5, generator=generator, dtype=torch.float64), torch.randint(0, 3, (10,), generator=generator))
        for _ in range(STEPS)
    ]


def directions_by_step(params, q):
    flat = spsa_directions(params, 0, STEPS, q)
    return [flat[step * q : (step + 1) * q] for step in range(STEPS)]


def with_injected_perturbations(module_cls, by_step, scale_by_h=True):
    """``module_cls`` whose ``pre_step`` installs our directions (times h for the FDM
    estimators, as torchzero stores them) instead of drawing its own."""

    class Injected(module_cls):
        step_index = 0

        def pre_step(self, objective):
            h = self.defaults["h"]
            directions = by_step[Injected.step_index]
            Injected.step_index += 1
            for index, p in enumerate(objective.params):
                self.state[p]["perturbations"] = tuple(z[index] * h if scale_by_h else z[index] for z in directions)

    return Injected


def with_injected_mezo(by_step):
    class Injected(tz.m.MeZO):
        def _seeded_perturbation(self, params, distribution, seed, h):
            step, sample = divmod(seed, 1_000_000)
            return TensorList([z.clone() for z in by_step[step][sample]]).mul_(h)

    return Injected


def run_torchzero(module):
    return torchzero_trained(make_model(), [module, tz.m.LR(LR)], batches())


def run_ours(estimator):
    model = make_model()
    params = params_of(model)
    tx = ifn.chain(estimator, ifn.scale_by_learning_rate(LR))
    state = tx.init(params)
    for x, y in batches():
        params, state, _ = ifn.step(tx, state, params, loss_fn_for(model, x, y))
    return params


def assert_close(ours, reference, tolerance=1e-10):
    for name in reference:
        assert (ours[name] - reference[name]).abs().max().item() <= tolerance, name


@pytest.mark.parametrize("module_name", ["SPSA", "RDSA"])
@pytest.mark.parametrize("q", [1, 3])
def test_central_difference_estimators_match_torchzero(module_name, q):
    params = {name: p.detach() for name, p in make_model().named_parameters()}
    by_step = directions_by_step(params, q)
    module = with_injected_perturbations(getattr(tz.m, module_name), by_step)(h=H, n_samples=q)
    assert_close(run_ours(ifn.zo_gradient(H, q=q)), run_torchzero(module))


def test_forward_difference_matches_torchzero_spsa_forward_formula():
    params = {name: p.detach() for name, p in make_model().named_parameters()}
    module = with_injected_perturbations(tz.m.SPSA, directions_by_step(params, 1))(h=H, formula="forward")
    assert_close(run_ours(ifn.zo_gradient(H, mode="one_side")), run_torchzero(module))


@pytest.mark.parametrize("q", [1, 2])
def test_mezo_matches_torchzero(q):
    params = {name: p.detach() for name, p in make_model().named_parameters()}
    module = with_injected_mezo(directions_by_step(params, q))(h=H, n_samples=q)
    assert_close(run_ours(ifn.zo_gradient(H, q=q, memory_efficient=True)), run_torchzero(module))


def test_forward_gradient_matches_torchzero():
    params = {name: p.detach() for name, p in make_model().named_parameters()}
    tangents = [[z] for z in forward_tangents(params, 0, STEPS)]
    module = with_injected_perturbations(tz.m.ForwardGradient, tangents, scale_by_h=False)()
    assert_close(run_ours(ifn.forward_gradient(seed=0)), run_torchzero(module))
