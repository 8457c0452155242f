"""Functional random keys: pure, reproducible, per-member under vmap."""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

from infty_func import random


@pytest.mark.parametrize("sampler", [random.normal, random.uniform, random.rademacher])
def test_same_key_gives_the_same_bits(sampler):
    k = random.key(7)
    assert torch.equal(sampler(k, (1001,)), sampler(k, (1001,)))


@pytest.mark.parametrize("sampler", [random.normal, random.uniform, random.rademacher])
def test_different_keys_give_different_noise(sampler):
    a = sampler(random.key(1), (1000,))
    b = sampler(random.key(2), (1000,))
    c = sampler(random.next_key(random.key(1)), (1000,))
    assert not torch.equal(a, b) and not torch.equal(a, c)
    assert (a != b).float().mean() > 0.4


@pytest.mark.parametrize("sampler", [random.normal, random.uniform, random.rademacher])
def test_vmapped_keys_equal_each_key_alone(sampler):
    keys = random.split(random.key(3), 5)
    batched = vmap(lambda k: sampler(k, (17, 3)))(keys)
    for i in range(5):
        assert torch.equal(batched[i], sampler(keys[i], (17, 3)))


def test_split_keys_are_distinct_and_deterministic():
    keys = random.split(random.key(0), 8)
    assert keys.shape == (8, 2)
    assert len({tuple(k.tolist()) for k in keys}) == 8
    assert torch.equal(keys, random.split(random.key(0), 8))


def test_fold_in_depends_on_the_data():
    k = random.key(0)
    assert not torch.equal(random.fold_in(k, 1), random.fold_in(k, 2))
    assert torch.equal(random.fold_in(k, 1), random.fold_in(k, 1))


def test_normal_moments_and_independence_between_keys():
    z = random.normal(random.key(11), (200_000,), torch.float64)
    assert abs(z.mean().item()) < 0.01
    assert abs(z.var().item() - 1.0) < 0.01
    assert abs((z**4).mean().item() - 3.0) < 0.05  # Gaussian kurtosis
    w = random.normal(random.key(12), (200_000,), torch.float64)
    assert abs((z * w).mean().item()) < 0.01


def test_uniform_is_in_the_open_unit_interval():
    u = random.uniform(random.key(0), (100_000,))
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01


def test_rademacher_is_balanced_signs():
    r = random.rademacher(random.key(0), (100_000,))
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    assert abs(r.mean().item()) < 0.02


def test_normal_like_gives_each_leaf_its_own_stream():
    tree = {"a": torch.zeros(50), "b": torch.zeros(50)}
    noise = random.normal_like(random.key(0), tree)
    assert noise["a"].shape == (50,) and not torch.equal(noise["a"], noise["b"])


def test_a_malformed_key_is_refused():
    with pytest.raises(ValueError, match="int64 tensor of shape \\[2\\]"):
        random.normal(torch.tensor([1.0, 2.0]), (3,))


def test_noise_reads_no_global_state():
    torch.manual_seed(0)
    a = random.normal(random.key(5), (10,))
    torch.manual_seed(1)
    torch.randn(100)
    assert torch.equal(a, random.normal(random.key(5), (10,)))


@pytest.mark.parametrize("n", [2**18 * 2 + 3, 2**19 + 2**18])
def test_large_draws_are_chunked_without_changing_a_value(n):
    """Plain keys generate in cache-sized chunks; vmapped keys in one pass: same numbers."""
    k = random.key(5)
    chunked = random.normal(k, (n,), torch.float64)
    whole = torch.func.vmap(lambda kk: random.normal(kk, (n,), torch.float64))(k.unsqueeze(0))[0]
    assert torch.equal(chunked, whole)
    target = torch.ones(n, dtype=torch.float64)
    random.add_normal_(target, k, -0.25)
    torch.testing.assert_close(target, 1.0 - 0.25 * chunked, rtol=0, atol=1e-15)


def test_half_precision_noise_is_finite_and_computed_in_float32():
    k = random.key(1)
    for dtype in (torch.float16, torch.bfloat16):
        z = random.normal(k, (100_000,), dtype)
        assert z.dtype == dtype and torch.isfinite(z).all()
        torch.testing.assert_close(z.float(), random.normal(k, (100_000,), torch.float32).to(dtype).float())


def test_a_stream_refuses_indices_beyond_int32_instead_of_repeating():
    with pytest.raises(ValueError, match="holds 2\\*\\*31 numbers"):
        random.normal_slice(random.key(0), 2**31, 2**31 + 4)


def test_reseed_leaves_parameters_named_key_alone():
    import infty_func as ifn

    state = ifn.looksam().init({"attn": {"key": torch.zeros(4, 4)}})
    stacked = random.reseed(state, [1, 2])
    assert stacked.orthogonal["attn"]["key"].shape == (2, 4, 4)
    assert stacked.count.shape == (2,)
