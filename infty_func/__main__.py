"""Command line: ``python -m infty_func demo [--out DIR] [--seeds N] [--epochs N] [--methods a,b]`` and
``python -m infty_func plot {landscape,esd,trajectory} [--out DIR] [--task N] ...``."""

from __future__ import annotations

import argparse


def add_plot_command(commands) -> None:
    """Register the ``plot`` subcommand on an ``argparse`` subparsers object (here, so that
    parsing arguments does not import matplotlib)."""
    plot = commands.add_parser("plot", help="loss landscape, Hessian spectrum or toy trajectories as PNG/PDF + JSON")
    kinds = plot.add_subparsers(dest="kind", required=True)
    for kind, text in (("landscape", "loss surface of the demo MLP"), ("esd", "Hessian spectral density of the demo MLP")):
        sub = kinds.add_parser(kind, help=text)
        sub.add_argument("--out", default="workdirs/plots", help="folder; files go to OUT/METHOD/")
        sub.add_argument("--task", type=int, default=0, help="Split-Digits task (0-4) to train and evaluate on")
        sub.add_argument("--method", default="sgd_momentum", help="a single-objective method of the demo's registry")
        sub.add_argument("--epochs", type=int, default=5)
        sub.add_argument("--hidden", type=int, default=64)
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--dpi", type=int, default=100)
        sub.add_argument("--overwrite", action="store_true", help="recompute cached .pt files")
        if kind == "landscape":
            sub.add_argument("--directions", default="hessian", choices=("hessian", "random"))
            sub.add_argument("--limit", type=float, default=0.5)
            sub.add_argument("--samples", type=int, default=11)
        else:
            sub.add_argument("--density-iter", type=int, default=60)
            sub.add_argument("--density-runs", type=int, default=2)
            sub.add_argument("--trace-probes", type=int, default=50)
    trajectory = kinds.add_parser("trajectory", help="optimizer paths on the two-objective toy problem")
    trajectory.add_argument("--out", default="workdirs/plots")
    trajectory.add_argument("--methods", default="sgd,adam,zo_sgd,pcgrad,config,mgda", help="comma-separated built-in names")
    trajectory.add_argument("--iters", type=int, default=1000)
    trajectory.add_argument("--lr", type=float, default=0.1)
    trajectory.add_argument("--grid-size", type=int, default=200)
    trajectory.add_argument("--dpi", type=int, default=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infty_func")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="continual learning on Split-Digits, all seeds at once with vmap")
    demo.add_argument("--out", default="workdirs/demo", help="folder for results.json and accuracy.png")
    demo.add_argument("--seeds", type=int, default=5)
    demo.add_argument("--epochs", type=int, default=10, help="epochs per task")
    demo.add_argument("--methods", default=None, help="comma-separated names from the registry (default: all)")
    demo.add_argument("--quiet", action="store_true")
    demo.add_argument("--no-figures", action="store_true", help="skip the per-method ESD and landscape figures")
    add_plot_command(commands)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from infty_func.demo import run_demo

        methods = args.methods.split(",") if args.methods else None
        run_demo(args.out, methods, args.seeds, args.epochs, args.quiet, figures=not args.no_figures)
    elif args.command == "plot":
        from infty_func.plot.command import run_plot_command

        run_plot_command(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
