"""Where a plot's files go and how they are written: the folder, PNG and PDF figures drawn
without pyplot, the JSON of metrics, and cached arrays reused unless ``overwrite``.

Figures are ``matplotlib.figure.Figure`` objects on an Agg canvas, so drawing never
touches pyplot's global state or the user's chosen backend.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["output_folder", "check_dpi", "new_figure", "save_figure", "write_json", "cached"]


def output_folder(out: str | Path, name: str) -> Path:
    """``out/name``, created if missing (the reference's layout: one folder per method)."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"the plot name must be a plain folder name, got {name!r}")
    folder = Path(out).expanduser() / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_dpi(dpi: int) -> None:
    """Refuse a resolution no figure can be drawn at (checked before any computation)."""
    if not isinstance(dpi, int) or dpi < 10:
        raise ValueError(f"dpi must be an integer >= 10, got {dpi!r}")


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width × height`` inches on its own Agg canvas (no pyplot)."""
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, folder: Path, stem: str, dpi: int) -> tuple[str, str]:
    """Write ``stem.pdf`` and ``stem.png`` (``dpi`` dots per inch, so the PNG is exactly
    the figure size times ``dpi`` pixels); returns both paths."""
    check_dpi(dpi)
    pdf, png = folder / f"{stem}.pdf", folder / f"{stem}.png"
    figure.savefig(pdf)
    figure.savefig(png, dpi=dpi)
    return str(pdf), str(png)


def _plain(value: Any) -> Any:
    """JSON-ready: tensors to numbers or lists, non-finite floats to ``None``."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict) -> str:
    path.write_text(json.dumps(_plain(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return str(path)


def cached(path: Path, overwrite: bool, compute: Callable[[], Any]) -> tuple[Any, bool]:
    """``(data, fresh)``: the data saved at ``path`` when it exists and ``overwrite`` is
    false, else ``compute()``, saved there. ``fresh`` says whether it was computed."""
    if path.exists() and not overwrite:
        return torch.load(path, map_location="cpu", weights_only=True), False
    data = compute()
    torch.save(data, path)
    return data, True
