"""Continual training on Split-Digits with every seed trained at once under vmap."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import vmap

import infty_func as ifn
from infty_func.demo.data import Task
from infty_func.demo.model import init_mlp, mlp


class ContinualResult(NamedTuple):
    accuracy: Tensor  # [seeds, tasks, tasks]: accuracy[s, t, j] on task j after training task t
    seconds: float
    params: dict | None = None  # the final parameters, stacked over seeds


def _class_mask(classes: tuple[int, ...], num_classes: int = 10) -> Tensor:
    """Adds -inf to the logits of classes outside the task (task-incremental heads)."""
    mask = torch.full((num_classes,), float("-inf"))
    mask[list(classes)] = 0.0
    return mask


def _loss_fn(params, x, y, mask):
    logits = mlp(params, x) + mask
    return torch.nn.functional.cross_entropy(logits, y)


def _accuracy(params, x, y, mask):
    return ((mlp(params, x) + mask).argmax(-1) == y).float().mean()


def _replay_losses(params, x, y, mask, old_x, old_y, old_mask):
    """``[old-task loss on a replayed batch, new-task loss]``: the two objectives of the
    multi-objective methods (each replayed sample keeps its own task's head mask)."""
    old = torch.nn.functional.cross_entropy(mlp(params, old_x) + old_mask, old_y)
    return torch.stack([old, _loss_fn(params, x, y, mask)])


def train_continual(
    transform_factory: Callable[[], ifn.GradientTransformation],
    tasks: list[Task],
    seeds: list[int],
    epochs: int = 5,
    batch_size: int = 32,
    hidden: int = 64,
    progress: Callable[[], None] | None = None,
    replay: bool = False,
    replay_per_task: int = 40,
) -> ContinualResult:
    """Train one MLP per seed on the tasks in order; evaluate every seen task after each.

    All seeds run in one vmapped step: parameters, optimizer states and mini-batches carry
    a leading seed axis. Seeds differ in initialisation and in the order of their batches.
    The loop owns the stacked parameters and states, so each step is donated: it writes
    its results into them (the same values as a pure step, fewer new buffers).

    With ``replay``, ``replay_per_task`` training samples of each finished task go to a
    buffer, and from the second task on ``loss_fn`` returns two losses, an old-task loss
    on a replayed batch and the new-task loss, for a multi-objective aggregator (on the
    first task it returns the new-task loss alone, as a vector of one).
    """
    start = time.perf_counter()
    transform = transform_factory()
    params = [init_mlp((64, hidden, 10), seed) for seed in seeds]
    params = {k: torch.stack([p[k] for p in params]) for k in params[0]}
    state = vmap(transform.init)(params)

    def train_step(p, s, x, y, mask):
        new_p, new_s, _ = ifn.step(transform, s, p, lambda q: _loss_fn(q, x, y, mask), donate=True)
        return new_p, new_s

    def first_task_step(p, s, x, y, mask):
        new_p, new_s, _ = ifn.step(transform, s, p, lambda q: _loss_fn(q, x, y, mask).reshape(1), donate=True)
        return new_p, new_s

    def replay_step(p, s, x, y, mask, old_x, old_y, old_mask):
        new_p, new_s, _ = ifn.step(
            transform, s, p, lambda q: _replay_losses(q, x, y, mask, old_x, old_y, old_mask), donate=True
        )
        return new_p, new_s

    batched_step = vmap(train_step, in_dims=(0, 0, 0, 0, None))
    batched_first = vmap(first_task_step, in_dims=(0, 0, 0, 0, None))
    batched_replay = vmap(replay_step, in_dims=(0, 0, 0, 0, None, 0, 0, 0))
    batched_accuracy = vmap(_accuracy, in_dims=(0, None, None, None))

    num_seeds, num_tasks = len(seeds), len(tasks)
    accuracy = torch.zeros(num_seeds, num_tasks, num_tasks)
    generators = [torch.Generator().manual_seed(1000 + seed) for seed in seeds]
    buffer_x, buffer_y, buffer_mask = [], [], []
    for t, task in enumerate(tasks):
        mask = _class_mask(task.classes)
        n = task.train_x.shape[0]
        steps_per_epoch = n // batch_size
        for _ in range(epochs):
            order = torch.stack([torch.randperm(n, generator=g) for g in generators])
            for b in range(steps_per_epoch):
                index = order[:, b * batch_size : (b + 1) * batch_size]
                x, y = task.train_x[index], task.train_y[index]
                if not replay:
                    params, state = batched_step(params, state, x, y, mask)
                elif not buffer_x:
                    params, state = batched_first(params, state, x, y, mask)
                else:
                    old_x, old_y, old_mask = torch.cat(buffer_x), torch.cat(buffer_y), torch.cat(buffer_mask)
                    picks = torch.stack([torch.randint(0, old_x.shape[0], (batch_size,), generator=g) for g in generators])
                    params, state = batched_replay(params, state, x, y, mask, old_x[picks], old_y[picks], old_mask[picks])
        if replay:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(t))[:replay_per_task]
            buffer_x.append(task.train_x[keep])
            buffer_y.append(task.train_y[keep])
            buffer_mask.append(mask.expand(len(keep), -1))
        with torch.no_grad():
            for j in range(t + 1):
                seen = tasks[j]
                accuracy[:, t, j] = batched_accuracy(params, seen.test_x, seen.test_y, _class_mask(seen.classes))
        if progress is not None:
            progress()
    return ContinualResult(accuracy, time.perf_counter() - start, params)


def average_accuracy(accuracy: Tensor) -> Tensor:
    """``[seeds, tasks]``: mean accuracy over the tasks seen after each task."""
    num_tasks = accuracy.shape[-1]
    return torch.stack([accuracy[:, t, : t + 1].mean(-1) for t in range(num_tasks)], dim=-1)


def average_forgetting(accuracy: Tensor) -> Tensor:
    """``[seeds]``: after the last task, the mean over earlier tasks of the drop from their
    best accuracy to their final one (Chaudhry et al., 2018, eq. 2)."""
    num_tasks = accuracy.shape[-1]
    if num_tasks < 2:
        return torch.zeros(accuracy.shape[0])
    drops = [
        accuracy[:, j : num_tasks - 1, j].max(-1).values - accuracy[:, num_tasks - 1, j]
        for j in range(num_tasks - 1)
    ]
    return torch.stack(drops, dim=-1).mean(-1)
