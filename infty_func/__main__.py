"""Command line: ``python -m infty_func demo [--out DIR] [--seeds N] [--epochs N] [--methods a,b]`` and
``python -m infty_func plot {landscape,esd,trajectory} [--out DIR] [--task N] ...``."""

from __future__ import annotations

import argparse

from infty_func.plot.command import add_plot_command, run_plot_command


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
        run_plot_command(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
