"""Projections: an inner transform run on the FFT, the tensorized vector or the blocks of
the update. What the inner transform sees, the identity round trip, torchzero's numbers,
and the properties every transform keeps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

import infty_func as ifn
from infty_func.experimental.block_partition import block_partition
from infty_func.experimental.fft_projection import fft_projection
from infty_func.experimental.projection import ProjectedObjective, ProjectionState
from infty_func.experimental.tensorize_projection import tensorize_projection, tensorized_shape
from tests.adapter_runs import adapter_run, assert_resume_is_bit_identical, functional_trained
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.torchzero_runs import torchzero_trained
from tests.vmap_loop import assert_vmap_equals_loop

# The test MLP (6 → 16 → 4) has 180 entries in leaves of 96, 16, 64 and 4.
PROJECTIONS = {
    "fft": lambda inner, **kw: fft_projection(inner, **kw),
    "fft_one_d": lambda inner, **kw: fft_projection(inner, one_d=True, **kw),
    "fft_ortho": lambda inner, **kw: fft_projection(inner, norm="ortho", **kw),
    "fft_forward_one_d": lambda inner, **kw: fft_projection(inner, one_d=True, norm="forward", **kw),
    "tensorize_3d": lambda inner, **kw: tensorize_projection(inner, 5, **kw),  # 180 → 4×4×4×4, 76 zeros
    "tensorize_vector": lambda inner, **kw: tensorize_projection(inner, 1000, **kw),  # 180 < 1000: 1-D
    "blocks": lambda inner, **kw: block_partition(inner, 10, **kw),
    "blocks_batched": lambda inner, **kw: block_partition(inner, 10, batched=True, **kw),
}
NAMES = list(PROJECTIONS)


def odd_tree():
    """Leaves of awkward shapes: odd and even sides, a 0-d scalar, a single entry."""
    generator = torch.Generator().manual_seed(0)
    shapes = {"cube": (3, 4, 5), "matrix": (7, 2), "vector": (9,), "scalar": (), "single": (1,), "row": (1, 6)}
    return {name: torch.randn(shape, generator=generator, dtype=torch.float64) for name, shape in shapes.items()}


def recording_inner(seen: list) -> ifn.GradientTransformation:
    """An identity inner transform that keeps what it was handed."""

    def record(updates, params):
        seen.append((updates, params))
        return updates

    return ifn.stateless(record)


def mse_loss_for(model, x, y):
    """Squared error to the one-hot labels. Cross-entropy's gradient sums to zero over the
    classes, so some spectral coordinates of the last layer are zero up to rounding, and
    an Adam inner (dividing by ``|g| + eps``) turns that rounding into visible steps; a
    comparison of two correct implementations then measures rounding, not the method."""
    target = nn.functional.one_hot(y, 4).to(x.dtype)
    return lambda params: nn.functional.mse_loss(functional_call(model, params, (x,)), target)


def regression_batches(count: int = 10):
    generator = torch.Generator().manual_seed(5)
    return [(x, torch.randn(12, 4, generator=generator, dtype=torch.float64)) for x, _ in make_batches(count)]


# ----------------------------------------------------------------------- the projected spaces


@pytest.mark.parametrize("name", NAMES)
def test_an_identity_inner_transform_makes_the_projection_the_identity(name):
    tree = odd_tree()
    tx = PROJECTIONS[name](ifn.identity())
    out, state = tx.update(tree, tx.init(tree), tree)
    assert isinstance(state, ProjectionState)
    for key, value in tree.items():
        assert out[key].shape == value.shape
        torch.testing.assert_close(out[key], value, rtol=0, atol=1e-14)


def test_fft_projection_hands_the_inner_transform_the_real_view_of_each_spectrum():
    tree, seen = odd_tree(), []
    tx = fft_projection(recording_inner(seen), norm="ortho")
    tx.update(tree, tx.init(tree))
    spectra, params = seen[-1]
    assert params is None
    for key in ("cube", "matrix", "vector", "row"):
        expected = torch.view_as_real(torch.fft.rfftn(tree[key], norm="ortho"))
        assert spectra[key].shape == (*tree[key].shape[:-1], tree[key].shape[-1] // 2 + 1, 2)
        torch.testing.assert_close(spectra[key], expected, rtol=0, atol=0)
    for key in ("scalar", "single"):  # single entries pass through, as in torchzero
        assert torch.equal(spectra[key], tree[key])


def test_one_d_fft_transforms_all_leaves_as_one_concatenated_vector():
    tree, seen = odd_tree(), []
    tx = fft_projection(recording_inner(seen), one_d=True)
    tx.update(tree, tx.init(tree))
    vector = torch.cat([leaf.reshape(-1) for leaf in tree.values()])
    assert seen[-1][0].shape == (vector.numel() // 2 + 1, 2)
    torch.testing.assert_close(seen[-1][0], torch.view_as_real(torch.fft.rfft(vector)), rtol=0, atol=0)


def test_the_fft_inner_transform_acts_on_the_spectrum():
    # Doubling the spectrum doubles the update; zeroing all but the mean leaves the mean.
    g = {"w": torch.randn(8, 6, dtype=torch.float64)}
    double = fft_projection(ifn.scale(2.0))
    out, _ = double.update(g, double.init(g))
    torch.testing.assert_close(out["w"], 2 * g["w"], rtol=0, atol=1e-13)

    def keep_mean(spectrum, params):
        return ifn.tree_map(lambda s: torch.zeros_like(s).index_put_((torch.tensor(0),), s[0]), spectrum)

    mean_only = fft_projection(ifn.stateless(keep_mean), one_d=True)
    out, _ = mean_only.update(g, mean_only.init(g))
    torch.testing.assert_close(out["w"], torch.full_like(g["w"], float(g["w"].mean())), rtol=0, atol=1e-13)


@pytest.mark.parametrize(
    ("numel", "max_side", "shape"),
    [(9, 10, (9,)), (10, 10, (10,)), (100, 10, (10, 10)), (101, 10, (5, 5, 5)), (180, 5, (4, 4, 4, 4)), (1000, 10, (10, 10, 10))],
)
def test_tensorized_shape_has_log_max_side_equal_sides(numel, max_side, shape):
    assert tensorized_shape(numel, max_side) == shape


def test_tensorize_projection_concatenates_and_zero_pads_into_one_tensor():
    tree, seen = odd_tree(), []
    tx = tensorize_projection(recording_inner(seen), max_side=5)
    tx.update(tree, tx.init(tree))
    tensor = seen[-1][0]
    numel = sum(leaf.numel() for leaf in tree.values())  # 91 → 3 axes of side 5
    assert tensor.shape == (5, 5, 5)
    flat = tensor.reshape(-1)
    assert torch.equal(flat[:numel], torch.cat([leaf.reshape(-1) for leaf in tree.values()]))
    assert torch.equal(flat[numel:], torch.zeros(125 - numel, dtype=torch.float64))


def test_block_partition_cuts_leaves_larger_than_the_block_like_torch_chunk():
    tree, seen = odd_tree(), []
    tx = block_partition(recording_inner(seen), block_size=8)
    tx.update(tree, tx.init(tree))
    blocks = seen[-1][0]
    assert [b.numel() for b in blocks["cube"]] == [8] * 7 + [4]  # 60 entries, 8 chunks of ⌈60/8⌉
    assert [b.numel() for b in blocks["matrix"]] == [7, 7]  # 14 entries, 2 chunks of 7 (not 8 + 6)
    assert [b.numel() for b in blocks["vector"]] == [5, 4]
    assert torch.equal(blocks["row"], tree["row"])  # 6 ≤ 8: whole, in its own shape
    assert torch.equal(torch.cat(blocks["cube"]), tree["cube"].reshape(-1))


def test_batched_block_partition_stacks_zero_padded_blocks():
    tree, seen = odd_tree(), []
    tx = block_partition(recording_inner(seen), block_size=8, batched=True)
    out, _ = tx.update(tree, tx.init(tree))
    blocks = seen[-1][0]
    assert blocks["cube"].shape == (8, 8)  # 60 entries padded to 64: torchzero fails here
    assert torch.equal(blocks["cube"].reshape(-1)[60:], torch.zeros(4, dtype=torch.float64))
    assert blocks["matrix"].shape == (2, 8)
    assert torch.equal(out["cube"], tree["cube"])


@pytest.mark.parametrize("name", ["tensorize_3d", "tensorize_vector", "blocks", "blocks_batched"])
def test_reshaping_projections_leave_an_elementwise_inner_transform_unchanged(name):
    params = params_of(make_mlp())
    inside = ifn.chain(PROJECTIONS[name](ifn.scale_by_adam()), ifn.scale_by_learning_rate(0.1))
    plain = ifn.chain(ifn.scale_by_adam(), ifn.scale_by_learning_rate(0.1))
    p, q = params, params
    s, t = inside.init(p), plain.init(q)
    for x, y in make_batches(4):
        p, s, _ = ifn.step(inside, s, p, loss_fn_for(make_mlp(), x, y))
        q, t, _ = ifn.step(plain, t, q, loss_fn_for(make_mlp(), x, y))
    for key in p:
        torch.testing.assert_close(p[key], q[key], rtol=0, atol=1e-14)


# ----------------------------------------------------------- parameters and the objective


def test_without_project_params_the_inner_transform_gets_no_parameters_or_objective():
    seen_extra = []

    def record(updates, state, params=None, **extra):
        seen_extra.append((params, sorted(extra)))
        return updates, state

    inner = ifn.GradientTransformation(lambda p: ifn.EmptyState(), record)
    params = params_of(make_mlp())
    tx = fft_projection(inner)
    tx.update(params, tx.init(params), params, loss_fn=lambda p: torch.tensor(0.0), value=torch.tensor(1.0))
    assert seen_extra[-1] == (None, ["value"])
    # torchzero would hand an inner weight decay the projected update as "params"; here it fails loudly.
    with pytest.raises(ValueError, match="add_decayed_weights needs params"):
        decay = fft_projection(ifn.add_decayed_weights(0.1))
        decay.update(params, decay.init(params), params)


@pytest.mark.parametrize("name", NAMES)
def test_with_project_params_an_inner_weight_decay_decays_the_parameters(name):
    params = params_of(make_mlp())
    grads = ifn.tree_map(torch.randn_like, params)
    tx = PROJECTIONS[name](ifn.add_decayed_weights(0.3), project_params=True)
    out, _ = tx.update(grads, tx.init(params), params)
    for key in params:
        torch.testing.assert_close(out[key], grads[key] + 0.3 * params[key], rtol=0, atol=1e-13)


@pytest.mark.parametrize("one_d", [False, True])
def test_the_projected_objective_differentiates_to_the_projected_gradient(one_d):
    model = make_mlp()
    params = params_of(model)
    x, y = make_batches(1)[0]
    loss_fn = loss_fn_for(model, x, y)
    seen = []

    def record(updates, state, params=None, loss_fn=None, **extra):
        seen.append((params, loss_fn))
        return updates, state

    tx = fft_projection(ifn.GradientTransformation(lambda p: ifn.EmptyState(), record), one_d=one_d, project_params=True)
    grads = torch.func.grad(loss_fn)(params)
    tx.update(grads, tx.init(params), params, loss_fn=loss_fn)
    projected_params, objective = seen[-1]
    assert isinstance(objective, ProjectedObjective)
    torch.testing.assert_close(objective(projected_params), loss_fn(params), rtol=0, atol=1e-14)
    # The gradient in the spectral coordinates is the spectrum of the gradient (torchzero's
    # projected closure), the same map that made the incoming update.
    _, projected_grads = ifn.value_and_grad(objective)(projected_params)
    for ours, reference in zip(ifn.tree_leaves(projected_grads), ifn.tree_leaves(_spectrum(grads, one_d))):
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-13)


def _spectrum(tree, one_d):
    seen = []
    tx = fft_projection(recording_inner(seen), one_d=one_d)
    tx.update(tree, tx.init(tree))
    return seen[-1][0]


def test_a_zeroth_order_inner_transform_needs_projected_parameters():
    with pytest.raises(ValueError, match="tensorize_projection: .*project_params=True"):
        tensorize_projection(ifn.zo_gradient(seed=0), 4)
    # Blocks larger than every leaf leave the space as it is: the estimate inside must be
    # the plain one, bit for bit (it probes the objective through the projected loss_fn).
    inside = ifn.chain(block_partition(ifn.zo_gradient(seed=0), 1000, project_params=True), ifn.scale_by_learning_rate(0.1))
    plain = ifn.chain(ifn.zo_gradient(seed=0), ifn.scale_by_learning_rate(0.1))
    assert not inside.needs_gradient
    model = make_mlp()
    p = q = params_of(model)
    s, t = inside.init(p), plain.init(q)
    for x, y in make_batches(3):
        p, s, _ = ifn.step(inside, s, p, loss_fn_for(model, x, y))
        q, t, _ = ifn.step(plain, t, q, loss_fn_for(model, x, y))
    for key in p:
        assert torch.equal(p[key], q[key])
        assert not torch.equal(p[key], params_of(model)[key])


def test_the_adapter_with_closures_equals_the_functional_path_for_a_sam_inner():
    factory = lambda: ifn.chain(  # noqa: E731
        fft_projection(ifn.chain(ifn.sam(0.05), ifn.scale_by_adam()), project_params=True), ifn.scale_by_learning_rate(0.1)
    )
    batches = make_batches(4)
    model, _ = adapter_run(factory, batches)
    params = functional_trained(factory(), batches)
    for key, value in params_of(model).items():
        torch.testing.assert_close(value, params[key], rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- torchzero


def _torchzero():
    return pytest.importorskip("torchzero", reason="reference package torchzero not installed (pip install --no-deps torchzero)")


def run_torchzero(modules, lr=0.1):
    tz = _torchzero()
    return torchzero_trained(make_mlp(), [*modules, tz.m.LR(lr)], regression_batches(), loss=nn.functional.mse_loss)


def run_ours(tx, lr=0.1):
    model = make_mlp()
    tx = ifn.chain(tx, ifn.scale_by_learning_rate(lr))
    params = params_of(model)
    state = tx.init(params)
    for x, y in regression_batches():
        params, state, _ = ifn.step(
            tx, state, params, lambda p, x=x, y=y: nn.functional.mse_loss(functional_call(model, p, (x,)), y)
        )
    return params


def assert_parameters_match(ours, reference, atol=1e-8):
    worst = max((ours[k] - reference[k]).abs().max().item() for k in reference)
    assert worst <= atol, f"max difference {worst:.3g} > {atol:g}"


# torchzero's Adam adds eps to √v before the bias correction (an effective eps/√(1−β₂ᵗ));
# torch and ifn.scale_by_adam add it after. eps = 1e-30 takes that difference out and still
# maps an exactly zero coordinate (the imaginary part of a real frequency) to zero.
TINY_EPS = 1e-30
TORCHZERO_PROJECTIONS = {
    "fft": (lambda inner: fft_projection(inner), lambda x, inner: x.FFTProjection(inner)),
    "fft_one_d": (lambda inner: fft_projection(inner, one_d=True), lambda x, inner: x.FFTProjection(inner, one_d=True)),
    "fft_ortho": (lambda inner: fft_projection(inner, norm="ortho"), lambda x, inner: x.FFTProjection(inner, norm="ortho")),
    "fft_forward": (lambda inner: fft_projection(inner, norm="forward"), lambda x, inner: x.FFTProjection(inner, norm="forward")),
    "tensorize": (lambda inner: tensorize_projection(inner, 5), lambda x, inner: x.TensorizeProjection(inner, max_side=5)),
    "blocks": (lambda inner: block_partition(inner, 10), lambda x, inner: x.BlockPartition(inner, max_size=10)),
    # 16 divides every leaf larger than 16 (96, 64): torchzero's batched layout fails otherwise.
    "blocks_batched": (
        lambda inner: block_partition(inner, 16, batched=True),
        lambda x, inner: x.BlockPartition(inner, max_size=16, batched=True),
    ),
}


@pytest.mark.parametrize("name", list(TORCHZERO_PROJECTIONS))
@pytest.mark.parametrize("inner", ["identity", "adam"])
def test_matches_torchzero_over_ten_steps(name, inner):
    tz = _torchzero()
    ours, theirs = TORCHZERO_PROJECTIONS[name]
    if inner == "identity":
        reference = run_torchzero([theirs(tz.m.experimental, [])])
        result = run_ours(ours(ifn.identity()))
    else:
        reference = run_torchzero([theirs(tz.m.experimental, tz.m.Adam(0.8, 0.95, eps=TINY_EPS))])
        result = run_ours(ours(ifn.scale_by_adam(0.8, 0.95, eps=TINY_EPS)))
    assert_parameters_match(result, reference)  # observed 1.2e-12 (fft_forward), ≤ 1e-15 otherwise


@pytest.mark.parametrize("name", ["fft_one_d", "tensorize"])
def test_matches_torchzero_with_projected_parameters_and_a_sam_inner(name):
    # A single projected leaf: torchzero's SAM normalises each leaf on its own, ifn.sam
    # the whole tree, and the two agree only when there is one leaf.
    tz = _torchzero()
    modules = [tz.m.SAM(0.05), tz.m.Adam(eps=TINY_EPS)]
    inner = ifn.chain(ifn.sam(0.05), ifn.scale_by_adam(eps=TINY_EPS))
    if name == "fft_one_d":
        reference = run_torchzero([tz.m.experimental.FFTProjection(modules, one_d=True, project_params=True)])
        result = run_ours(fft_projection(inner, one_d=True, project_params=True))
    else:
        reference = run_torchzero([tz.m.experimental.TensorizeProjection(modules, max_side=5, project_params=True)])
        result = run_ours(tensorize_projection(inner, 5, project_params=True))
    assert_parameters_match(result, reference)  # observed 1e-16 (fft_one_d), 8e-14 (tensorize)


def test_batched_block_partition_pads_where_torchzero_fails():
    tz = _torchzero()
    with pytest.raises(RuntimeError):
        run_torchzero([tz.m.experimental.BlockPartition(tz.m.Adam(), max_size=10, batched=True)])
    ours = run_ours(block_partition(ifn.scale_by_adam(), 10, batched=True))
    assert_parameters_match(ours, run_ours(ifn.scale_by_adam()), atol=1e-14)


# ----------------------------------------------------------------- properties of transforms


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_members_equals_the_loop(name):
    tx = ifn.chain(PROJECTIONS[name](ifn.scale_by_adam()), ifn.scale_by_learning_rate(0.01))
    assert_vmap_equals_loop(tx, steps=3, loss_for=mse_loss_for, check_state=True)


def test_vmap_equals_the_loop_with_a_projected_objective():
    inner = ifn.chain(ifn.sam(0.05), ifn.scale_by_adam())
    tx = ifn.chain(fft_projection(inner, project_params=True), ifn.scale_by_learning_rate(0.01))
    assert_vmap_equals_loop(tx, steps=2, loss_for=mse_loss_for)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_is_bit_identical(name):
    factory = lambda: ifn.chain(PROJECTIONS[name](ifn.scale_by_adam()), ifn.scale_by_learning_rate(0.01))  # noqa: E731
    assert_resume_is_bit_identical(factory, make_batches(6, seed=3), split=3)


@pytest.mark.parametrize("name", NAMES)
def test_degenerate_gradients_give_finite_updates(name):
    tx = PROJECTIONS[name](ifn.scale_by_adam())
    params = params_of(make_mlp())
    state = tx.init(params)
    ones = ifn.tree_ones_like(params)
    for grads in (ifn.tree_zeros_like(params), ones, ifn.tree_scale(ones, -1.0), ifn.tree_zeros_like(params)):
        updates, state = tx.update(grads, state, params)
        assert bool(ifn.tree_all_finite(updates)), name


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: block_partition(ifn.identity(), 0), "block_partition: block_size must be a positive int, got 0"),
        (lambda: block_partition(ifn.identity(), -3), "block_size must be a positive int"),
        (lambda: block_partition(ifn.identity(), 2.5), "block_size must be a positive int"),
        (lambda: block_partition(ifn.identity(), 4, batched="yes"), "block_partition: batched must be a bool"),
        (lambda: tensorize_projection(ifn.identity(), 1), "tensorize_projection: max_side must be an int >= 2, got 1"),
        (lambda: tensorize_projection(ifn.identity(), math.inf), "max_side must be an int >= 2"),
        (lambda: fft_projection(ifn.identity(), norm="unitary"), "fft_projection: norm must be one of"),
        (lambda: fft_projection(ifn.identity(), one_d=1), "fft_projection: one_d must be a bool"),
        (lambda: fft_projection(ifn.identity(), project_params="yes"), "fft_projection: project_params must be a bool"),
    ],
)
def test_bad_arguments_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_an_inner_that_is_not_a_transform_is_refused():
    with pytest.raises(TypeError, match="fft_projection: inner must be a GradientTransformation"):
        fft_projection(ifn.scale_by_adam)
