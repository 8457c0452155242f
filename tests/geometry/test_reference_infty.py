"""The same parameters and batch-norm statistics as ``infty.optim`` after 10 steps of
SGD(momentum=0.9) on an MLP with batch norm in float64, through the functional path and
through the INFTY-compatible classes. Where ``infty`` has a defect, the test pins the
documented difference instead."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

import infty_func as ifn
from tests.conftest import infty_closure, make_batches, params_of

infty_optim = pytest.importorskip("infty.optim", reason="reference package infty not installed (pip install --no-deps infty tqdm)")

TOLERANCE = 1e-8
STEPS = 10


def make_bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 4)
    ).double()


def run_class(cls, args, adaptive=False, configure=None):
    """INFTY's usage: base optimizer, the wrapper, a closure per batch, step()."""
    model = make_bn_mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = cls(model.parameters(), base, model, args=args, adaptive=adaptive)
    if configure is not None:
        configure(opt)
    for x, y in make_batches(STEPS):
        opt.set_closure(infty_closure(model, x, y))
        opt.step()
    return model


def run_functional(transform):
    model = make_bn_mlp()
    params = params_of(model)
    buffers = dict(model.named_buffers())
    optimizer = ifn.chain(transform, ifn.sgd(0.1, momentum=0.9))
    state = optimizer.init(params)
    for x, y in make_batches(STEPS):

        def loss_fn(p, x=x, y=y):
            return nn.functional.cross_entropy(functional_call(model, {**p, **buffers}, (x,)), y)

        params, state, _ = ifn.step(optimizer, state, params, ifn.freeze_batch_norm_when_perturbed(loss_fn, model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    return model


def assert_same_model(ours: nn.Module, reference: nn.Module, tolerance=TOLERANCE):
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.allclose(a.double(), b.double(), rtol=0, atol=tolerance), f"{name}: {(a - b).abs().max()}"


def ascent_radius(value):
    """Set the attribute infty's ascent reads but never sets (its defect), so it uses ours."""

    def configure(opt):
        opt.grad_norm_rho = value

    return configure


class LookSAMWithItsKeyFixed(infty_optim.LookSAM):
    """infty's LookSAM with its one-word bug fixed: the gradient it stores as ``old_g`` is
    the ``old_grad`` it later reads."""

    def compute_gv(self):
        for group in self.param_groups:
            for p in group["params"]:
                if "old_g" in self.state[p]:
                    self.state[p]["old_grad"] = self.state[p]["old_g"]
        super().compute_gv()


# name -> (infty class, infty args, adaptive, configure, our functional transform, our class)
CASES = {
    "sam": (infty_optim.SAM, {"rho": 0.05}, False, None, ifn.sam(0.05), ifn.optim.SAM),
    "asam": (infty_optim.SAM, {"rho": 0.5}, True, None, ifn.sam(0.5, adaptive=True), ifn.optim.SAM),
    "gsam": (infty_optim.GSAM, {"rho": 0.05, "alpha": 0.3}, False, None, ifn.gsam(0.05, 0.3), ifn.optim.GSAM),
    "gam": (
        infty_optim.GAM,
        {"rho": 0.05, "norm_rho": 0.03},
        False,
        ascent_radius(0.03),
        ifn.gam(0.05, 0.03),
        ifn.optim.GAM,
    ),
    "looksam": (
        LookSAMWithItsKeyFixed,
        {"rho": 0.05, "k": 3, "alpha": torch.tensor(0.7)},
        False,
        None,
        ifn.looksam(0.05, 3, 0.7),
        ifn.optim.LookSAM,
    ),
    "c_flat": (
        infty_optim.C_Flat,
        {"rho": 0.05, "lamb": 0.2},
        False,
        ascent_radius(0.05),
        ifn.c_flat(0.05, 0.2),
        ifn.optim.C_Flat,
    ),
    "c_flat_plus": (
        infty_optim.C_Flat,
        {"rho": 0.05, "lamb": 0.2, "strategy": "plus", "A": 1.0, "t0": 3},
        False,
        ascent_radius(0.05),
        ifn.c_flat(0.05, 0.2, "plus", A=1.0, t0=3),
        ifn.optim.C_Flat,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_functional_path_matches_infty(name):
    reference_cls, args, adaptive, configure, transform, _ = CASES[name]
    reference = run_class(reference_cls, args, adaptive, configure)
    assert_same_model(run_functional(transform), reference)


@pytest.mark.parametrize("name", sorted(CASES))
def test_compat_class_matches_infty(name):
    reference_cls, args, adaptive, configure, _, ours_cls = CASES[name]
    reference = run_class(reference_cls, args, adaptive, configure)
    ours_args = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in args.items()}
    assert_same_model(run_class(ours_cls, ours_args, adaptive), reference)


def test_infty_gam_ascends_by_one_not_norm_rho():
    """infty's GAM ignores norm_rho (documented defect): it equals ours with norm_rho=1."""
    reference = run_class(infty_optim.GAM, {"rho": 0.05, "norm_rho": 0.03})
    assert_same_model(run_functional(ifn.gam(0.05, norm_rho=1.0)), reference)
    with pytest.raises(AssertionError):
        assert_same_model(run_functional(ifn.gam(0.05, norm_rho=0.03)), reference)


def test_infty_c_flat_ascends_by_one_not_rho():
    """infty's C-Flat uses an ascent radius of 1 (documented defect); the paper uses rho."""
    reference = run_class(infty_optim.C_Flat, {"rho": 0.05, "lamb": 0.2})
    assert_same_model(run_functional(ifn.c_flat(0.05, 0.2, norm_rho=1.0)), reference)
    with pytest.raises(AssertionError):
        assert_same_model(run_functional(ifn.c_flat(0.05, 0.2)), reference)


def test_infty_looksam_never_reuses_its_direction():
    """infty's LookSAM stores under ``old_g`` and reads ``old_grad`` (documented defect):
    its non-SAM steps are plain gradient steps, which is ours with alpha=0, and differs
    from the paper's reuse step that ours takes."""
    reference = run_class(infty_optim.LookSAM, {"rho": 0.05, "k": 3})
    assert_same_model(run_functional(ifn.looksam(0.05, 3, alpha=0.0)), reference)
    with pytest.raises(AssertionError):
        assert_same_model(run_functional(ifn.looksam(0.05, 3, alpha=0.7)), reference)
