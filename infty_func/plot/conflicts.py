"""``visualize_conflicts``: the cosine similarity between the objectives' gradients over
training (before aggregation), and the worst objective's cosine with the update (after)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from infty_func.multiobjective.diagnostics import ConflictDiagnostics, mean_pairwise_cosine
from infty_func.plot.metrics import conflict_metrics
from infty_func.plot.output import check_dpi, new_figure, output_folder, save_figure, write_json

__all__ = ["visualize_conflicts", "similarity_curves"]


def _before(cosine: Tensor) -> Tensor:
    """The mean pairwise cosine per step; ``cosine`` is ``[..., m, m]``."""
    if cosine.shape[-1] < 2:
        raise ValueError("conflict curves need at least 2 objectives; these diagnostics have 1")
    return mean_pairwise_cosine(cosine)


def _worst(found: ConflictDiagnostics) -> Tensor:
    """``min_i cos(gᵢ, d)`` per step (diagnostics stacked over steps). The diagnostics
    already count a vanishing update (e.g. PCGrad on exactly opposed gradients) as 0 and
    clamp to ``[−1, 1]``."""
    return found.update_cosine.to(torch.float64).min(-1).values


def _diagnostics_of(item: Any) -> ConflictDiagnostics | None:
    """The diagnostics in ``item``: itself, its ``diagnostics`` field (an aggregator's
    state), or the first found inside a chain's tuple of states."""
    if isinstance(item, ConflictDiagnostics):
        return item
    found = getattr(item, "diagnostics", None)
    if isinstance(found, ConflictDiagnostics):
        return found
    if isinstance(item, (tuple, list)):
        for member in item:
            found = _diagnostics_of(member)
            if found is not None:
                return found
    return None


def similarity_curves(source: Any) -> tuple[Tensor, Tensor | None]:
    """``(before, after)`` float64 curves from ``source``:

    - an object with ``sim_list`` (or ``sim_arr``), as INFTY's optimizers and
      :mod:`infty_func.optim`'s ``PCGrad, CAGrad, GradVac, ...``: ``before`` only;
    - :class:`~infty_func.multiobjective.ConflictDiagnostics` stacked over steps
      (``cosine`` of shape ``[T, m, m]``), or a sequence of diagnostics or of transform
      states holding them: ``before`` the pairwise cosine (mean off-diagonal for
      ``m > 2``) and ``after`` the smallest ``cos(gᵢ, d)`` between a gradient and the
      update ``d`` — negative when the step increases some loss to first order;
    - a sequence of INFTY ``conflict_records`` (dicts with ``cos_before`` and, when
      present, ``cos_after``);
    - a tensor, array or sequence of numbers: ``before`` only.
    """
    for attribute in ("sim_list", "sim_arr"):
        values = getattr(source, attribute, None)
        if values is not None:
            return torch.as_tensor([float(v) for v in values], dtype=torch.float64), None
    if isinstance(source, ConflictDiagnostics) or isinstance(getattr(source, "diagnostics", None), ConflictDiagnostics):
        found = _diagnostics_of(source)
        if found.cosine.dim() == 2:  # one step
            found = ConflictDiagnostics(*(field[None] for field in found))
        return _before(found.cosine.to(torch.float64)), _worst(found)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)) and len(source) > 0:
        first = source[0]
        if isinstance(first, dict):
            before = torch.as_tensor([float(r["cos_before"]) for r in source], dtype=torch.float64)
            has_after = all("cos_after" in r for r in source)
            after = torch.as_tensor([float(r["cos_after"]) for r in source], dtype=torch.float64) if has_after else None
            return before, after
        if _diagnostics_of(first) is not None:
            found = [_diagnostics_of(item) for item in source]
            if any(d is None for d in found):
                raise ValueError("visualize_conflicts: some items of the sequence hold no ConflictDiagnostics")
            stacked = ConflictDiagnostics(*(torch.stack(fields) for fields in zip(*found)))
            return _before(stacked.cosine.to(torch.float64)), _worst(stacked)
    try:
        values = torch.as_tensor(source, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            "visualize_conflicts needs an optimizer with sim_list, ConflictDiagnostics (or states holding them), "
            f"conflict records, or a sequence of numbers; got {type(source).__name__}"
        ) from None
    return values, None


def visualize_conflicts(
    source: Any,
    *,
    task: int = 0,
    out: str | Path = "workdirs/plots/conflicts",
    name: str | None = None,
    dpi: int = 100,
) -> dict:
    """Draw the gradient-similarity curve(s) of ``source`` (see :func:`similarity_curves`)
    against the step; return the paths written.

    Writes to ``out/name/`` (``name`` defaults to the source's ``name`` attribute, as
    INFTY's optimizers have, else ``"custom"``): ``sim_list_task{task}.pt`` (``before``,
    ``after`` tensors; ``after`` may be ``None``), ``similarity_task{task}.pdf`` and
    ``.png`` (10 × 5 inches at ``dpi``; both curves on one axis when there are two) and
    ``conflicts_metrics_task{task}.json`` (:func:`infty_func.plot.metrics.conflict_metrics`
    with ``optimizer_name`` and ``task``). An empty curve is an error.
    """
    check_dpi(dpi)
    before, after = similarity_curves(source)
    if before.numel() == 0:
        raise ValueError("visualize_conflicts: no similarity values were recorded (one objective only, or no steps yet?)")
    name = name if name is not None else str(getattr(source, "name", "custom"))
    folder = output_folder(out, name)
    metrics = conflict_metrics(before, after)
    metrics.update({"optimizer_name": name, "task": int(task)})
    sim_path = folder / f"sim_list_task{task}.pt"
    torch.save({"before": before, "after": after}, sim_path)
    pdf, png = save_figure(_draw(before, after, metrics, name, task), folder, f"similarity_task{task}", dpi)
    return {
        "sim_path": str(sim_path),
        "plot_path": pdf,
        "plot_png_path": png,
        "metrics_path": write_json(folder / f"conflicts_metrics_task{task}.json", metrics),
    }


def _draw(before: Tensor, after: Tensor | None, metrics: dict, name: str, task: int):
    figure = new_figure(10, 5)
    axes = figure.add_subplot(1, 1, 1)
    steps = torch.arange(1, before.numel() + 1).numpy()
    axes.plot(steps, before.numpy(), color="tab:blue", linewidth=1.5, label="before: cosine between the gradients")
    text = f"before: mean {metrics['mean']:.3f}, std {metrics['std']:.3f}, negative {metrics['fraction_negative']:.0%}"
    if after is not None and after.numel():
        axes.plot(torch.arange(1, after.numel() + 1).numpy(), after.numpy(), color="tab:orange", linewidth=1.5,
                  label="after: min_i cos(g_i, update)")  # fmt: skip
        text += f"\nafter: mean {metrics['after_mean']:.3f}, negative {metrics['after_fraction_negative']:.0%}"
    axes.axhline(0.0, color="k", linewidth=0.8, linestyle="--")
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("Step")
    axes.set_ylabel("Cosine similarity")
    axes.set_title(f"{name}, task {task}: gradient conflicts")
    box = {"boxstyle": "round", "facecolor": "wheat", "alpha": 0.8}
    axes.text(0.02, 0.04, text, transform=axes.transAxes, fontsize=9, bbox=box)
    axes.legend(loc="upper right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure
