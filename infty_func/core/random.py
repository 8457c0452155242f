"""Functional, vmappable random numbers: noise is a pure function of a key.

torch has no public functional PRNG: a ``torch.Generator`` cannot be seeded per member
inside ``torch.func.vmap``, and ``vmap(randomness="different")`` draws from one global
stream. Here a key is an int64 tensor ``[stream, counter]``. Noise for element ``i`` is a
counter-based hash of ``(key, i)`` written in int32 tensor ops, so

* the same key gives the same bits, inside or outside vmap, on every call;
* each vmapped member may carry its own key and gets its own noise;
* nothing global is read or written.

The element hash is two rounds of Wellons' ``lowbias32`` integer mixer (keyed before each
round); the key words come from a SplitMix64 finaliser of ``(stream, counter)``. Normals
use both outputs of the Box–Muller transform, with 24-bit uniforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from infty_func.core.tree import PyTree, is_functorch_wrapped, tree_flatten, tree_unflatten

__all__ = [
    "key",
    "split",
    "fold_in",
    "next_key",
    "bits",
    "uniform",
    "normal",
    "rademacher",
    "bernoulli",
    "normal_like",
    "rademacher_like",
    "reseed",
    "add_normal_",
    "normal_slice",
    "uniform_slice",
]

_MASK32 = 0xFFFFFFFF


def _signed64(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    return value - (1 << 64) if value >= (1 << 63) else value


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= (1 << 31) else value


_GOLDEN64 = _signed64(0x9E3779B97F4A7C15)
_MIX64_A = _signed64(0xBF58476D1CE4E5B9)
_MIX64_B = _signed64(0x94D049BB133111EB)
_MIX32_A = _signed32(0x7FEB352D)
_MIX32_B = _signed32(0x846CA68B)


def _shr64(x: Tensor, shift: int) -> Tensor:
    """Logical right shift of int64 bits (torch's ``>>`` is arithmetic)."""
    return (x >> shift) & ((1 << (64 - shift)) - 1)


def _mix64(z: Tensor) -> Tensor:
    """The SplitMix64 finaliser on int64 tensors (wrapping arithmetic)."""
    z = (z ^ _shr64(z, 30)) * _MIX64_A
    z = (z ^ _shr64(z, 27)) * _MIX64_B
    return z ^ _shr64(z, 31)


def _to_int32(z: Tensor) -> Tensor:
    """The low 32 bits of an int64 tensor, as int32 with the same bits."""
    low = z & _MASK32
    return torch.where(low >= (1 << 31), low - (1 << 32), low).to(torch.int32)


def key(seed: int | Tensor) -> Tensor:
    """A new key for ``seed``: the int64 tensor ``[seed, 0]``."""
    if isinstance(seed, Tensor):
        return torch.stack([seed.to(torch.int64), torch.zeros_like(seed, dtype=torch.int64)])
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.tensor([seed, 0], dtype=torch.int64)


def _check_key(k: Tensor) -> None:
    if not isinstance(k, Tensor) or k.dtype != torch.int64 or k.shape != (2,):
        shape = tuple(k.shape) if isinstance(k, Tensor) else type(k).__name__
        raise ValueError(
            f"a key is an int64 tensor of shape [2] made by ifn.random.key(seed), got {shape}"
        )


def _digest(k: Tensor) -> Tensor:
    """One well-mixed int64 word from ``[stream, counter]``."""
    return _mix64(_mix64(k[0]) + k[1] * _GOLDEN64)


# The same arithmetic on Python integers, for plain CPU keys: a key's handful of words cost
# a few microseconds this way instead of a dozen tiny tensor ops (which dominated drawing
# noise for small parameter leaves). Results are bit-identical to the tensor path.
_U64 = (1 << 64) - 1


def _mix64_int(z: int) -> int:
    z &= _U64
    z = ((z ^ (z >> 30)) * (_MIX64_A & _U64)) & _U64
    z = ((z ^ (z >> 27)) * (_MIX64_B & _U64)) & _U64
    return z ^ (z >> 31)


def _host_key(k: Tensor) -> tuple[int, int] | None:
    """``(stream, counter)`` as Python ints for a plain CPU key; ``None`` otherwise."""
    if is_functorch_wrapped(k) or k.device.type != "cpu":
        return None
    stream, counter = k.tolist()
    return stream, counter


def _digest_int(stream: int, counter: int) -> int:
    return _mix64_int(_mix64_int(stream) + (counter & _U64) * (_GOLDEN64 & _U64))


def next_key(k: Tensor) -> Tensor:
    """The key that follows ``k`` (its counter advanced by one)."""
    _check_key(k)
    return k + torch.tensor([0, 1], dtype=torch.int64, device=k.device)


def split(k: Tensor, num: int = 2) -> Tensor:
    """``num`` independent keys derived from ``k``, as an int64 tensor ``[num, 2]``."""
    _check_key(k)
    index = torch.arange(1, num + 1, dtype=torch.int64, device=k.device)
    streams = _mix64(_digest(k) + index * _GOLDEN64)
    return torch.stack([streams, torch.zeros_like(streams)], dim=-1)


def fold_in(k: Tensor, data: int | Tensor) -> Tensor:
    """A new key that depends on ``k`` and the integer ``data``."""
    _check_key(k)
    host = _host_key(k)
    if host is not None and (isinstance(data, int) or (isinstance(data, Tensor) and not is_functorch_wrapped(data))):
        value = int(data)
        stream = _mix64_int(_digest_int(*host) ^ _mix64_int(value + (_GOLDEN64 & _U64)))
        return torch.tensor([_signed64(stream), 0], dtype=torch.int64)
    data = torch.as_tensor(data, dtype=torch.int64, device=k.device)
    stream = _mix64(_digest(k) ^ _mix64(data + _GOLDEN64))
    return torch.stack([stream, torch.zeros_like(stream)])


def _lowbias32(x: Tensor, inplace: bool) -> Tensor:
    """Wellons' lowbias32 mixer on int32 bits; logical shifts by masking."""
    if inplace:
        x.bitwise_xor_((x >> 16) & 0xFFFF).mul_(_MIX32_A)
        x.bitwise_xor_((x >> 15) & 0x1FFFF).mul_(_MIX32_B)
        return x.bitwise_xor_((x >> 16) & 0xFFFF)
    x = (x ^ ((x >> 16) & 0xFFFF)) * _MIX32_A
    x = (x ^ ((x >> 15) & 0x1FFFF)) * _MIX32_B
    return x ^ ((x >> 16) & 0xFFFF)


def _words(k: Tensor) -> tuple[Tensor | int, Tensor | int]:
    """The two 32-bit words that key the element hash (Python ints for plain CPU keys)."""
    host = _host_key(k)
    if host is not None:
        digest = _digest_int(*host)
        return _signed32(digest & _MASK32), _signed32((digest >> 32) & _MASK32)
    digest = _digest(k)
    return _to_int32(digest), _to_int32(_shr64(digest, 32))


def _hash_indices(word_a: Tensor | int, word_b: Tensor | int, x: Tensor) -> Tensor:
    """The words for the int32 element indices ``x`` (hashed in place when the key words
    are plain)."""
    # In-place ops save passes, but cannot write a wrapped (vmapped) operand into x.
    if not (is_functorch_wrapped(word_a) or is_functorch_wrapped(word_b)):
        x.bitwise_xor_(word_a)
        _lowbias32(x, True).add_(word_b)
        return _lowbias32(x, True)
    x = _lowbias32(x ^ word_a, False) + word_b
    return _lowbias32(x, False)


def _hash_range(word_a: Tensor | int, word_b: Tensor | int, start: int, count: int, device) -> Tensor:
    """The words for element indices ``start .. start + count - 1``."""
    return _hash_indices(word_a, word_b, torch.arange(start, start + count, dtype=torch.int32, device=device))


def bits(k: Tensor, n: int, device: torch.device | str | None = None) -> Tensor:
    """``n`` pseudo-random 32-bit words (int32) for key ``k``."""
    _check_key(k)
    if n >= (1 << 31):
        raise ValueError(
            f"one key draws at most 2**31 - 1 numbers, asked for {n}; fold_in a per-leaf index"
        )
    word_a, word_b = _words(k)
    return _hash_range(word_a, word_b, 0, n, device or k.device)


def _working(dtype: torch.dtype) -> torch.dtype:
    """The dtype noise is computed in: float32 for the half-precision types (their range
    and resolution cannot hold 24-bit uniforms), the requested one otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _unit_uniform(words: Tensor, dtype: torch.dtype, consume: bool = False) -> Tensor:
    """Uniforms in the open interval (0, 1) from the top 24 bits of each word
    (``consume``: ``words`` is a temporary that may be overwritten), computed in float32
    for the half-precision types."""
    dtype = _working(dtype)
    if is_functorch_wrapped(words):
        return (((words >> 8) & 0xFFFFFF).to(dtype) + 0.5) * (2.0**-24)
    top = words.bitwise_right_shift_(8) if consume else words >> 8
    return top.bitwise_and_(0xFFFFFF).to(dtype).add_(0.5).mul_(2.0**-24)


def uniform(
    k: Tensor,
    shape: Sequence[int] | torch.Size = (),
    dtype: torch.dtype = torch.float32,
    low: float = 0.0,
    high: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform numbers in ``(low, high)`` (24-bit resolution; computed in float32 for the
    half-precision types, whose rounding can then reach the ends of the interval)."""
    shape = torch.Size(shape)
    u = _unit_uniform(bits(k, shape.numel(), device), dtype)
    if low != 0.0 or high != 1.0:
        u = u * (high - low) + low
    return u.to(dtype).reshape(shape)


# Element 2p and 2p + 1 of a normal stream are the two Box–Muller outputs of pair p, whose
# uniforms are the stream's words 2p (radius) and 2p + 1 (angle). So element j depends on
# j alone, any slice costs what it contains, and large draws go in chunks of pairs, every
# intermediate in cache and no full-size temporary. Chunking does not change any value.
# Measured on the 2-core machine, 10M float32 normals: 2.7x torch.randn in whole-array
# passes; 1.2x in chunks of 2**16 pairs, 1.6x in chunks of 2**15, 2.2x in chunks of 2**14.
# Whole draws (`normal`) use the fast size; slices and in-place additions, which the
# memory-efficient zeroth-order paths make leaf by leaf, use the smaller one: with it the
# in-place ZO step on a 50M-parameter model peaks at 83 MB above idle instead of 87.
_CHUNK = 1 << 16
_LEAN_CHUNK = 1 << 15


def _pair_outputs(word_a, word_b, p0: int, p1: int, dtype: torch.dtype, device) -> Tensor:
    """Elements ``2·p0 .. 2·p1 - 1`` of the stream (pairs ``p0 .. p1 - 1``), flat."""
    x = torch.arange(2 * p0, 2 * p1, dtype=torch.int32, device=device)
    u = _unit_uniform(_hash_indices(word_a, word_b, x), dtype, consume=True)
    if is_functorch_wrapped(u):
        pairs = u.reshape(-1, 2)
        radius = (-2.0 * pairs[:, 0].log()).sqrt()
        angle = pairs[:, 1] * (2.0 * math.pi)
        return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1).reshape(-1)
    pairs = u.view(-1, 2)
    radius, angle = pairs[:, 0], pairs[:, 1]
    radius.log_().mul_(-2.0).sqrt_()
    cosine = torch.cos(angle.mul_(2.0 * math.pi))
    angle.sin_().mul_(radius)  # element 2p + 1: r sin θ
    radius.mul_(cosine)  # element 2p: r cos θ
    return u


