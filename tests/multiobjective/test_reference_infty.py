"""The same parameters as ``infty.optim`` (PCGrad, CAGrad, GradVac, UniGrad_FS, OGD) over
10 steps of SGD(momentum=0.9) in float64, through the aggregators and the INFTY-compatible
classes. infty allocates its flattened gradients in the default dtype, so its runs set the
default dtype to float64 (and restore it)."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn
from torch.func import functional_call

import infty_func as ifn
from tests.conftest import params_of

infty_optim = pytest.importorskip("infty.optim", reason="reference package infty not installed (pip install --no-deps infty tqdm)")

STEPS = 10


pytestmark = pytest.mark.usefixtures("float64_default")


def make_model(linear_only=False):
    torch.manual_seed(0)
    if linear_only:
        return nn.Linear(6, 4).double()
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()


def data(m, step):
    generator = torch.Generator().manual_seed(100 + step)
    return [(torch.randn(8, 6, generator=generator), torch.randint(0, 4, (8,), generator=generator)) for _ in range(m)]


def losses_of(model_call, batches):
    return [nn.functional.cross_entropy(model_call(x), y) for x, y in batches]


def run_class(cls, args, m, linear_only=False, task_switch=None):
    model = make_model(linear_only)
    opt = cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, args=args)
    for step in range(STEPS):
        if task_switch is not None and step == task_switch:
            opt.task_id = 1
        batches = data(m, step)

        def closure(batches=batches):
            losses = losses_of(model, batches)
            return model(batches[0][0]), losses

        opt.set_closure(closure)
        opt.step()
    return params_of(model), opt


def run_functional(aggregator, m, linear_only=False):
    model = make_model(linear_only)
    params = params_of(model)
    tx = ifn.chain(aggregator, ifn.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    for step in range(STEPS):
        batches = data(m, step)

        def loss_fn(p, batches=batches):
            return torch.stack(losses_of(lambda x: functional_call(model, p, (x,)), batches))

        params, state, _ = ifn.step(tx, state, params, loss_fn)
    return params


def assert_close(ours, reference, tolerance):
    for name in reference:
        difference = (ours[name] - reference[name]).abs().max().item()
        assert difference <= tolerance, f"{name}: {difference:.3e}"


@pytest.mark.parametrize("m", [2, 3, 5])
def test_pcgrad_with_a_fixed_order_matches_infty(m, monkeypatch):
    monkeypatch.setattr(random, "shuffle", lambda values: None)  # infty's order becomes 0, 1, ... (skipping i)
    reference, _ = run_class(infty_optim.PCGrad, {}, m)
    assert_close(run_functional(ifn.pcgrad(seed=None, eps=1e-8), m), reference, 1e-10)


@pytest.mark.parametrize("m", [2, 3, 5])
def test_pcgrad_class_draws_infty_s_random_orders(m):
    random.seed(7)
    reference, _ = run_class(infty_optim.PCGrad, {}, m)
    random.seed(7)
    ours, opt = run_class(ifn.optim.PCGrad, {}, m)
    assert_close(ours, reference, 1e-10)
    assert len(opt.sim_list) == STEPS


def tight_slsqp(monkeypatch):
    """infty solves CAGrad's dual with SLSQP at SciPy's default tolerance (ftol 1e-6); ours
    is exact. Tightened, the reference agrees to rounding."""
    import infty.optim.gradient_filtering.cagrad as reference_module
    import scipy.optimize

    def minimize(fun, x0, **kwargs):
        return scipy.optimize.minimize(fun, x0, method="SLSQP", options={"ftol": 1e-15, "maxiter": 10_000}, **kwargs)

    monkeypatch.setattr(reference_module, "minimize", minimize)


@pytest.mark.parametrize("m", [2, 3, 5])
@pytest.mark.parametrize(("calpha", "rescale"), [(0.1, 0), (0.5, 1), (0.4, 2)])
def test_cagrad_matches_infty_with_its_solver_tightened(m, calpha, rescale, monkeypatch):
    tight_slsqp(monkeypatch)
    reference, _ = run_class(infty_optim.CAGrad, {"calpha": calpha, "rescale": rescale}, m)
    assert_close(run_functional(ifn.cagrad(calpha, rescale), m), reference, 1e-8)
    ours, _ = run_class(ifn.optim.CAGrad, {"calpha": calpha, "rescale": rescale}, m)
    assert_close(ours, reference, 1e-8)


def test_cagrad_matches_infty_at_its_default_solver_tolerance():
    reference, _ = run_class(infty_optim.CAGrad, {"calpha": 0.5, "rescale": 1}, 3)
    assert_close(run_functional(ifn.cagrad(0.5, 1), 3), reference, 1e-4)


@pytest.mark.parametrize("utype", ["model-wise", "layer-wise"])
@pytest.mark.parametrize("m", [2, 3])
def test_gradvac_matches_infty(utype, m):
    """Tolerance 1e-6: infty keeps its targets S_T in float32 (REFERENCES.md)."""
    args = {"task_id": 1, "utype": utype, "S_T": [0.5], "beta": 0.9}
    reference, reference_opt = run_class(infty_optim.GradVac, args, m)
    granularity = "model" if utype == "model-wise" else "layer"
    assert_close(run_functional(ifn.gradvac(0.9, 0.5, granularity, m=m, pairs="first"), m), reference, 1e-6)
    ours, opt = run_class(ifn.optim.GradVac, args, m)
    assert_close(ours, reference, 1e-6)
    torch.testing.assert_close(opt.S_T, reference_opt.S_T.double(), rtol=0, atol=1e-6)


def test_unigrad_fs_matches_infty_on_a_linear_model():
    """On one linear layer infty's mixed gradients (activations at w + e, weights at w)
    are the true gradients at w + e, so the two agree; task 0 is the plain sum."""
    args = {"rho": 0.05, "S_T": [0.5], "beta": 0.9}
    reference, _ = run_class(infty_optim.UniGrad_FS, args, 2, linear_only=True, task_switch=3)
    ours, opt = run_class(ifn.optim.UniGrad_FS, args, 2, linear_only=True, task_switch=3)
    assert_close(ours, reference, 1e-6)
    assert len(opt.sim_list) == STEPS - 3


def test_unigrad_fs_on_an_mlp_differs_from_infty_s_mixed_gradients():
    """Documented difference: on a deeper model infty's perturbed gradients are not the
    gradients at w + e; ours are."""
    args = {"rho": 0.05, "S_T": [0.5], "beta": 0.9}
    reference, _ = run_class(infty_optim.UniGrad_FS, args, 2, task_switch=3)
    ours, _ = run_class(ifn.optim.UniGrad_FS, args, 2, task_switch=3)
    with pytest.raises(AssertionError):
        assert_close(ours, reference, 1e-6)


class DictOut(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"logits": self.net(x)}


class IndexedDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return index, self.x[index], self.y[index]


def test_ogd_matches_infty_over_a_task_switch(tmp_path):
    """Tolerance 1e-6: infty stores and applies its basis in float32."""
    generator = torch.Generator().manual_seed(3)
    loader = torch.utils.data.DataLoader(
        IndexedDataset(torch.randn(30, 6, generator=generator), torch.randint(0, 4, (30,), generator=generator)), batch_size=8
    )
    results = []
    for cls, extra in ((infty_optim.OGD, {"basis_path": str(tmp_path / "basis.pt")}), (ifn.optim.OGD, {"seed": 42})):
        torch.manual_seed(0)
        model = DictOut(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double())
        opt = cls(
            model.parameters(),
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            model,
            args={"num_sample_per_task": 5, **extra},
        )
        for step in range(STEPS):
            if step == 5:
                torch.manual_seed(42)
                opt.post_process(loader)
                model.train()
                opt.task_id = 1
            batches = data(2, step)
            opt.set_closure(
                lambda batches=batches: (model(batches[0][0])["logits"], losses_of(lambda x: model(x)["logits"], batches))
            )
            opt.step()
        results.append(params_of(model))
    assert_close(results[1], results[0], 1e-6)
