"""``visualize_trajectory``: the paths of several optimizers on the two-objective toy
problem, over the contour of the summed loss and its Pareto set."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import infty_func as ifn
from infty_func.core.base import GradientTransformation
from infty_func.plot.output import check_dpi, new_figure, save_figure, write_json
from infty_func.plot.toy import DEFAULT_INIT, TOY_BOX, pareto_set, two_objective_toy

__all__ = ["visualize_trajectory", "run_trajectory", "TRAJECTORY_METHODS", "PROBLEMS"]

PROBLEMS: dict[str, Callable[[Tensor], Tensor]] = {"two_objective_toy": two_objective_toy}

# Built-in methods by name: lr -> transform. Aggregators see the two losses; the rest, their sum.
TRAJECTORY_METHODS: dict[str, Callable[[float], GradientTransformation]] = {
    "sgd": lambda lr: ifn.sgd(lr),
    "adam": lambda lr: ifn.adam(lr),
    "zo_sgd": lambda lr: ifn.zo_sgd(lr, seed=0),
    "zo_adam": lambda lr: ifn.zo_adam(lr, seed=0),
    "forward_grad": lambda lr: ifn.forward_grad(lr, seed=0),
    "pcgrad": lambda lr: ifn.chain(ifn.pcgrad(seed=0), ifn.sgd(lr)),
    "cagrad": lambda lr: ifn.chain(ifn.cagrad(0.5), ifn.sgd(lr)),
    "config": lambda lr: ifn.chain(ifn.config(), ifn.sgd(lr)),
    "mgda": lambda lr: ifn.chain(ifn.mgda(), ifn.sgd(lr)),
}


def _transforms(transforms, lr: float) -> dict[str, GradientTransformation]:
    if isinstance(transforms, str):
        transforms = [transforms]
    if isinstance(transforms, Mapping):
        chosen = dict(transforms)
    elif isinstance(transforms, Sequence):
        unknown = [name for name in transforms if name not in TRAJECTORY_METHODS]
        if unknown:
            raise ValueError(f"visualize_trajectory: unknown methods {unknown}; built in: {sorted(TRAJECTORY_METHODS)}")
        chosen = {name: TRAJECTORY_METHODS[name](lr) for name in transforms}
    else:
        raise ValueError(f"visualize_trajectory needs a dict name -> transform or a list of names, got {type(transforms).__name__}")
    if not chosen:
        raise ValueError("visualize_trajectory needs at least one transform")
    for name, transform in chosen.items():
        if not isinstance(transform, GradientTransformation):
            raise ValueError(f"visualize_trajectory: {name!r} is a {type(transform).__name__}, not a GradientTransformation")
    return chosen


def run_trajectory(
    transform: GradientTransformation, problem: Callable[[Tensor], Tensor], init: Tensor, n_iter: int
) -> tuple[Tensor, str]:
    """The ``[n_iter + 1, 2]`` points visited by ``ifn.step`` from ``init``, and what the
    transform was given: ``"sum"`` (``loss_fn`` returns ``f₁ + f₂``) or ``"stacked"``
    (``[f₁, f₂]``, for a multi-objective aggregator). The sum is tried first; a transform
    that refuses a scalar loss with a ``ValueError`` gets the stacked losses."""
    forms = {"sum": lambda x: problem(x).sum(), "stacked": problem}
    state, point = transform.init(init), init
    try:
        form = "sum"
        point, state, _ = ifn.step(transform, state, point, forms[form])
    except ValueError as refused:
        form = "stacked"
        try:
            point, state, _ = ifn.step(transform, state, point, forms[form])
        except ValueError as error:
            raise ValueError(f"the transform accepts neither the summed loss ({refused}) nor the two losses ({error})") from error
    points = [init, point]
    for _ in range(n_iter - 1):
        point, state, _ = ifn.step(transform, state, point, forms[form])
        points.append(point)
    return torch.stack(points).detach(), form


def visualize_trajectory(
    transforms: Mapping[str, GradientTransformation] | Sequence[str] | str,
    problem: str = "two_objective_toy",
    n_iter: int = 2000,
    init: tuple[float, float] = DEFAULT_INIT,
    *,
    lr: float = 0.1,
    out: str | Path = "workdirs/plots/trajectory",
    grid_size: int = 200,
    dpi: int = 100,
) -> dict:
    """Run each transform for ``n_iter`` steps of ``ifn.step`` from ``init`` on the toy
    problem and draw all paths on one figure; return the paths written.

    ``transforms`` maps names to any ``GradientTransformation`` that outputs updates (a
    learning rate included), or lists built-in names (:data:`TRAJECTORY_METHODS`: ``sgd,
    adam, zo_sgd, zo_adam, forward_grad, pcgrad, cagrad, config, mgda``, built with
    ``lr``). Aggregators get the losses ``[f₁, f₂]`` (a Jacobian), the others their sum
    (see :func:`run_trajectory`). ``infty.plot`` descends the *mean* of the two losses for
    its first-order methods (and the sum for its zeroth-order ones); here every method
    sees the sum, so an aggregator equals plain gradient descent when the gradients
    agree, and ``sgd(lr)`` here matches the reference's ``sgd`` at ``2 lr``.

    The figure (8 × 6 inches at ``dpi``) has the contour of ``f₁ + f₂`` on
    ``[−11, 11]²`` (``grid_size²`` points), the Pareto set (:func:`~infty_func.plot.toy.pareto_set`),
    the start, and each path. Writes to ``out/``: ``traj_{names}.pdf``, ``.png``,
    ``.pt`` (each path) and ``.json`` (each method's final point, losses, their sum, the
    distance to the Pareto set and the loss form it was given).
    """
    if problem not in PROBLEMS:
        raise ValueError(f"visualize_trajectory: unknown problem {problem!r}; known: {sorted(PROBLEMS)}")
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"visualize_trajectory: n_iter must be a positive integer, got {n_iter!r}")
    check_dpi(dpi)
    chosen = _transforms(transforms, lr)
    function = PROBLEMS[problem]
    start = torch.as_tensor(init, dtype=torch.float64)
    if start.shape != (2,):
        raise ValueError(f"visualize_trajectory: init must be a point (x1, x2), got {tuple(init)!r}")
    front = pareto_set(function)
    paths, summary = {}, {}
    for name, transform in chosen.items():
        path, form = run_trajectory(transform, function, start, n_iter)
        paths[name] = path
        final = path[-1]
        losses = function(final)
        summary[name] = {
            "final_point": final.tolist(),
            "final_losses": losses.tolist(),
            "final_total": float(losses.sum()),
            "distance_to_pareto_set": _distance_to_polyline(final, front),
            "loss_form": form,
        }
    folder = Path(out).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    stem = "traj_" + "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", name) for name in chosen)
    torch.save(paths, folder / f"{stem}.pt")
    pdf, png = save_figure(_draw(function, start, paths, front, grid_size), folder, stem, dpi)
    record = {"problem": problem, "init": start.tolist(), "n_iter": n_iter, "pareto_set": front.tolist(), "methods": summary}
    return {
        "trajectory_path": str(folder / f"{stem}.pt"),
        "plot_path": pdf,
        "plot_png_path": png,
        "metrics_path": write_json(folder / f"{stem}.json", record),
    }


def _distance_to_polyline(point: Tensor, polyline: Tensor) -> float:
    """The distance from ``point`` to the broken line through ``polyline``'s rows."""
    a, b = polyline[:-1], polyline[1:]
    along = ((point - a) * (b - a)).sum(-1) / ((b - a) ** 2).sum(-1).clamp_min(1e-30)
    nearest = a + along.clamp(0, 1)[:, None] * (b - a)
    return float((nearest - point).norm(dim=-1).min())


