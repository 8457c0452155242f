"""What every plot test checks of a written figure, and small problems with known answers."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from matplotlib.image import imread
from torch import nn


def assert_png(path: str, width_in: float, height_in: float, dpi: int) -> None:
    """A non-empty PNG of exactly ``width_in × height_in`` inches at ``dpi``."""
    assert Path(path).stat().st_size > 1000
    pixels = imread(path)
    assert pixels.shape[:2] == (round(height_in * dpi), round(width_in * dpi))
    assert pixels[..., :3].std() > 0  # something was drawn


def assert_pdf(path: str) -> None:
    assert Path(path).read_bytes()[:5] == b"%PDF-"


def read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def quadratic(eigenvalues=(3.0, 2.0, 0.5, -1.0, 0.25, 1.5), seed=0):
    """``½ wᵀHw + c`` with a known symmetric ``H`` (eigenvalues given) on a two-leaf pytree,
    and a counter of how often the loss is called (under vmap: once per batched call)."""
    generator = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    hessian = q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T
    params = {
        "w": torch.randn(2, 2, generator=generator, dtype=torch.float64),
        "b": torch.randn(n - 4, generator=generator, dtype=torch.float64),
    }
    calls = {"count": 0}

    def loss_fn(p):
        calls["count"] += 1
        flat = torch.cat([p["w"].reshape(-1), p["b"]])
        return 0.5 * flat @ hessian @ flat + 1.0

    return hessian, params, loss_fn, calls


class Probe(nn.Module):
    """A model with buffers (batch norm) and mode-dependent layers (dropout)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def probe_model_and_loader(seed=0, batches=2, size=16):
    torch.manual_seed(seed)
    model = Probe().double()
    with torch.no_grad():  # non-trivial running statistics
        model.body[1].running_mean.uniform_(-0.5, 0.5)
        model.body[1].running_var.uniform_(0.5, 2.0)
    generator = torch.Generator().manual_seed(seed + 1)
    loader = [
        (torch.randn(size, 5, generator=generator, dtype=torch.float64), torch.randint(0, 3, (size,), generator=generator))
        for _ in range(batches)
    ]
    return model, loader


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "ids": {name: id(p) for name, p in model.named_parameters()},
    }


def assert_as_found(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["modes"] == before["modes"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["ids"] == before["ids"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
