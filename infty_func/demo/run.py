"""``python -m infty_func demo``: run the registry's methods and report."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from infty_func.demo.continual import train_continual
from infty_func.demo.data import split_digits
from infty_func.demo.registry import METHODS, MULTI_OBJECTIVE
from infty_func.demo.report import summarise, table, write


def run_demo(
    out: str | Path = "workdirs/demo",
    methods: list[str] | None = None,
    seeds: int = 5,
    epochs: int = 10,
    quiet: bool = False,
) -> dict:
    """Train each method on Split-Digits over ``seeds`` seeds; print, save and return the
    summary (also written to ``out/results.json``, with ``out/accuracy.png``)."""
    names = methods or list(METHODS)
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown demo methods {unknown}; known: {sorted(METHODS)}")
    if seeds < 1 or epochs < 1:
        raise ValueError(f"seeds and epochs must be >= 1, got {seeds} and {epochs}")
    tasks = split_digits()
    seed_list = list(range(seeds))
    results = {}
    with tqdm(total=len(names) * len(tasks), desc="split-digits", disable=quiet, file=sys.stderr) as bar:
        for name in names:
            bar.set_postfix_str(name)
            results[name] = train_continual(
                METHODS[name], tasks, seed_list, epochs=epochs, progress=bar.update, replay=name in MULTI_OBJECTIVE
            )
    config = {"seeds": seeds, "epochs": epochs, "tasks": len(tasks), "model": "MLP 64-64-10, task-incremental heads"}
    summary = summarise(results, config)
    json_path, png_path = write(summary, Path(out))
    if not quiet:
        print(table(summary))
        print(f"wrote {json_path} and {png_path}")
    return summary
