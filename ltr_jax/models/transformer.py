"""Layers shared by the transformer encoders (ViT / DeiT and Swin).

Parameter names follow the timm modules of the same job (``qkv``, ``proj``, ``fc1``, ``fc2``,
``norm1``, ...) so that a timm or Hugging Face state dict maps onto them by name
(:mod:`ltr_jax.models.pretrained`). Linear layers and LayerNorms compute in the encoder's
dtype with float32 parameters; LayerNorm statistics are computed in float32.

Randomness: stochastic depth and dropout draw from the encoder's ``step_key`` (a
:class:`StepKey` variable that the training step sets, see :mod:`ltr_jax.models.modes`), so
no RNG state is carried between steps; ``deterministic=True`` (set by ``modes.eval_view``)
switches both off.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TRUNC_NORMAL = nnx.initializers.truncated_normal(0.02)  # timm's init of weights and tokens


class StepKey(nnx.Variable):
    """The raw uint32[2] key of the current training step's dropout and stochastic depth."""


def new_step_key() -> StepKey:
    return StepKey(jnp.zeros((2,), jnp.uint32))


class StochasticEncoder(nnx.Module):
    """Base of encoders with dropout / stochastic depth: ``nnx.view(deterministic=...)``."""

    deterministic: bool = False

    def set_view(self, deterministic: bool | None = None) -> None:
        """Called by ``nnx.view`` (``models.modes.eval_view``): True switches randomness off."""
        if deterministic is not None:
            self.deterministic = deterministic


def linear(cin: int, cout: int, dtype: Any, rngs: nnx.Rngs, use_bias: bool = True) -> nnx.Linear:
    """A Linear layer with timm's ViT init (truncated normal 0.02, zero bias)."""
    return nnx.Linear(
        cin, cout, use_bias=use_bias, kernel_init=TRUNC_NORMAL, dtype=dtype, rngs=rngs
    )


def layer_norm(dim: int, eps: float, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """A LayerNorm whose variance is the two-pass mean of (x - mean)^2, as PyTorch's.

    Flax's default one-pass E[x^2] - E[x]^2 (``use_fast_variance``) loses about
    log10(mean^2 / variance) digits in float32: on tokens of mean 300 and spread 0.05 its
    outputs are off by over 100, the two-pass ones by under 1e-3 (tests/test_models.py).
    """
    return nnx.LayerNorm(dim, epsilon=eps, dtype=dtype, use_fast_variance=False, rngs=rngs)


def dropout(x: jax.Array, rate: float, key: jax.Array, deterministic: bool) -> jax.Array:
    """Inverted dropout of single elements."""
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(jax.random.wrap_key_data(key), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def drop_path(x: jax.Array, rate: float, key: jax.Array, deterministic: bool) -> jax.Array:
    """Stochastic depth (Huang et al. 2016): drops a residual branch per example."""
    if deterministic or rate == 0.0:
        return x
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = jax.random.bernoulli(jax.random.wrap_key_data(key), 1.0 - rate, shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def fold(key: jax.Array, *data: int) -> jax.Array:
    """``fold_in`` on a raw uint32[2] key, returning a raw key."""
    k = jax.random.wrap_key_data(key)
    for d in data:
        k = jax.random.fold_in(k, d)
    return jax.random.key_data(k)


def attention_implementation(q: jax.Array, bias: jax.Array | None) -> str | None:
    """``cudnn`` (fused flash attention) where it applies, else None (XLA's plain formula).

    cuDNN is used on GPU for bfloat16 / float16 attention without a bias (ViT / DeiT) and head
    dimensions that are multiples of 8 up to 128; Swin's biased window attention stays on XLA.
    ``jax.nn.dot_product_attention`` itself defaults to XLA.
    """
    head_dim = q.shape[-1]
    fused = (
        jax.default_backend() == "gpu"
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and bias is None
        and head_dim % 8 == 0
        and head_dim <= 128
    )
    return "cudnn" if fused else None


def attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None):
    """Softmax attention over [B, T, H, hd] inputs with ``jax.nn.dot_product_attention``.

    The scale is 1 / sqrt(hd) as in the original papers; ``bias`` broadcasts to [B, H, T, T]
    and is added to the logits. See :func:`attention_implementation` for the kernel.
    """
    if bias is not None:
        bias = bias.astype(q.dtype)
    impl = attention_implementation(q, bias)
    return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation=impl)  # [B, T, H, hd]


def attention_reference(q, k, v, bias=None) -> np.ndarray:
    """The plain formula softmax(q k^T / sqrt(hd) + bias) v in NumPy float64, for tests."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", w, v)


class Attention(nnx.Module):
    """Multi-head self-attention with one ``qkv`` projection (timm's layout)."""

    def __init__(self, dim: int, num_heads: int, dtype: Any, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.qkv = linear(dim, 3 * dim, dtype, rngs)
        self.proj = linear(dim, dim, dtype, rngs)

    def __call__(self, x: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads)
        out = attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], bias)  # [B, T, H, hd]
        return self.proj(out.reshape(b, t, d))


class Mlp(nnx.Module):
    """fc1 -> GELU (exact) -> dropout -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, dropout_rate: float, dtype: Any, rngs: nnx.Rngs):
        self.fc1 = linear(dim, hidden, dtype, rngs)
        self.fc2 = linear(hidden, dim, dtype, rngs)
        self.dropout_rate = dropout_rate

    def __call__(self, x: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
        x = nnx.gelu(self.fc1(x), approximate=False)
        x = dropout(x, self.dropout_rate, fold(key, 0), deterministic)
        return dropout(self.fc2(x), self.dropout_rate, fold(key, 1), deterministic)


class PatchEmbed(nnx.Module):
    """Non-overlapping p x p patches -> linear embedding (a strided convolution)."""

    def __init__(self, patch: int, dim: int, dtype: Any, rngs: nnx.Rngs, norm_eps: float = 0.0):
        self.proj = nnx.Conv(
            3,
            dim,
            (patch, patch),
            strides=patch,
            padding="VALID",
            kernel_init=TRUNC_NORMAL,
            dtype=dtype,
            rngs=rngs,
        )
        if norm_eps:  # Swin normalises the patch embeddings
            self.norm = layer_norm(dim, norm_eps, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.proj(x)  # [B, H/p, W/p, D]
        return self.norm(x) if hasattr(self, "norm") else x
