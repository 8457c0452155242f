"""``update_in_place`` and ``step(donate=True)`` reuse memory and change no bit: they give
exactly what ``update`` and ``step`` give, and never write what the caller still owns."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch.func import stack_module_state, vmap

import infty_func as ifn
from tests.conftest import loss_fn_for, make_batches, make_mlp, params_of
from tests.transforms.catalogue import NAMES, build


def _copy(tree):
    return ifn.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, tree)


def _assert_identical(a, b):
    leaves_a, leaves_b = ifn.tree_leaves(a), ifn.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for left, right in zip(leaves_a, leaves_b):
        assert torch.equal(left, right)


def _gradient_sequence(params, steps=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [ifn.tree_map(lambda p: torch.randn(p.shape, generator=generator, dtype=p.dtype), params) for _ in range(steps)]


@pytest.mark.parametrize("owned", [False, True], ids=["borrowed updates", "owned updates"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", NAMES)
def test_update_in_place_equals_update_and_leaves_the_callers_tensors_alone(name, dtype, owned):
    # Owned updates may be overwritten (they get a copy here); borrowed ones, never.
    tx = build(name)
    params = params_of(make_mlp(dtype=dtype))
    functional_state = tx.init(params)
    owned_state = tx.init(params)
    for grads in _gradient_sequence(params):
        kept_grads, kept_params = _copy(grads), _copy(params)
        expected, functional_state = tx.update(grads, functional_state, params)
        handed = _copy(grads) if owned else grads
        got, owned_state, _ = ifn.update_in_place(tx, handed, owned_state, params, owned=owned)
        _assert_identical(got, expected)
        _assert_identical(owned_state, functional_state)
        _assert_identical(grads, kept_grads)
        _assert_identical(params, kept_params)
        params = ifn.apply_updates(params, expected)


@pytest.mark.parametrize("factory", [ifn.scale_by_adam, lambda: ifn.adam(1e-2), lambda: ifn.adam(1e-2, amsgrad=True)])
def test_adam_writes_its_direction_into_owned_gradients(factory):
    tx = factory()
    params = params_of(make_mlp(dtype=torch.float32))
    functional_state, owned_state = tx.init(params), tx.init(params)
    for grads in _gradient_sequence(params):
        expected, functional_state = tx.update(grads, functional_state, params)
        mine = _copy(grads)
        got, owned_state, owned = ifn.update_in_place(tx, mine, owned_state, params, owned=True)
        assert owned
        assert [g.data_ptr() for g in mine.values()] == [u.data_ptr() for u in got.values()]
        _assert_identical(got, expected)
        _assert_identical(owned_state, functional_state)


def test_identity_passes_ownership_through():
    updates = {"w": torch.ones(3)}
    for owned in (False, True):
        out, _, flag = ifn.update_in_place(ifn.identity(), updates, ifn.EmptyState(), owned=owned)
        assert out is updates and flag is owned


def test_adam_overwrites_its_own_moments():
    tx = ifn.adam(1e-2)
    params = params_of(make_mlp())
    state = tx.init(params)
    addresses = [leaf.data_ptr() for leaf in ifn.tree_leaves(ifn.tree_get(state, "mu"))]
    for grads in _gradient_sequence(params):
        _, state, owned = ifn.update_in_place(tx, grads, state, params)
        assert owned
    assert [leaf.data_ptr() for leaf in ifn.tree_leaves(ifn.tree_get(state, "mu"))] == addresses


def test_the_learning_rate_scales_owned_updates_in_place_and_copies_others():
    tx = ifn.scale_by_learning_rate(0.5)
    updates = {"w": torch.ones(3)}
    out, _, owned = ifn.update_in_place(tx, updates, tx.init(None), owned=False)
    assert owned and torch.equal(updates["w"], torch.ones(3)) and torch.equal(out["w"], torch.full((3,), -0.5))
    out, _, owned = ifn.update_in_place(tx, updates, tx.init(None), owned=True)
    assert owned and out["w"] is updates["w"] and torch.equal(updates["w"], torch.full((3,), -0.5))


def test_an_expanded_owned_update_is_scaled_into_a_new_tensor():
    # Writing an expanded tensor would write one element many times.
    tx = ifn.scale_by_learning_rate(0.5)
    updates = {"w": torch.ones(1).expand(3)}
    out, _, _ = ifn.update_in_place(tx, updates, tx.init(None), owned=True)
    assert torch.equal(out["w"], torch.full((3,), -0.5)) and torch.equal(updates["w"], torch.ones(3))


@pytest.mark.parametrize("nested", [False, True])
def test_a_chain_never_scales_a_momentum_buffer_in_place(nested):
    # trace returns its buffer as the update: a later in-place learning rate would scale
    # the momentum itself, unless the chain knows the buffer is not the caller's.
    inner = ifn.chain(ifn.scale_by_adam(), ifn.trace(0.9))
    tx = ifn.chain(inner, ifn.scale_by_learning_rate(0.1)) if nested else ifn.chain(
        ifn.scale_by_adam(), ifn.trace(0.9), ifn.scale_by_learning_rate(0.1)
    )
    params = params_of(make_mlp())
    functional_state, owned_state = tx.init(params), tx.init(params)
    for grads in _gradient_sequence(params, steps=5):
        expected, functional_state = tx.update(grads, functional_state, params)
        got, owned_state, _ = ifn.update_in_place(tx, grads, owned_state, params)
        _assert_identical(got, expected)
        _assert_identical(owned_state, functional_state)


def test_named_chain_passes_ownership_through():
    tx = ifn.named_chain(("adam", ifn.scale_by_adam()), ("lr", ifn.scale_by_learning_rate(0.1)))
    params = params_of(make_mlp())
    functional_state, owned_state = tx.init(params), tx.init(params)
    for grads in _gradient_sequence(params):
        expected, functional_state = tx.update(grads, functional_state, params)
        got, owned_state, owned = ifn.update_in_place(tx, grads, owned_state, params)
        assert owned and set(owned_state) == {"adam", "lr"}
        _assert_identical(got, expected)
        _assert_identical(owned_state, functional_state)


@pytest.mark.parametrize("name", NAMES)
def test_a_donated_step_equals_a_pure_step(name):
    tx = build(name)
    model = make_mlp()
    pure_params, donated_params = params_of(model), params_of(model)
    pure_state, donated_state = tx.init(pure_params), tx.init(donated_params)
    for x, y in make_batches(4):
        loss_fn = loss_fn_for(model, x, y)
        pure_params, pure_state, _ = ifn.step(tx, pure_state, pure_params, loss_fn)
        donated_params, donated_state, _ = ifn.step(tx, donated_state, donated_params, loss_fn, donate=True)
        _assert_identical(donated_params, pure_params)
        _assert_identical(donated_state, pure_state)


def test_a_donated_adam_step_writes_into_the_donated_params():
    tx = ifn.adam(1e-2)
    model = make_mlp()
    params = params_of(model)
    state = tx.init(params)
    addresses = [p.data_ptr() for p in params.values()]
    for x, y in make_batches(3):
        params, state, _ = ifn.step(tx, state, params, loss_fn_for(model, x, y), donate=True)
    assert [p.data_ptr() for p in params.values()] == addresses


@pytest.mark.parametrize("factory", [lambda: ifn.adam(1e-2), lambda: ifn.adamw(1e-2), lambda: ifn.sgd(0.1, momentum=0.9)])
def test_a_donated_vmapped_step_equals_a_pure_vmapped_step_and_reuses_the_stacked_memory(factory):
    tx = factory()
    models = [make_mlp(seed) for seed in range(3)]
    stacked, _ = stack_module_state(models)
    xs = torch.stack([torch.stack([x for x, _ in make_batches(3, seed=s)]) for s in range(3)], dim=1)
    ys = torch.stack([torch.stack([y for _, y in make_batches(3, seed=s)]) for s in range(3)], dim=1)

    def run(donate):
        params = {k: v.detach().clone() for k, v in stacked.items()}
        state = vmap(tx.init)(params)
        addresses = [p.data_ptr() for p in params.values()]

        def train_step(p, s, x, y):
            return ifn.step(tx, s, p, loss_fn_for(models[0], x, y), donate=donate)[:2]

        for t in range(xs.shape[0]):
            params, state = vmap(train_step)(params, state, xs[t], ys[t])
        return params, state, addresses == [p.data_ptr() for p in params.values()]

    pure_params, pure_state, _ = run(False)
    donated_params, donated_state, reused = run(True)
    _assert_identical(donated_params, pure_params)
    _assert_identical(donated_state, pure_state)
    assert reused


class _AnchorState(NamedTuple):
    anchor: dict


def _pull_to_anchor() -> ifn.GradientTransformation:
    """Keeps the first params it sees, as they are (no copy), and adds a pull back to them."""

    def init_fn(params):
        return _AnchorState(params)

    def update_fn(updates, state, params=None, **extra):
        del extra
        pull = ifn.tree_scale(ifn.tree_sub(state.anchor, params), 0.1)
        return ifn.tree_add(updates, pull), state

    return ifn.GradientTransformation(init_fn, update_fn)


def test_donation_never_writes_params_that_the_state_keeps():
    tx = ifn.chain(ifn.sgd(0.1), _pull_to_anchor())
    model = make_mlp()
    pure_params, donated_params = params_of(model), params_of(model)
    pure_state, donated_state = tx.init(pure_params), tx.init(donated_params)
    initial = params_of(model)
    for x, y in make_batches(3):
        loss_fn = loss_fn_for(model, x, y)
        pure_params, pure_state, _ = ifn.step(tx, pure_state, pure_params, loss_fn)
        donated_params, donated_state, _ = ifn.step(tx, donated_state, donated_params, loss_fn, donate=True)
    _assert_identical(donated_params, pure_params)
    _assert_identical(donated_state[1].anchor, initial)


def test_an_expanded_gradient_survives_a_donated_step():
    # The gradient of a sum is an expanded tensor of ones: it must never be written.
    params = {"w": torch.zeros(4, dtype=torch.float64)}
    tx = ifn.sgd(0.5)
    state = tx.init(params)
    params, state, _ = ifn.step(tx, state, params, lambda p: p["w"].sum(), donate=True)
    assert torch.equal(params["w"], torch.full((4,), -0.5, dtype=torch.float64))


class _OwnGradients:
    """A loss whose gradient the caller supplies and keeps (``value_and_grad``)."""

    def __init__(self, grads):
        self.grads = grads

    def __call__(self, params):
        return sum((p * g).sum() for p, g in zip(params.values(), self.grads.values()))

    def value_and_grad(self, params):
        return self(params), self.grads


def test_a_donated_step_never_writes_gradients_that_loss_fn_supplies():
    params = params_of(make_mlp(dtype=torch.float32))
    grads = _gradient_sequence(params, steps=1)[0]
    kept = _copy(grads)
    tx = ifn.adam(1e-2)
    donated, _, _ = ifn.step(tx, tx.init(_copy(params)), _copy(params), _OwnGradients(grads), donate=True, reuse_gradients=True)
    pure, _, _ = ifn.step(tx, tx.init(params), params, _OwnGradients(grads))
    _assert_identical(grads, kept)
    _assert_identical(donated, pure)


class _GradientIsTheInput(torch.autograd.Function):
    """``x·x/2`` summed, whose backward hands back the input itself (the gradient, ``x``)."""

    @staticmethod
    def forward(x):
        return (x * x).sum() / 2

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return x.detach()  # the param's own memory


def test_a_gradient_that_shares_the_params_memory_is_not_overwritten():
    params = {"w": torch.linspace(-1.0, 1.0, 8)}
    tx = ifn.adam(0.1)
    loss_fn = lambda p: _GradientIsTheInput.apply(p["w"])  # noqa: E731
    pure, _, _ = ifn.step(tx, tx.init(params), params, loss_fn)
    donated, _, _ = ifn.step(tx, tx.init(params), _copy(params), loss_fn, donate=True, reuse_gradients=True)
    _assert_identical(donated, pure)
    assert not torch.equal(pure["w"], params["w"])


def _donated_and_pure(tx, params, loss_fn, steps=3, reuse_gradients=True):
    pure, donated = _copy(params), _copy(params)
    pure_state, donated_state = tx.init(pure), tx.init(donated)
    for _ in range(steps):
        pure, pure_state, _ = ifn.step(tx, pure_state, pure, loss_fn)
        donated, donated_state, _ = ifn.step(
            tx, donated_state, donated, loss_fn, donate=True, reuse_gradients=reuse_gradients
        )
    _assert_identical(donated, pure)
    _assert_identical(donated_state, pure_state)


@pytest.mark.parametrize("reuse_gradients", [False, True])
def test_adam_writes_its_direction_into_the_gradients_only_when_the_step_may_reuse_them(reuse_gradients, adamw_kernel_calls):
    model = make_mlp(dtype=torch.float32)
    (x, y), = make_batches(1, dtype=torch.float32)
    _donated_and_pure(ifn.adam(1e-2), params_of(model), loss_fn_for(model, x, y), reuse_gradients=reuse_gradients)
    assert len(adamw_kernel_calls) == (3 if reuse_gradients else 0)  # the reusing steps only


def test_reusing_gradients_needs_donation():
    params = {"w": torch.ones(3)}
    tx = ifn.adam(0.1)
    with pytest.raises(ValueError, match="reuse_gradients=True\\) needs donate=True"):
        ifn.step(tx, tx.init(params), params, lambda p: p["w"].sum(), reuse_gradients=True)


def test_a_vmapped_step_that_reuses_gradients_writes_adams_direction_into_them(adamw_kernel_calls):
    tx = ifn.adam(1e-2)
    models = [make_mlp(seed, dtype=torch.float32) for seed in range(3)]
    stacked, _ = stack_module_state(models)
    params = {k: v.detach().clone() for k, v in stacked.items()}
    x, y = torch.randn(3, 12, 6), torch.randint(0, 4, (3, 12))
    train_step = lambda p, s, x, y: ifn.step(tx, s, p, loss_fn_for(models[0], x, y), donate=True, reuse_gradients=True)[:2]  # noqa: E731
    vmap(train_step)(params, vmap(tx.init)(params), x, y)
    assert adamw_kernel_calls


@pytest.mark.parametrize("keep", ["the gradient", "a view of it"])
def test_a_gradient_a_tensor_hook_keeps_survives_a_donated_step(keep, adamw_kernel_calls):
    seen = []
    x = torch.randn(5, 3)

    def loss_fn(p):
        w = p["w"]
        w.register_hook(lambda g: seen.append(g if keep == "the gradient" else g.view(-1)))
        return ((x @ w.T) ** 2).mean()

    params = {"w": torch.randn(4, 3)}
    tx = ifn.adam(1e-2)
    ifn.step(tx, tx.init(params), _copy(params), loss_fn, donate=True, reuse_gradients=True)
    kept = seen[-1].clone()
    ifn.step(tx, tx.init(params), _copy(params), loss_fn)
    assert torch.equal(seen[0], kept) and torch.equal(seen[0].reshape(-1), seen[1].reshape(-1))
    assert not adamw_kernel_calls


def test_a_gradient_that_views_what_a_hook_keeps_survives_a_donated_step():
    # w is used through a view: its gradient is a view of the view's gradient, which the
    # hook keeps.
    seen = []
    c = torch.randn(4, 3)

    def loss_fn(p):
        v = p["w"].view(4, 3)
        v.register_hook(seen.append)
        return (torch.tanh(v) * c).sum()

    params = {"w": torch.randn(12)}
    tx = ifn.adam(1e-2)
    ifn.step(tx, tx.init(params), _copy(params), loss_fn, donate=True, reuse_gradients=True)
    kept = seen[-1].clone()
    ifn.step(tx, tx.init(params), _copy(params), loss_fn)
    assert torch.equal(seen[0], kept) and torch.equal(seen[0], seen[1])


def test_an_activation_gradient_a_hook_keeps_survives_a_donated_step():
    # A param added to an activation without broadcasting gets the activation's gradient
    # tensor itself as its gradient.
    params = {"pos": torch.randn(6, 4), "w": torch.randn(4, 4)}
    tokens, target = torch.randn(6, 4), torch.randn(6, 4)
    seen = []

    def loss_fn(p):
        h = tokens @ p["w"] + p["pos"]
        h.register_hook(seen.append)
        return ((torch.tanh(h) - target) ** 2).sum()

    tx = ifn.adam(1e-2)
    ifn.step(tx, tx.init(params), _copy(params), loss_fn, donate=True, reuse_gradients=True)
    kept = seen[-1].clone()
    ifn.step(tx, tx.init(params), _copy(params), loss_fn)
    assert torch.equal(seen[0], kept) and torch.equal(seen[0], seen[1])
    _donated_and_pure(tx, params, loss_fn)


def test_a_gradient_a_hook_keeps_under_vmap_survives_a_donated_step():
    x = torch.randn(3, 5, 2)
    tx = ifn.adam(1e-2)

    def logged_gradients(donate):
        def train_step(p, s, x):
            seen = []

            def loss_fn(q):
                q["w"].register_hook(seen.append)
                return ((x @ q["w"].T) ** 2).mean()

            ifn.step(tx, s, p, loss_fn, donate=donate, reuse_gradients=donate)
            return seen[-1] * 1.0  # read after the step

        params = {"w": torch.linspace(-1.0, 1.0, 24).reshape(3, 4, 2)}
        return vmap(train_step)(params, vmap(tx.init)(params), x)

    assert torch.equal(logged_gradients(True), logged_gradients(False))


class _GradientIsAStateTensor(torch.autograd.Function):
    """``<x, c>``, whose backward hands back ``c`` itself, here a tensor of the state."""

    @staticmethod
    def forward(x, c):
        return (x * c).sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.c = inputs[1]

    @staticmethod
    def backward(ctx, grad_output):
        return ctx.c, None


def test_a_gradient_that_is_a_state_tensor_is_not_overwritten():
    tx = ifn.adam(0.1)
    params = {"w": torch.linspace(-1.0, 1.0, 8)}
    state = tx.init(params)
    state = ifn.tree_map(lambda x: x + 0.5 if x.is_floating_point() else x, state)
    second_moment = ifn.tree_leaves(ifn.tree_get(state, "nu"))[0]
    loss_fn = lambda p: _GradientIsAStateTensor.apply(p["w"], second_moment)  # noqa: E731
    pure, pure_state, _ = ifn.step(tx, _copy(state), params, loss_fn)
    donated, donated_state, _ = ifn.step(tx, state, _copy(params), loss_fn, donate=True, reuse_gradients=True)
    _assert_identical(donated, pure)
    _assert_identical(donated_state, pure_state)
    assert not torch.equal(pure["w"], params["w"])


def _hooked_through_a_view(keep):
    """A loss whose param ``w`` is used through a view, so that its gradient is a view of
    the gradient ``keep`` sees in a hook."""
    c = torch.linspace(-1.0, 1.0, 12).reshape(4, 3)

    def loss_fn(p):
        v = p["w"].view(4, 3)
        v.register_hook(keep)
        return (torch.tanh(v) * c).sum()

    return loss_fn


@pytest.mark.parametrize("holder", ["the storage object", "the .grad of another tensor", "a NumPy array"])
def test_a_gradient_something_holds_without_a_python_reference_survives(holder, adamw_kernel_calls):
    import numpy as np

    kept = []
    sink = torch.zeros(4, 3, requires_grad=True)

    def keep(g):
        if holder == "the storage object":
            kept.append(g.untyped_storage())
        elif holder == "the .grad of another tensor":
            sink.grad = g
        else:
            kept.append(np.from_dlpack(g))

    def snapshot():
        if holder == "the storage object":
            return torch.tensor([]).set_(kept[-1]).clone()
        return sink.grad.clone() if holder == "the .grad of another tensor" else torch.from_numpy(kept[-1].copy())

    params = {"w": torch.linspace(-1.0, 1.0, 12)}
    tx = ifn.adam(1e-2)
    ifn.step(tx, tx.init(params), _copy(params), _hooked_through_a_view(keep))
    expected = snapshot()
    ifn.step(tx, tx.init(params), _copy(params), _hooked_through_a_view(keep), donate=True, reuse_gradients=True)
    assert torch.equal(snapshot(), expected)
    assert not adamw_kernel_calls


class _NumpyGradient(torch.autograd.Function):
    """``Σ wᵢ²/2`` evaluated in NumPy; the gradient reaches torch without a copy and the
    objective keeps it (as a NumPy model logging its last gradient would)."""

    last = None

    @staticmethod
    def forward(ctx, w):
        _NumpyGradient.last = w.detach().numpy().copy()
        return torch.tensor(float((_NumpyGradient.last**2).sum() / 2), dtype=w.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return torch.from_numpy(_NumpyGradient.last)


def test_a_gradient_in_memory_torch_did_not_allocate_is_not_overwritten(adamw_kernel_calls):
    params = {"w": torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)}
    tx = ifn.adam(0.1)
    ifn.step(tx, tx.init(params), _copy(params), lambda p: _NumpyGradient.apply(p["w"]), donate=True, reuse_gradients=True)
    assert torch.equal(torch.from_numpy(_NumpyGradient.last), params["w"])
    assert not adamw_kernel_calls


class _Tempered(dict):
    """Weights plus a temperature kept as an attribute: a dict whose pytree has one leaf
    more than its items."""

    def __init__(self, weights, temperature):
        super().__init__(weights)
        self.temperature = temperature


torch.utils._pytree.register_pytree_node(
    _Tempered,
    lambda t: ([*t.values(), t.temperature], list(t)),
    lambda leaves, keys: _Tempered(dict(zip(keys, leaves[:-1])), leaves[-1]),
)


class _KeepTemperature(NamedTuple):
    temperature: torch.Tensor


def test_donation_sees_the_leaves_of_a_registered_dict_subclass():
    keep = ifn.GradientTransformation(lambda p: _KeepTemperature(p.temperature), lambda u, s, p=None, **e: (u, s))
    tx = ifn.chain(ifn.sgd(0.1), keep)
    params = _Tempered({"w": torch.tensor([1.0, -2.0])}, torch.tensor([0.5]))
    state = tx.init(params)
    loss_fn = lambda p: (p["w"] ** 2).sum() * p.temperature.sum()  # noqa: E731
    new_params, new_state, _ = ifn.step(tx, state, params, loss_fn, donate=True)
    assert torch.equal(new_state[1].temperature, torch.tensor([0.5]))
    assert not torch.equal(new_params.temperature, torch.tensor([0.5]))


def test_owned_gradients_that_are_one_tensor_get_a_buffer_of_their_own():
    # The gradient of a + b is one tensor for both: writing a's direction into it would
    # change b's gradient before b's turn.
    tx = ifn.adam(0.1)
    params = {"a": torch.tensor([0.2, -0.9, 1.9]), "b": torch.tensor([0.0, 0.6, -0.8])}
    shared = torch.tensor([0.3, -0.2, 0.7])
    expected, _ = tx.update({"a": shared, "b": shared}, tx.init(params), params)
    got, _, _ = ifn.update_in_place(tx, {"a": shared, "b": shared}, tx.init(params), params, owned=True)
    _assert_identical(got, expected)


def test_only_zeros_may_change_sign_when_adam_writes_into_the_gradients():
    # g² overflows float32 for g = ±1e30: v is inf and the direction is a zero, +0 from
    # the zero buffer, and -0 (a negative gradient times 0) when written into g.
    tx = ifn.scale_by_adam()
    grads = {"w": torch.tensor([1e30, -1e30, 0.5, -0.5, 0.0, -0.0, 3e-3, -7.0])}
    expected, expected_state = tx.update(grads, tx.init(grads))
    got, state, _ = ifn.update_in_place(tx, _copy(grads), tx.init(grads), owned=True)
    _assert_identical(got, expected)
    _assert_identical(state, expected_state)
    differs = got["w"].view(torch.int32) != expected["w"].view(torch.int32)
    assert differs.any() and bool((got["w"][differs] == 0).all())
    assert torch.equal(got["w"][differs].signbit(), torch.ones_like(differs[differs]))


def test_the_adapter_equals_the_functional_path_bit_for_bit_in_float32():
    model = make_mlp(dtype=torch.float32)
    batches = make_batches(10, dtype=torch.float32)
    opt = ifn.optim.TransformOptimizer(model.named_parameters(), ifn.adam(1e-2, amsgrad=True))
    functional_model = make_mlp(dtype=torch.float32)
    tx = ifn.adam(1e-2, amsgrad=True)
    params = params_of(functional_model)
    state = tx.init(params)
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        params, state, _ = ifn.step(tx, state, params, loss_fn_for(functional_model, x, y))
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), params[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_scalar_parameters_get_the_pure_bits_and_dtypes(dtype):
    # A 0-d leaf times the float64 learning rate is float64 in the pure path (both are 0-d).
    generator = torch.Generator().manual_seed(5)
    start = {"s": torch.randn((), generator=generator).to(dtype), "w": torch.randn(3, generator=generator).to(dtype)}
    tx = ifn.adam(0.1)

    def loss_fn(p):
        return (3.7 * p["s"].float()) ** 2 + (p["w"].float() ** 2).sum()

    pure, donated = _copy(start), _copy(start)
    pure_state, donated_state = tx.init(pure), tx.init(donated)
    for _ in range(20):
        expected, _ = tx.update(ifn.value_and_grad(loss_fn)(pure)[1], _copy(pure_state), pure)
        got, _, _ = ifn.update_in_place(tx, ifn.value_and_grad(loss_fn)(pure)[1], _copy(pure_state), pure)
        assert got["s"].dtype == expected["s"].dtype
        _assert_identical(got, expected)
        pure, pure_state, _ = ifn.step(tx, pure_state, pure, loss_fn)
        donated, donated_state, _ = ifn.step(tx, donated_state, donated, loss_fn, donate=True)
        _assert_identical(donated, pure)
        _assert_identical(donated_state, pure_state)


def test_the_adapter_gives_a_scalar_parameter_the_functional_bits():
    scalar = torch.nn.Parameter(torch.tensor(0.0851257592))
    opt = ifn.optim.TransformOptimizer([scalar], ifn.adam(0.1))
    tx = ifn.adam(0.1)
    params = {"0": scalar.detach().clone()}
    state = tx.init(params)
    for _ in range(20):
        opt.zero_grad()
        ((3.7 * scalar) ** 2).backward()
        opt.step()
        params, state, _ = ifn.step(tx, state, params, lambda p: (3.7 * p["0"]) ** 2)
        assert torch.equal(scalar.detach(), params["0"])


def test_tied_and_overlapping_parameters_are_not_updated_in_place():
    tied = torch.ones(3, dtype=torch.float64)
    buffer = torch.zeros(6, dtype=torch.float64)
    cases = {
        "tied": {"a": tied, "b": tied},
        "overlapping": {"a": buffer[0:4], "b": buffer[2:6]},
    }
    for name, donated in cases.items():
        pure = {k: v.clone() for k, v in donated.items()}
        tx = ifn.sgd(0.05)

        def loss_fn(p):
            return (2 * p["a"]).sum() + (3 * p["b"]).sum()

        expected, _, _ = ifn.step(tx, tx.init(pure), pure, loss_fn)
        got, _, _ = ifn.step(tx, tx.init(donated), donated, loss_fn, donate=True)
        _assert_identical(got, expected)
        assert torch.equal(tied, torch.ones(3, dtype=torch.float64)), name
        assert torch.equal(buffer, torch.zeros(6, dtype=torch.float64)), name


def test_a_loss_that_is_a_view_of_a_parameter_keeps_its_value():
    params = {"x": torch.tensor([3.0, 1.0], dtype=torch.float64)}
    tx = ifn.sgd(0.5)
    _, _, value = ifn.step(tx, tx.init(params), params, lambda p: p["x"][0], donate=True)
    assert value.item() == 3.0


def test_tree_scale_in_place_writes_only_what_it_safely_can():
    plain = {"w": torch.ones(3), "b": torch.ones(2)}
    out = ifn.tree_scale(plain, 2.0, in_place=True)
    assert out["w"] is plain["w"] and torch.equal(plain["w"], torch.full((3,), 2.0))
    shared = torch.ones(3)
    out = ifn.tree_scale({"a": shared, "b": shared}, 2.0, in_place=True)
    assert torch.equal(shared, torch.ones(3)) and torch.equal(out["a"], torch.full((3,), 2.0))
    scalar = {"s": torch.tensor(1.5)}
    out = ifn.tree_scale(scalar, torch.tensor(2.0, dtype=torch.float64), in_place=True)
    assert out["s"].dtype == torch.float64 and scalar["s"].item() == 1.5


def test_apply_updates_in_place_writes_the_params_it_may_and_copies_the_rest():
    params = {"w": torch.zeros(3)}
    out = ifn.apply_updates(params, {"w": torch.ones(3)}, in_place=True)
    assert out["w"] is params["w"] and torch.equal(params["w"], torch.ones(3))
    tracked = {"w": torch.zeros(3, requires_grad=True)}
    out = ifn.apply_updates(tracked, {"w": torch.ones(3)}, in_place=True)
    assert out["w"] is not tracked["w"] and torch.equal(tracked["w"].detach(), torch.zeros(3))


class _Box:
    """A pytree node that is neither a dict, a list nor a tuple."""

    def __init__(self, inner):
        self.inner = inner


torch.utils._pytree.register_pytree_node(_Box, lambda box: ([box.inner], None), lambda leaves, _: _Box(leaves[0]))


def test_the_donation_checks_see_every_tensor_of_a_pytree():
    import importlib

    tensors_of = importlib.import_module("infty_func.core.step")._tensors
    params = params_of(make_mlp())
    tx = ifn.named_chain(("clip", ifn.clip_by_global_norm(1.0)), ("adam", ifn.adam(1e-2, amsgrad=True)))
    trees = [params, tx.init(params), (params, [torch.ones(2), None, 3, "x"]), _Box({"a": _Box(torch.zeros(1))})]
    for tree in trees:
        leaves = [x for x in ifn.tree_leaves(tree) if isinstance(x, torch.Tensor)]
        found = tensors_of(tree)
        assert leaves and {id(x) for x in leaves} == {id(x) for x in found}
