"""Bad input gets an error that names the problem."""

from __future__ import annotations

import pytest
import torch

import infty_func as ifn
from infty_func.transforms import schedules


def test_apply_updates_with_a_different_structure_names_both():
    params = {"w": torch.zeros(3), "b": torch.zeros(1)}
    with pytest.raises(ValueError, match="params and updates have different pytree structures"):
        ifn.apply_updates(params, {"w": torch.zeros(3)})


def test_apply_updates_with_a_different_shape_names_the_leaf():
    with pytest.raises(ValueError, match=r"differ in shape at leaf 0: \(3,\) vs \(4,\)"):
        ifn.apply_updates({"w": torch.zeros(3)}, {"w": torch.zeros(4)})


def test_schedule_returning_a_non_scalar_is_refused():
    tx = ifn.sgd(lambda count: torch.ones(2) * 0.1)
    params = {"w": torch.zeros(2)}
    state = tx.init(params)
    with pytest.raises(ValueError, match="schedule must return a scalar, got a tensor of shape \\(2,\\)"):
        tx.update({"w": torch.ones(2)}, state, params)


def test_loss_fn_needed_but_not_given_names_the_transform():
    def needs_loss_fn():
        def update_fn(updates, state, params=None, loss_fn=None, **extra):
            if loss_fn is None:
                raise ValueError("needs_loss_fn needs loss_fn; pass loss_fn=... to update or use ifn.step")
            return updates, state

        return ifn.GradientTransformation(lambda p: ifn.EmptyState(), update_fn)

    with pytest.raises(ValueError, match="needs_loss_fn needs loss_fn"):
        needs_loss_fn().update({"w": torch.ones(1)}, ifn.EmptyState(), {"w": torch.ones(1)})


def test_non_finite_update_is_skipped_and_counted_parameters_unchanged():
    tx = ifn.apply_if_finite(ifn.adam(0.1))
    params = {"w": torch.ones(3)}
    state = tx.init(params)
    updates, state = tx.update({"w": torch.tensor([1.0, 2.0, 3.0])}, state, params)
    params = ifn.apply_updates(params, updates)
    inner_before = state.inner_state
    updates, state = tx.update({"w": torch.tensor([1.0, float("nan"), 3.0])}, state, params)
    assert torch.equal(ifn.apply_updates(params, updates)["w"], params["w"])
    assert int(state.total_notfinite) == 1 and int(state.notfinite_count) == 1
    assert not bool(state.last_finite)
    for before, after in zip(ifn.tree_leaves(inner_before), ifn.tree_leaves(state.inner_state)):
        assert torch.equal(before, after)
    updates, state = tx.update({"w": torch.ones(3)}, state, params)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 1
    assert bool(ifn.tree_all_finite(updates)) and updates["w"].abs().sum() > 0


def test_chain_of_an_uncalled_factory_says_so():
    with pytest.raises(TypeError, match="did you forget to call it"):
        ifn.chain(ifn.sgd)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: ifn.scale_by_adam(b1=1.0), "b1 must be in"),
        (lambda: ifn.sgd(-1.0), "lr must be >= 0"),
        (lambda: ifn.sgd(0.1, nesterov=True), "nesterov momentum needs momentum"),
        (lambda: ifn.clip_by_global_norm(0.0), "max_norm must be > 0"),
        (lambda: ifn.multi_steps(ifn.sgd(0.1), 0), "every_k must be an int >= 1"),
        (lambda: schedules.join([schedules.constant(1.0)], [3]), "one more schedule than boundaries"),
    ],
)
def test_bad_hyperparameters_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_partition_with_an_unknown_label_lists_the_known_ones():
    tx = ifn.partition({"a": ifn.sgd(0.1)}, {"w": "b"})
    with pytest.raises(ValueError, match=r"labels \['b'\] name no transform; known: \['a'\]"):
        tx.init({"w": torch.zeros(1)})


def test_value_and_grad_of_several_losses_points_to_jacobian():
    with pytest.raises(ValueError, match="use ifn.jacobian"):
        ifn.value_and_grad(lambda p: p["w"] ** 2)({"w": torch.ones(2)})
