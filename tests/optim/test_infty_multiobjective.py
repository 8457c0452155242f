"""INFTY-compatible gradient-filtering classes: resumable state, sim_list, errors.
(Agreement with infty itself: tests/multiobjective/test_reference_infty.py.)"""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

import infty_func as ifn
from tests.adapter_runs import assert_checkpoint_resumes, assert_same_parameters, infty_two_task_run, resumed_copy
from tests.conftest import make_batches, make_mlp

CLASSES = {
    "PCGrad": (ifn.optim.PCGrad, {}),
    "CAGrad": (ifn.optim.CAGrad, {"calpha": 0.5, "rescale": 1}),
    "GradVac": (ifn.optim.GradVac, {"task_id": 1, "S_T": [0.5]}),
    "UniGrad_FS": (ifn.optim.UniGrad_FS, {"task_id": 1, "S_T": [0.5]}),
    "OGD": (ifn.optim.OGD, {}),
}


def build(name, model):
    cls, args = CLASSES[name]
    return cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, args=dict(args))


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_state_dict_resumes_bit_identically(name):
    assert_checkpoint_resumes(
        lambda model: build(name, model), infty_two_task_run, make_batches(16, seed=9), split=8, start=lambda: random.seed(0)
    )


class IndexedBatches(torch.utils.data.Dataset):
    """Items ``(index, x, y)``, as INFTY's OGD reads them."""

    def __init__(self):
        self.items = [(x[i], y[i]) for x, y in make_batches(2, seed=4, batch=10) for i in range(10)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return (index, *self.items[index])


def test_ogd_resumes_bit_identically_after_its_basis_grew():
    loader = torch.utils.data.DataLoader(IndexedBatches(), batch_size=5)
    batches = make_batches(8)

    def build_ogd(model):
        return ifn.optim.OGD(
            model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), model, args={"num_sample_per_task": 3}
        )

    def run(opt, model, part, task_ends=()):
        for index, (x, y) in enumerate(part):
            if index in task_ends:
                opt.post_process(loader)
                opt.task_id += 1
            opt.set_closure(lambda x=x, y=y: (model(x), [nn.functional.cross_entropy(model(x), y)]))
            opt.step()

    uninterrupted = make_mlp()
    run(build_ogd(uninterrupted), uninterrupted, batches, task_ends=(1, 3))
    model = make_mlp()
    opt = build_ogd(model)
    run(opt, model, batches[:5], task_ends=(1, 3))
    assert opt.ogd_basis.shape[1] == 6  # two tasks of 3 samples: grown past the initial capacity 3
    resumed, resumed_opt = resumed_copy(model, opt, build_ogd)
    resumed_opt.task_id = opt.task_id  # INFTY's attribute, set by the training loop
    run(resumed_opt, resumed, batches[5:])
    assert_same_parameters(uninterrupted, resumed)


@pytest.mark.parametrize("name", ["PCGrad", "CAGrad", "GradVac", "UniGrad_FS"])
def test_sim_list_records_one_mean_cosine_per_step(name):
    model = make_mlp()
    opt = build(name, model)
    infty_two_task_run(opt, model, make_batches(8))
    assert len(opt.sim_list) == 4 and all(-1.0 <= value <= 1.0 for value in opt.sim_list)
    assert all(isinstance(value, float) for value in opt.sim_list)


def test_unigrad_fs_refuses_three_losses_after_the_first_task():
    model = make_mlp()
    opt = build("UniGrad_FS", model)
    x, y = make_batches(1)[0]
    opt.set_closure(lambda: (model(x), [nn.functional.cross_entropy(model(x), y)] * 3))
    with pytest.raises(ValueError, match="UniGrad_FS needs exactly 2 losses"):
        opt.step()


def test_unknown_args_are_refused():
    model = make_mlp()
    with pytest.raises(ValueError, match=r"CAGrad does not take args \['c'\]"):
        ifn.optim.CAGrad(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), model, args={"c": 0.5})


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_frozen_parameters_keep_no_gradient_and_do_not_move(name):
    model = make_mlp()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    cls, args = CLASSES[name]
    opt = cls(
        model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5), model, args=dict(args)
    )
    infty_two_task_run(opt, model, make_batches(4))
    assert model[0].weight.grad is None
    assert torch.equal(model[0].weight, frozen)
