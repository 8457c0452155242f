"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def median_seconds(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """The median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_medians(steps: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of each step function, timed round-robin so that drift in the
    machine's speed (other processes, frequency) hits all of them alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def mlp(sizes: tuple[int, ...], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def classification_problem(sizes: tuple[int, ...], batch: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``mlp(sizes)`` with one random batch of inputs and class labels."""
    model = mlp(sizes)
    x = torch.randn(batch, sizes[0])
    y = torch.randint(0, sizes[-1], (batch,))
    return model, x, y


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ratio_line(name: str, seconds: float, baseline: float) -> str:
    return f"  {name:<44}{seconds * 1e3:>10.2f} ms{seconds / baseline:>9.2f}x"


def functional_stepper(
    model: nn.Module, transform, loss_fn: Callable, donate: bool = False, reuse_gradients: bool = False
) -> Callable[[], None]:
    """A no-argument ``ifn.step`` of ``transform`` on ``model``'s parameters (detached; cloned
    when ``donate``, since the step then writes into them), carrying the parameters and
    state between calls."""
    import infty_func as ifn

    box = {"params": {n: p.detach().clone() if donate else p.detach() for n, p in model.named_parameters()}}
    box["state"] = transform.init(box["params"])

    def step():
        box["params"], box["state"], _ = ifn.step(
            transform, box["state"], box["params"], loss_fn, donate=donate, reuse_gradients=reuse_gradients
        )

    return step


def parse_bench_arguments(doc: str, threads: int | None = None, extra: Callable | None = None):
    """``--repeats`` and ``--threads`` (plus what ``extra(parser)`` adds), parsed, with the
    thread count applied: one thread gives steadier numbers on a busy 2-core machine."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=threads, help="torch threads (default: torch's own)")
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def print_case_ratios(cases, repeats: int, width: int = 44) -> None:
    """Time each ``(name, ours, reference)`` pair round-robin and print ours / reference
    (``reference`` may be ``None``: the package is not installed)."""
    for name, ours, reference in cases:
        steps = {"ours": ours} if reference is None else {"ours": ours, "reference": reference}
        seconds = interleaved_medians(steps, repeats)
        if reference is None:
            print(f"{name:<{width}}{seconds['ours'] * 1e3:>10.2f}{'-':>14}{'-':>8}")
        else:
            ratio = seconds["ours"] / seconds["reference"]
            print(f"{name:<{width}}{seconds['ours'] * 1e3:>10.2f}{seconds['reference'] * 1e3:>14.2f}{ratio:>7.2f}x")


def torchzero_closure(opt, loss_of: Callable[[], torch.Tensor]) -> Callable[..., torch.Tensor]:
    """torchzero's closure convention for ``opt``: ``closure(backward=True)`` evaluates
    ``loss_of()`` and, when asked, zeroes the grads and runs the backward pass."""

    def closure(backward=True):
        loss = loss_of()
        if backward:
            opt.zero_grad()
            loss.backward()
        return loss

    return closure