def _check_range(stop: int) -> None:
    """Element indices are int32: a stream has 2**31 elements, and beyond them it would
    silently repeat."""
    if stop > (1 << 31):
        raise ValueError(
            f"one key's stream holds 2**31 numbers, asked for index {stop - 1}; fold_in a per-leaf or per-block index"
        )


def _normal_chunks(k: Tensor, start: int, stop: int, dtype: torch.dtype, device, chunk: int):
    """Elements ``start .. stop - 1`` of the normal stream of ``k``, at most ``chunk`` pairs
    at a time: ``(offset, values)`` with ``values`` (in the working dtype) standing at
    ``offset ..`` of the requested range."""
    word_a, word_b = _words(k)
    first_pair, end_pair = start // 2, (stop + 1) // 2
    skip = start - 2 * first_pair  # 1 when start is odd: the first pair's cosine is not wanted
    for p0 in range(first_pair, end_pair, chunk):
        values = _pair_outputs(word_a, word_b, p0, min(p0 + chunk, end_pair), dtype, device)
        lo = 2 * (p0 - first_pair) - skip  # may be -1
        cut = max(0, -lo)
        yield lo + cut, values[cut : min(stop - start, lo + values.shape[0]) - lo]


def _normal_flat(k: Tensor, start: int, stop: int, dtype: torch.dtype, device, chunk: int = _CHUNK) -> Tensor:
    """Elements ``start .. stop - 1`` of the normal stream of ``k``."""
    _check_key(k)
    _check_range(stop)
    if is_functorch_wrapped(k):
        first_pair, end_pair = start // 2, (stop + 1) // 2
        skip = start - 2 * first_pair
        values = _pair_outputs(*_words(k), first_pair, end_pair, dtype, device)[skip : skip + (stop - start)]
        return values.to(dtype)
    out = torch.empty(stop - start, dtype=_working(dtype), device=device)
    for offset, values in _normal_chunks(k, start, stop, dtype, device, chunk):
        out[offset : offset + values.shape[0]] = values
    return out.to(dtype)


