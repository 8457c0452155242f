"""``python -m infty_func plot {landscape,esd,trajectory}``: pictures without writing code
(the arguments are declared in ``infty_func.__main__``).

``landscape`` and ``esd`` first train the demo's MLP (64-64-10, one two-class head) for a
few epochs on one Split-Digits task with a method from the demo's registry, then draw its
loss landscape or Hessian spectrum on that task's training set; ``trajectory`` runs
built-in methods on the two-objective toy problem.
"""

from __future__ import annotations

import argparse

__all__ = ["run_plot_command", "train_demo_model"]


def train_demo_model(task: int = 0, method: str = "sgd_momentum", epochs: int = 5, hidden: int = 64, seed: int = 0):
    """Train the demo MLP on Split-Digits task ``task`` with the registry's ``method``;
    returns ``(params, loss_fn, test_accuracy)`` with ``loss_fn`` the cross-entropy on the
    task's training set over its two classes (the demo's task-incremental head)."""
    import torch

    import infty_func as ifn
    from infty_func.demo.data import split_digits
    from infty_func.demo.model import init_mlp, mlp
    from infty_func.demo.registry import METHODS, MULTI_OBJECTIVE

    tasks = split_digits()
    if not 0 <= task < len(tasks):
        raise ValueError(f"--task must be in 0..{len(tasks) - 1}, got {task}")
    if method not in METHODS or method in MULTI_OBJECTIVE:
        single = sorted(set(METHODS) - MULTI_OBJECTIVE)
        raise ValueError(f"plot trains on one task with one loss; --method must be one of {single}, got {method!r}")
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    data = tasks[task]
    classes = list(data.classes)

    def loss_on(x, y):
        target = (y == classes[1]).long()
        return lambda params: torch.nn.functional.cross_entropy(mlp(params, x)[:, classes], target)

    transform = METHODS[method]()
    params = init_mlp((64, hidden, 10), seed)
    state = transform.init(params)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(data.train_y), generator=generator)
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            params, state, _ = ifn.step(transform, state, params, loss_on(data.train_x[batch], data.train_y[batch]))
    with torch.no_grad():
        predicted = mlp(params, data.test_x)[:, classes].argmax(-1)
        accuracy = float((predicted == (data.test_y == classes[1]).long()).float().mean())
    return params, loss_on(data.train_x, data.train_y), accuracy


def run_plot_command(args: argparse.Namespace) -> dict:
    """Run a parsed ``plot`` command; print and return the paths written."""
    from infty_func.plot.esd import visualize_esd
    from infty_func.plot.landscape import visualize_landscape
    from infty_func.plot.trajectory import visualize_trajectory

    if args.kind == "trajectory":
        methods = [name for name in args.methods.split(",") if name]
        paths = visualize_trajectory(methods, n_iter=args.iters, lr=args.lr, out=args.out, grid_size=args.grid_size, dpi=args.dpi)
    else:
        params, loss_fn, accuracy = train_demo_model(args.task, args.method, args.epochs, args.hidden, args.seed)
        print(f"trained {args.method} on Split-Digits task {args.task} for {args.epochs} epochs: test accuracy {accuracy:.3f}")
        common = {"task": args.task, "out": args.out, "name": args.method, "overwrite": args.overwrite, "dpi": args.dpi}
        if args.kind == "landscape":
            paths = visualize_landscape(
                loss_fn, params, directions=args.directions, limit=args.limit, samples=args.samples, seed=args.seed, **common
            )
        else:
            paths = visualize_esd(
                loss_fn, params, density_iter=args.density_iter, density_runs=args.density_runs,
                trace_probes=args.trace_probes, seed=args.seed, **common,
            )  # fmt: skip
    for path in paths.values():
        print(f"wrote {path}")
    return paths
