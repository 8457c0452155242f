"""The demo's outputs: a table on the terminal, a JSON file and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from infty_func.demo.continual import average_accuracy, average_forgetting


def summarise(results: dict, config: dict) -> dict:
    """JSON-ready summary: per method, mean and std over seeds of the final average
    accuracy and forgetting, the average-accuracy curve, and wall time."""
    methods = {}
    for name, result in results.items():
        curve = average_accuracy(result.accuracy)
        forgetting = average_forgetting(result.accuracy)
        methods[name] = {
            "avg_accuracy": {"mean": curve[:, -1].mean().item(), "std": curve[:, -1].std(unbiased=False).item()},
            "forgetting": {"mean": forgetting.mean().item(), "std": forgetting.std(unbiased=False).item()},
            "avg_accuracy_per_task": {
                "mean": curve.mean(0).tolist(),
                "std": curve.std(0, unbiased=False).tolist(),
            },
            "accuracy_matrix_mean": result.accuracy.mean(0).tolist(),
            "seconds": result.seconds,
        }
    return {"benchmark": "split-digits", "config": config, "methods": methods}


def table(summary: dict) -> str:
    rows = [f"{'method':<16}{'avg accuracy':>18}{'forgetting':>18}{'seconds':>10}"]
    for name, entry in summary["methods"].items():
        acc, fgt = entry["avg_accuracy"], entry["forgetting"]
        rows.append(
            f"{name:<16}{acc['mean']:>11.3f} ± {acc['std']:.3f}"
            f"{fgt['mean']:>11.3f} ± {fgt['std']:.3f}{entry['seconds']:>10.1f}"
        )
    return "\n".join(rows)


def write(summary: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "results.json"
    json_path.write_text(json.dumps(summary, indent=2))
    png_path = out / "accuracy.png"
    plot(summary, png_path)
    return json_path, png_path


def plot(summary: dict, path: Path) -> None:
    from infty_func.plot.output import new_figure

    fig = new_figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    for name, entry in summary["methods"].items():
        mean = torch.tensor(entry["avg_accuracy_per_task"]["mean"])
        std = torch.tensor(entry["avg_accuracy_per_task"]["std"])
        tasks = torch.arange(1, len(mean) + 1)
        ax.plot(tasks, mean, marker="o", label=name)
        ax.fill_between(tasks, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("average accuracy on seen tasks")
    seeds = summary["config"]["seeds"]
    ax.set_title(f"Split-Digits, mean ± std over {seeds} seeds")
    ax.set_xticks(range(1, len(mean) + 1))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