def normal(
    k: Tensor,
    shape: Sequence[int] | torch.Size = (),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal numbers (Box–Muller, both outputs used)."""
    shape = torch.Size(shape)
    return _normal_flat(k, 0, shape.numel(), dtype, device or k.device).reshape(shape)


def normal_slice(k: Tensor, start: int, stop: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Elements ``start .. stop - 1`` of ``normal(k, (n,))`` for any ``n >= stop``, bit for
    bit, computed without the rest (a leaf of a direction drawn over all parameters)."""
    if not 0 <= start <= stop:
        raise ValueError(f"normal_slice needs 0 <= start <= stop, got {start}, {stop}")
    return _normal_flat(k, start, stop, dtype, device or k.device, _LEAN_CHUNK)


def add_normal_(tensor: Tensor, k: Tensor, alpha: float = 1.0, start: int = 0) -> Tensor:
    """``tensor += alpha · z`` in place, chunk by chunk, without a tensor-sized temporary
    (an in-place zeroth-order perturbation), where ``z`` is the elements ``start ..`` of the
    normal stream of ``k`` (``normal(k, tensor.shape)`` for ``start = 0``)."""
    _check_key(k)
    if not tensor.is_contiguous():  # no flat view: add a materialised slice instead
        values = normal_slice(k, start, start + tensor.numel(), tensor.dtype, tensor.device)
        return tensor.add_(values.reshape(tensor.shape), alpha=alpha)
    _check_range(start + tensor.numel())
    flat = tensor.view(-1)
    for offset, values in _normal_chunks(k, start, start + flat.shape[0], tensor.dtype, tensor.device, _LEAN_CHUNK):
        flat[offset : offset + values.shape[0]].add_(values.to(tensor.dtype), alpha=alpha)
    return tensor


def uniform_slice(k: Tensor, start: int, stop: int, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """Elements ``start .. stop - 1`` of ``uniform(k, (n,))`` for any ``n >= stop``."""
    _check_key(k)
    _check_range(stop)
    word_a, word_b = _words(k)
    return _unit_uniform(_hash_range(word_a, word_b, start, stop - start, device or k.device), dtype)


def rademacher(
    k: Tensor,
    shape: Sequence[int] | torch.Size = (),
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Independent signs ``±1`` with equal probability."""
    shape = torch.Size(shape)
    words = bits(k, shape.numel(), device)
    return torch.where(words < 0, -1.0, 1.0).to(dtype).reshape(shape)


def bernoulli(
    k: Tensor,
    p: float | Tensor,
    shape: Sequence[int] | torch.Size = (),
    device: torch.device | str | None = None,
) -> Tensor:
    """Booleans that are True with probability ``p``."""
    shape = torch.Size(shape)
    return (uniform(k, shape, torch.float32, device=device) < p).reshape(shape)


def _like(sampler, k: Tensor, tree: PyTree) -> PyTree:
    leaves, spec = tree_flatten(tree)
    out = [
        sampler(fold_in(k, index), leaf.shape, leaf.dtype, leaf.device)
        for index, leaf in enumerate(leaves)
    ]
    return tree_unflatten(out, spec)


def normal_like(k: Tensor, tree: PyTree) -> PyTree:
    """Standard normal noise shaped like each leaf of ``tree`` (a stream per leaf)."""
    return _like(normal, k, tree)


def rademacher_like(k: Tensor, tree: PyTree) -> PyTree:
    """Rademacher signs shaped like each leaf of ``tree`` (a stream per leaf)."""
    return _like(rademacher, k, tree)


def reseed(state, seeds: Sequence[int]):
    """``state`` stacked ``len(seeds)`` times on a new leading axis, each member's random
    keys restarted from its seed: vmap a training step over the result and each member
    draws its own stream.

    Keys are the NamedTuple fields named ``key`` (every keyed transform stores one); dict
    entries are parameter names and are left alone. The first key
    found becomes ``key(seed)``, so a single keyed transform reseeded with ``seeds``
    matches building it with each seed; a further key ``j`` becomes
    ``fold_in(key(seed), j)``, so several keyed members keep distinct streams.
    """
    seeds = [int(seed) for seed in seeds]
    if not seeds:
        raise ValueError("reseed needs at least one seed")
    members = len(seeds)
    found = [0]

    def fresh_keys():
        index = found[0]
        found[0] += 1
        starts = [key(seed) for seed in seeds]
        return torch.stack(starts if index == 0 else [fold_in(k, index) for k in starts])

    def stacked(leaf):
        if not isinstance(leaf, Tensor):
            return leaf
        return leaf.unsqueeze(0).expand(members, *leaf.shape).clone()

    def rebuild(node):
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return type(node)(**{
                name: (fresh_keys() if name == "key" and isinstance(child, Tensor) else rebuild(child))
                for name, child in zip(node._fields, node)
            })
        if isinstance(node, dict):  # dict keys are user names (parameters), never random keys
            return {name: rebuild(child) for name, child in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(rebuild(child) for child in node)
        return stacked(node)

    return rebuild(state)
