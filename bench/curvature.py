"""Curvature next to PyHessian (and infty's fork for the density), on one MLP (~25k
parameters, batch 256) and batch, float64 default for the references' random vectors.

Prints: top eigenvalue to 1e-4 relative accuracy (ours: Lanczos stopped at a 1e-5 change;
PyHessian: power iteration, tol 1e-6), Hutchinson trace with 100 probes (and Hutch++ with the same
budget), spectral density with 4 runs × 50 iterations (infty's fork: PyHessian's calls the
removed torch.eig), and the cost of one Hessian-vector product per strategy in units of one
gradient, with 16 vmapped products against 16 sequential ones.

Run: python bench/curvature.py [--repeats N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, mlp, parameter_count  # noqa: E402

import infty_func as ifn  # noqa: E402
import infty_func.curvature as cv  # noqa: E402

SIZES, BATCH = (64, 256, 32, 10), 256


def problem():
    torch.manual_seed(0)
    model = mlp(SIZES).double()
    x = torch.randn(BATCH, SIZES[0], dtype=torch.float64)
    y = torch.randint(0, SIZES[-1], (BATCH,))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}

    def loss_fn(p):
        return nn.functional.cross_entropy(functional_call(model, p, (x,)), y)

    return model, x, y, params, loss_fn


def once(fn):
    """Seconds of one call after a warm-up call (the first builds caches and graphs)."""
    fn()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    model, x, y, params, loss_fn = problem()
    print(f"MLP {SIZES}: {parameter_count(model) / 1e3:.1f}k parameters, batch {BATCH}, float64")
    try:
        from pyhessian import hessian as pyhessian_hessian
    except ImportError:
        pyhessian_hessian = None
    try:
        from infty.utils.hessian import hessian as infty_hessian
    except ImportError:
        infty_hessian = None

    exact = float(cv.top_eigenvalues(loss_fn, params, k=1, iters=200, tol=1e-12).eigenvalues[0])
    rows = []
    ours_time, ours = once(lambda: cv.top_eigenvalues(loss_fn, params, k=1, tol=1e-5))
    rows.append(
        (
            "top eigenvalue: ours (Lanczos)",
            ours_time,
            f"rel. error {abs(float(ours.eigenvalues[0]) - exact) / exact:.1e}, {ours.products} products",
        )
    )
    if pyhessian_hessian is not None:
        torch.manual_seed(1)
        reference_time, reference = once(
            lambda: pyhessian_hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).eigenvalues(tol=1e-6)
        )
        rows.append(
            (
                "top eigenvalue: PyHessian (power, tol 1e-6)",
                reference_time,
                f"rel. error {abs(reference[0][0] - exact) / exact:.1e}",
            )
        )

    ours_time, trace = once(lambda: cv.hutchinson_trace(loss_fn, params, n_probes=100, batch=25))
    rows.append(
        (
            "trace, 100 probes: ours (Hutchinson, batches of 25)",
            ours_time,
            f"{float(trace.trace):.3f} ± {float(trace.standard_error):.3f}",
        )
    )
    pp_time, pp = once(lambda: cv.hutchinson_trace(loss_fn, params, n_probes=100, method="hutch++"))
    rows.append(("trace, 100 products: ours (Hutch++)", pp_time, f"{float(pp.trace):.3f} ± {float(pp.standard_error):.3f}"))
    if pyhessian_hessian is not None:
        torch.manual_seed(2)
        reference_time, samples = once(
            lambda: pyhessian_hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False).trace(maxIter=100, tol=0.0)
        )
        samples = torch.tensor(samples)
        rows.append(
            ("trace, 100 probes: PyHessian", reference_time, f"{float(samples.mean()):.3f} ± {float(samples.std() / 10):.3f}")
        )

    ours_time, _ = once(lambda: cv.spectral_density(loss_fn, params, n_iter=50, n_runs=4))
    rows.append(("density 4 runs x 50: ours (runs batched)", ours_time, ""))
    if infty_hessian is not None:

        def create_loss_fn(inputs, targets):
            return lambda: (model(inputs), [nn.functional.cross_entropy(model(inputs), targets)])

        import contextlib
        import io

        with contextlib.redirect_stderr(io.StringIO()):
            reference_time, _ = once(
                lambda: infty_hessian(model, create_loss_fn, data=(x, y), device="cpu").density(iter=50, n_v=4)
            )
        rows.append(("density 4 runs x 50: infty.utils.hessian", reference_time, ""))

    width = max(len(name) for name, _, _ in rows)
    for name, seconds, detail in rows:
        print(f"  {name:<{width}} {seconds * 1e3:>9.1f} ms   {detail}")

    # Hessian-vector product strategies, in units of one gradient.
    vector = {k: torch.randn_like(v) for k, v in params.items()}
    vectors = {k: torch.randn(16, *v.shape, dtype=v.dtype) for k, v in params.items()}
    operator = ifn.hvp_operator(loss_fn, params)
    batched = cv.Objective(loss_fn).operator(params)
    steps = {
        "gradient": lambda: ifn.value_and_grad(loss_fn)(params),
        "hvp, kept pullback of the gradient": lambda: operator(vector),
        "hvp, jvp(grad) recomputed": lambda: jvp(grad(loss_fn), (params,), (vector,)),
        "linearise + 1 hvp": lambda: ifn.hvp_operator(loss_fn, params)(vector),
        "16 hvps, vmapped": lambda: batched(vectors, batched=True),
        "16 hvps, sequential": lambda: [operator({k: v[i] for k, v in vectors.items()}) for i in range(16)],
    }
    seconds = interleaved_medians(steps, args.repeats * 4)
    unit = seconds["gradient"]
    print("  Hessian-vector products (x one gradient):")
    for name, value in seconds.items():
        print(f"    {name:<40}{value * 1e3:>9.2f} ms {value / unit:>7.2f}x")


if __name__ == "__main__":
    main()
