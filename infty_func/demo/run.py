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
    figures: bool = True,
) -> dict:
    """Train each method on Split-Digits over ``seeds`` seeds; print, save and return the
    summary (also written to ``out/results.json``, with ``out/accuracy.png``). With
    ``figures``, each method's seed-0 model after the last task also gets a Hessian
    spectral density and a loss landscape on the last task's test data (small settings),
    under ``out/figures/``."""
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
    if figures:
        _draw_figures(results, tasks, Path(out) / "figures")
    config = {"seeds": seeds, "epochs": epochs, "tasks": len(tasks), "model": "MLP 64-64-10, task-incremental heads"}
    summary = summarise(results, config)
    json_path, png_path = write(summary, Path(out))
    if not quiet:
        print(table(summary))
        print(f"wrote {json_path} and {png_path}")
    return summary


def _draw_figures(results: dict, tasks: list, folder: Path) -> None:
    """An ESD and a loss-landscape figure per method: seed 0, last task, test data."""
    import torch

    from infty_func.demo.continual import _class_mask, _loss_fn
    from infty_func.plot import visualize_esd, visualize_landscape

    last = tasks[-1]
    mask = _class_mask(last.classes)
    task = len(tasks) - 1
    for name, result in results.items():
        if result.params is None:
            continue
        params = {k: v[0].detach() for k, v in result.params.items()}

        def loss_fn(p, x=last.test_x, y=last.test_y):
            return _loss_fn(p, x, y, mask)

        with torch.no_grad():
            visualize_esd(loss_fn, params, task=task, out=folder / "esd", name=name, density_iter=30, trace_probes=30)
            visualize_landscape(loss_fn, params, task=task, out=folder / "landscape", name=name, limit=0.5, samples=11)
