"""Threefry-2x32 random bits, unrolled so that XLA fuses them into one vectorised loop.

The rejection sampler spends nearly all its time on random bits (128 Bernoulli vectors per class
per round). `jax.random.bits` lowers Threefry-2x32 (Salmon et al., SC 2011) to an XLA while loop
over its five 4-round blocks, materialising every intermediate array; on CPU that is about five
times slower than the same 20 rounds written out. `threefry_bits` is bit-for-bit
`jax.random.bits(jax.random.wrap_key_data(key_data), shape)` for a threefry key with
partitionable counters (tested); `stream_seed` seeds it from any JAX key.
"""

import math

import jax
import jax.numpy as jnp

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA


def _rotl(x: jax.Array, d: int) -> jax.Array:
    return (x << jnp.uint32(d)) | (x >> jnp.uint32(32 - d))


def threefry2x32(
    k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block cipher, 20 rounds, on uint32 counter pairs (x0, x1)."""
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
    return x0, x1


def threefry_bits_at(key_data: jax.Array, counters: jax.Array) -> jax.Array:
    """uint32 random bits at the given uint32 counters (any shape) of the stream `key_data`."""
    x0, x1 = threefry2x32(key_data[0], key_data[1], jnp.zeros_like(counters), counters)
    return x0 ^ x1


def threefry_bits(key_data: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 random bits of `shape` from raw threefry key data [2] (uint32).

    Equals `jax.random.bits` with `jax_threefry_partitionable` (the default): element i (in
    row-major order) is x0 ^ x1 of the cipher applied to the 64-bit counter i split into (high,
    low) words. Rows of it can be regenerated alone with `threefry_bits_at`.
    """
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"threefry_bits supports fewer than 2^32 elements, got {size}.")
    return threefry_bits_at(key_data, jax.lax.iota(jnp.uint32, size)).reshape(shape)


def stream_seed(key: jax.Array) -> jax.Array:
    """Two uint32 words drawn from any JAX key: the key data of a Threefry stream."""
    return jax.random.bits(key, (2,), jnp.uint32)


def bernoulli_thresholds(pi: jax.Array) -> jax.Array:
    """uint32 thresholds T with P(bits < T) = floor(pi 2^32) / 2^32, within 2^-32 of pi."""
    scaled = jnp.minimum(jnp.clip(pi, 0.0, 1.0) * 2.0**32, 4294967040.0)  # largest f32 < 2^32
    return scaled.astype(jnp.uint32)