def _draw(function, start: Tensor, paths: dict, front: Tensor, grid_size: int):
    axis = torch.linspace(-TOY_BOX, TOY_BOX, grid_size, dtype=torch.float64)
    x1, x2 = torch.meshgrid(axis, axis, indexing="xy")
    total = function(torch.stack([x1, x2], dim=-1)).sum(-1)
    figure = new_figure(8, 6)
    axes = figure.add_subplot(1, 1, 1)
    contour = axes.contour(x1.numpy(), x2.numpy(), total.numpy(), levels=20, cmap="viridis", linewidths=1.0)
    figure.colorbar(contour, ax=axes, label="f₁ + f₂")
    axes.plot(front[:, 0].numpy(), front[:, 1].numpy(), color="gray", linewidth=4, alpha=0.6, label="Pareto set")
    axes.plot([float(start[0])], [float(start[1])], marker="o", markersize=9, color="k", linestyle="none", label="start")
    colors = [f"C{index}" for index in range(len(paths))]
    for color, (name, path) in zip(colors, paths.items()):
        points = np.clip(path.numpy(), -TOY_BOX, TOY_BOX)
        axes.plot(points[:, 0], points[:, 1], color=color, linewidth=1.5, label=name)
        axes.plot(points[-1:, 0], points[-1:, 1], marker="X", markersize=9, color=color, linestyle="none")
    axes.set_xlim(-TOY_BOX, TOY_BOX)
    axes.set_ylim(-TOY_BOX, TOY_BOX)
    axes.set_xlabel("x₁")
    axes.set_ylabel("x₂")
    axes.set_title("Optimizer paths on the two-objective toy problem")
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return figure
