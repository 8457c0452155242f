"""``scale_by_adam`` runs torch's fused Adam kernel wherever it can (plain CPU tensors, and
the stacked tensors under vmap) and its elementwise formula elsewhere; both give Adam."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

import infty_func as ifn
from tests.conftest import make_batches, make_mlp, params_of


def _problem(dtype=torch.float64, steps=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    params = {
        "w": torch.randn(5, 3, generator=generator, dtype=dtype),
        "scalar": torch.randn((), generator=generator, dtype=dtype),
        "b": torch.randn(7, generator=generator, dtype=dtype),
    }
    grads = [
        {k: torch.randn(v.shape, generator=generator, dtype=dtype) for k, v in params.items()}
        for _ in range(steps)
    ]
    return params, grads


def _run(tx, params, grads, tracked=False):
    """The directions and final state over ``grads``; ``tracked`` hands in grads that
    record autograd history, which keeps the update on its differentiable path."""
    state = tx.init(params)
    directions = []
    for g in grads:
        if tracked:
            g = {k: v.clone().requires_grad_() for k, v in g.items()}
        out, state = tx.update(g, state, params)
        directions.append({k: v.detach() for k, v in out.items()})
    return directions, state


def _assert_trees_close(a, b, rtol=1e-14, atol=1e-15):
    for left, right in zip(ifn.tree_leaves(a), ifn.tree_leaves(b)):
        torch.testing.assert_close(left.detach(), right.detach(), rtol=rtol, atol=atol)


def test_plain_cpu_tensors_take_one_fused_kernel_call(fused_calls):
    params, grads = _problem()
    _run(ifn.scale_by_adam(), params, grads[:1])
    assert fused_calls == [3]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_kernel_equals_the_elementwise_formula(amsgrad, fused_calls):
    params, grads = _problem()
    fused, fused_state = _run(ifn.scale_by_adam(amsgrad=amsgrad), params, grads)
    count = len(fused_calls)
    formula, formula_state = _run(ifn.scale_by_adam(amsgrad=amsgrad), params, grads, tracked=True)
    assert count == len(grads) and len(fused_calls) == count  # the tracked run never fused
    _assert_trees_close(fused, formula)
    _assert_trees_close(fused_state, formula_state)


def test_non_contiguous_gradients_are_read_in_their_logical_order():
    # The kernel indexes memory linearly, so a transposed gradient must be made contiguous.
    params, grads = _problem()
    transposed = [{**g, "w": g["w"].t().contiguous().t()} for g in grads]
    assert not transposed[0]["w"].is_contiguous()
    expected, _ = _run(ifn.scale_by_adam(), params, grads)
    got, _ = _run(ifn.scale_by_adam(), params, transposed)
    for a, b in zip(expected, got):
        for key in a:
            assert torch.equal(a[key], b[key])


def test_the_update_stays_differentiable_when_the_gradients_record_history():
    params, grads = _problem(steps=1)
    g = {k: v.clone().requires_grad_() for k, v in grads[0].items()}
    tx = ifn.scale_by_adam()
    out, _ = tx.update(g, tx.init(params), params)
    (sensitivity,) = torch.autograd.grad(out["w"].sum(), g["w"])
    assert torch.isfinite(sensitivity).all() and sensitivity.abs().sum() > 0


def test_mixed_dtypes_fall_back_to_the_foreach_formula(fused_calls):
    params, grads = _problem()
    mixed_params = {**params, "b": params["b"].float()}
    mixed_grads = [{**g, "b": g["b"].float()} for g in grads]
    mixed, _ = _run(ifn.scale_by_adam(), mixed_params, mixed_grads)
    assert fused_calls == []
    same, _ = _run(ifn.scale_by_adam(), params, grads)
    for a, b in zip(mixed, same):
        torch.testing.assert_close(a["w"], b["w"], rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(a["b"], b["b"].float(), rtol=1e-5, atol=1e-6)


def test_bfloat16_leaves_are_computed_in_float32_by_the_kernel():
    params, grads = _problem(dtype=torch.float32)
    reference, _ = _run(ifn.scale_by_adam(), params, grads)
    low = {k: v.bfloat16() for k, v in params.items()}
    got, _ = _run(ifn.scale_by_adam(), low, [{k: v.bfloat16() for k, v in g.items()} for g in grads])
    for a, b in zip(got, reference):
        for key in a:
            assert a[key].dtype == torch.bfloat16
            torch.testing.assert_close(a[key].float(), b[key], rtol=0.05, atol=0.05)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_vmapped_members_at_different_steps_equal_each_member_alone(amsgrad, fused_calls):
    members = 3
    tx = ifn.scale_by_adam(amsgrad=amsgrad)
    generator = torch.Generator().manual_seed(3)
    params = {"w": torch.randn(members, 4, 2, generator=generator, dtype=torch.float64)}
    grads = {"w": torch.randn(members, 4, 2, generator=generator, dtype=torch.float64)}
    moments = torch.rand(members, 4, 2, generator=generator, dtype=torch.float64)
    counts = torch.tensor([0, 3, 70])
    state = vmap(tx.init)(params)._replace(count=counts, mu={"w": moments - 0.5}, nu={"w": moments})
    if amsgrad:
        state = state._replace(nu_max={"w": 2 * moments})
    out, new_state = vmap(tx.update)(grads, state, params)
    assert fused_calls == [members]  # one kernel call, one row per member
    for m in range(members):
        alone = ifn.tree_map(lambda x, m=m: x[m], state)
        out_m, state_m = tx.update({"w": grads["w"][m]}, alone, {"w": params["w"][m]})
        assert torch.equal(out["w"][m], out_m["w"])
        for stacked, single in zip(ifn.tree_leaves(new_state), ifn.tree_leaves(state_m)):
            assert torch.equal(stacked[m], single)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("counts", [None, [0, 3, 70]], ids=["same step", "different steps"])
def test_vmapped_owned_gradients_take_the_direction_with_each_members_bits(amsgrad, counts, adamw_kernel_calls):
    members = 3
    tx = ifn.scale_by_adam(amsgrad=amsgrad)
    generator = torch.Generator().manual_seed(7)
    shapes = {"w": (4, 64), "odd": (3, 5)}
    params = {k: torch.randn(members, *s, generator=generator) for k, s in shapes.items()}
    state = vmap(tx.init)(params)
    if counts is not None:
        state = state._replace(count=torch.tensor(counts))
    looped = [ifn.tree_map(lambda x, m=m: x[m].clone(), state) for m in range(members)]
    for _ in range(3):
        grads = {k: torch.randn(members, *s, generator=generator) for k, s in shapes.items()}
        stacked = {k: v.clone() for k, v in grads.items()}
        out, state = vmap(lambda g, s: ifn.update_in_place(tx, g, s, owned=True)[:2])(stacked, state)
        assert [v.data_ptr() for v in out.values()] == [v.data_ptr() for v in stacked.values()]
        for m in range(members):
            alone, looped[m] = tx.update({k: v[m] for k, v in grads.items()}, looped[m])
            for key in shapes:
                assert torch.equal(out[key][m], alone[key]), key
            for stacked_leaf, single in zip(ifn.tree_leaves(state), ifn.tree_leaves(looped[m])):
                assert torch.equal(stacked_leaf[m], single)
    assert adamw_kernel_calls  # the direction went into the gradients, not through a zero buffer


def test_vmap_over_a_trailing_axis_equals_vmap_over_the_leading_one():
    tx = ifn.scale_by_adam()
    generator = torch.Generator().manual_seed(4)
    params = {"w": torch.randn(3, 4, 2, generator=generator)}
    grads = {"w": torch.randn(3, 4, 2, generator=generator)}
    state = vmap(tx.init)(params)
    leading, _ = vmap(tx.update)(grads, state, params)
    trailing, _ = vmap(tx.update, in_dims=({"w": 2}, 0, {"w": 2}))(
        {"w": grads["w"].permute(1, 2, 0)}, state, {"w": params["w"].permute(1, 2, 0)}
    )
    assert torch.equal(leading["w"], trailing["w"])


def test_float32_adam_follows_torch_fused_adam():
    model = make_mlp(dtype=torch.float32)
    reference = make_mlp(dtype=torch.float32)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2, fused=True)
    tx = ifn.adam(1e-2)
    params = params_of(model)
    state = tx.init(params)
    for x, y in make_batches(30, dtype=torch.float32):
        loss = torch.nn.functional.cross_entropy(reference(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        grads = {n: p.grad.detach() for n, p in reference.named_parameters()}
        updates, state = tx.update(grads, state, params)
        params = ifn.apply_updates(params, updates)
        # Same gradients each step (taken at torch's iterate), so only the update's
        # rounding differs: torch folds lr into the kernel, we scale afterwards.
        for name, p in reference.named_parameters():
            torch.testing.assert_close(params[name], p.detach(), rtol=1e-5, atol=1e-6)
            params[name] = p.detach().clone()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_members_in_step_run_whole_where_that_keeps_each_members_bits(dtype, fused_calls):
    # Leaves whose members hold a multiple of 64 elements run as one tensor; the 3×5 leaf,
    # whose ragged end the kernel rounds in scalar code, runs member by member.
    members = 3
    tx = ifn.scale_by_adam()
    generator = torch.Generator().manual_seed(6)
    shapes = {"w": (4, 64), "b": (128,), "odd": (3, 5)}
    params = {k: torch.randn(members, *s, generator=generator, dtype=dtype) for k, s in shapes.items()}
    state = vmap(tx.init)(params)
    looped = [tx.init({k: v[m] for k, v in params.items()}) for m in range(members)]
    for _ in range(4):
        grads = {k: torch.randn(members, *s, generator=generator, dtype=dtype) for k, s in shapes.items()}
        out, state = vmap(tx.update)(grads, state, params)
        for m in range(members):
            alone, looped[m] = tx.update({k: v[m] for k, v in grads.items()}, looped[m], None)
            for key in shapes:
                assert torch.equal(out[key][m], alone[key]), key
    assert fused_calls[0] == 2 + members  # w and b whole, odd by member


def test_an_update_of_another_shape_than_the_state_is_refused():
    # The fused kernel would index the moments by the gradient's size, past their end.
    tx = ifn.scale_by_adam()
    state = tx.init({"w": torch.zeros(64)})
    with pytest.raises(ValueError, match=r"update leaf 0 has shape \(3, 64\) but the state was made for \(64,\)"):
        tx.update({"w": torch.randn(3, 64)}, state)
    with pytest.raises(ValueError, match="2 leaves but the state was made for 1"):
        tx.update({"w": torch.randn(64), "b": torch.randn(1)}, state)


def test_several_losses_through_adam_are_refused_before_any_kernel_runs(fused_calls):
    tx = ifn.adam(1e-2)
    params = {"w": torch.randn(4)}
    with pytest.raises(ValueError, match="Jacobian"):
        ifn.step(tx, tx.init(params), params, lambda p: torch.stack([p["w"].sum(), (p["w"] ** 2).sum()]), donate=True)
    assert not fused_calls
