"""``visualize_landscape``: the loss on a plane through the parameters, as a contour and a
3-D surface, with the landscape metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from infty_func.core.tree import PyTree, tree_map
from infty_func.plot.directions import DIRECTION_KINDS, PlaneDirections, plane_directions
from infty_func.plot.metrics import landscape_metrics
from infty_func.plot.objective import model_kept, resolve_target
from infty_func.plot.output import cached, check_dpi, new_figure, output_folder, save_figure, write_json
from infty_func.plot.surface import loss_surface

__all__ = ["visualize_landscape", "visualize_loss_landscape"]


def _check(directions: str, limit: float, samples: int) -> None:
    if directions not in DIRECTION_KINDS:
        raise ValueError(f"visualize_landscape: unknown direction kind {directions!r}; use one of {DIRECTION_KINDS}")
    if not isinstance(limit, (int, float)) or not limit > 0:
        raise ValueError(f"visualize_landscape: limit must be > 0 (the grid spans [-limit, limit]), got {limit!r}")
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"visualize_landscape: samples must be an integer >= 2 (points per axis), got {samples!r}")


def visualize_landscape(
    target: Any,
    params: PyTree | None = None,
    *,
    directions: str = "hessian",
    limit: float = 0.3,
    samples: int = 11,
    task: int = 0,
    out: str | Path = "workdirs/plots/landscape",
    name: str = "custom",
    overwrite: bool = False,
    chunk: int = 64,
    eigen_iters: int = 100,
    eigen_tol: float = 1e-3,
    seed: int = 0,
    dpi: int = 100,
) -> dict:
    """Draw the loss on the plane ``params + α d₁ + β d₂`` for ``α, β`` in
    ``linspace(−limit, limit, samples)``; return the paths written.

    ``target`` is a ``loss_fn(params)`` (or a curvature objective) with ``params``, or
    ``(model, loader, criterion)``: the mean of ``criterion(model(x), y)`` over the loader,
    evaluated with ``functional_call`` in eval mode (the model is left exactly as found).

    ``directions="hessian"``: ``d₁, d₂`` are the unit eigenvectors of the two largest
    Hessian eigenvalues (Lanczos); ``"random"``: filter-normalised Gaussian directions
    (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"). The ``samples²``
    losses are evaluated with ``torch.func.vmap`` in chunks of ``chunk`` grid points, so
    the loss must be vmappable.

    Writes to ``out/name/``: ``eigen_task{task}.pt`` (directions, eigenvalues),
    ``loss_list_task{task}.pt`` (the grid and its losses), ``loss_surface_task{task}.pdf``
    and ``.png`` (contour and 3-D surface, 12 × 5 inches at ``dpi``) and
    ``landscape_metrics_task{task}.json`` (:func:`infty_func.plot.metrics.landscape_metrics`,
    with ``directions``, ``optimizer_name`` and ``task``). With ``overwrite=False`` the
    ``.pt`` files found there are reused, as in ``infty.plot`` (an error if they were made
    with another direction kind or grid); fresh directions always recompute the surface.
    """
    check_dpi(dpi)
    _check(directions, limit, samples)
    folder = output_folder(out, name)
    resolved = resolve_target(target, params, "visualize_landscape")
    alphas = torch.linspace(-float(limit), float(limit), samples, dtype=torch.float64)
    betas = alphas.clone()
    with model_kept(resolved.model):
        plane, fresh = _directions(resolved, directions, folder / f"eigen_task{task}.pt", overwrite, eigen_iters, eigen_tol, seed)
        loss_path = folder / f"loss_list_task{task}.pt"

        def surface() -> dict:
            losses = loss_surface(resolved.objective, resolved.params, plane.vectors, alphas, betas, chunk)
            return {"alphas": alphas, "betas": betas, "losses": losses}

        grid, _ = cached(loss_path, overwrite or fresh, surface)
    if grid["alphas"].shape != alphas.shape or not torch.allclose(grid["alphas"], alphas):
        raise ValueError(
            f"visualize_landscape: {loss_path} holds a grid with other limit/samples; pass overwrite=True to recompute it"
        )
    metrics = landscape_metrics(grid["losses"], alphas, betas, plane.eigenvalues)
    metrics.update({"directions": plane.kind, "optimizer_name": name, "task": int(task)})
    figure = _draw(grid["losses"], alphas, betas, plane, name, task)
    pdf, png = save_figure(figure, folder, f"loss_surface_task{task}", dpi)
    return {
        "eigen_path": str(folder / f"eigen_task{task}.pt"),
        "loss_path": str(loss_path),
        "plot_path": pdf,
        "plot_png_path": png,
        "metrics_path": write_json(folder / f"landscape_metrics_task{task}.json", metrics),
    }


visualize_loss_landscape = visualize_landscape  # the reference's other name


def _directions(resolved, kind, path, overwrite, iters, tol, seed) -> tuple[PlaneDirections, bool]:
    def compute() -> dict:
        plane = plane_directions(kind, resolved.objective, resolved.params, iters, tol, seed)
        return {"kind": plane.kind, "vectors": plane.vectors, "eigenvalues": plane.eigenvalues}

    saved, fresh = cached(path, overwrite, compute)
    if saved["kind"] != kind:
        raise ValueError(f"visualize_landscape: {path} holds {saved['kind']!r} directions, not {kind!r}; pass overwrite=True")
    vectors = [tree_map(lambda v, p: v.to(device=p.device, dtype=p.dtype), vector, resolved.params) for vector in saved["vectors"]]
    return PlaneDirections(saved["kind"], vectors, saved["eigenvalues"]), fresh


def _draw(losses: torch.Tensor, alphas: torch.Tensor, betas: torch.Tensor, plane: PlaneDirections, name: str, task: int):
    z = losses.numpy()
    a, b = np.meshgrid(alphas.numpy(), betas.numpy(), indexing="ij")
    figure = new_figure(12, 5)
    figure.subplots_adjust(left=0.07, right=0.97, bottom=0.12, top=0.88, wspace=0.15)
    axis_names = ("d₁ (top eigenvector)", "d₂ (second eigenvector)") if plane.kind == "hessian" else ("d₁ (random)", "d₂ (random)")
    contour = figure.add_subplot(1, 2, 1)
    filled = contour.contourf(a, b, z, levels=30, cmap="viridis")
    contour.contour(a, b, z, levels=15, colors="k", linewidths=0.5, alpha=0.5)
    contour.plot([0.0], [0.0], marker="*", markersize=12, color="red", linestyle="none", label="params")
    contour.set_xlabel(axis_names[0])
    contour.set_ylabel(axis_names[1])
    contour.legend(loc="upper right")
    figure.colorbar(filled, ax=contour, label="loss")
    surface = figure.add_subplot(1, 2, 2, projection="3d")
    surface.plot_surface(a, b, z, cmap="viridis", edgecolor="none", alpha=0.85)
    surface.view_init(elev=30, azim=-130)
    surface.set_xlabel("α")
    surface.set_ylabel("β")
    surface.set_zlabel("loss")
    title = f"{name}, task {task}: loss along {plane.kind} directions"
    if plane.eigenvalues is not None:
        title += f" (λ₁ = {float(plane.eigenvalues[0]):.4g}, λ₂ = {float(plane.eigenvalues[1]):.4g})"
    figure.suptitle(title)
    return figure
