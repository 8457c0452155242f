"""Two gloo workers with different data shards agree on every zeroth-order step by
all-reducing q scalars, and land where one process on the mean objective lands."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")

STEPS, WORLD = 3, 2


def shards():
    """Per step, one batch per worker."""
    return [make_batches(WORLD, seed=40 + step) for step in range(STEPS)]


def transform(reduce=None):
    return ifn.zo_sgd(0.05, momentum=0.9, q=2, seed=11, reduce=reduce)


def worker(rank, port, folder):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = make_mlp()
        params = params_of(model)
        tx = transform(ifn.zeroth_order.all_reduce_mean)
        state = tx.init(params)
        for step_batches in shards():
            x, y = step_batches[rank]
            params, state, _ = ifn.step(tx, state, params, loss_fn_for(model, x, y))
        torch.save(params, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_workers_share_only_scalars_and_match_the_mean_objective(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    first, second = (torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD))
    for key in first:
        assert torch.equal(first[key], second[key]), key  # the workers never diverge

    model = make_mlp()
    params = params_of(model)
    tx = transform()
    state = tx.init(params)
    for step_batches in shards():
        losses = [loss_fn_for(model, x, y) for x, y in step_batches]

        def mean_loss(p, losses=losses):
            return sum(loss(p) for loss in losses) / len(losses)

        params, state, _ = ifn.step(tx, state, params, mean_loss)
    for key in first:
        torch.testing.assert_close(first[key], params[key], rtol=0, atol=1e-12)


def test_all_reduce_mean_is_the_identity_outside_a_process_group():
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(ifn.zeroth_order.all_reduce_mean(values), values)

