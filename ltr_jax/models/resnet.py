"""CIFAR ResNets as Flax NNX modules.

- ResNet-18 / ResNet-34 with the CIFAR stem of SPEC §2: a 3x3 stride-1 64-channel convolution,
  no max-pool, BasicBlocks, widths 64/128/256/512, global average pooling to 512-d.
- ResNet-32 (and the tiny ResNet-8 used by smoke runs) of the LDAM code: 16/32/64 channels,
  n blocks per stage, parameter-free "option A" shortcuts (subsample + zero-pad channels).

Every encoder maps uint8-derived float images [B, H, W, 3] to features [B, feature_dim] and
exposes ``feature_dim``. Train/eval mode is the NNX ``use_running_average`` flag of BatchNorm,
switched with ``model.train()`` / ``model.eval()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ltr_jax.models import batchnorm

_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(cin: int, cout: int, k: int, stride: int, dtype: Any, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=stride,
        padding=k // 2,
        use_bias=False,
        kernel_init=_conv_init,
        dtype=dtype,
        rngs=rngs,
    )


def check_images(x: jax.Array, encoder: str) -> None:
    """Fails at trace time, naming both shapes, unless ``x`` is a batch [B, H, W, 3].

    The data loaders bring every source to 3 channels (grayscale replicated), so a mismatch
    here means data that bypassed them, e.g. a custom loader returning [N, H, W, 1] arrays.
    """
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(
            f"{encoder} got images of shape {tuple(x.shape)}; it expects [B, H, W, 3]. "
            "Return uint8 [N, H, W, 3] images from the dataset loader (for grayscale, "
            "np.repeat(images[..., None], 3, -1), as ltr_jax's own loaders do)."
        )


def _promote_input_only(args: tuple, /, *, dtype: Any = None, inexact: bool = True) -> tuple:
    """Casts only the input (first of ``args``) to ``dtype``; statistics and affine stay float32.

    Flax's default also casts the running mean and variance (and scale, offset) to the compute
    dtype, so under bfloat16 eval mode subtracts a mean rounded to 8 mantissa bits, an error of
    up to 2**-9 |mean| / std in the output, while train mode subtracts the float32 batch mean.
    """
    del inexact
    x, *rest = args
    return (x if dtype is None else jnp.asarray(x, dtype), *rest)


def _bn(c: int, dtype: Any, rngs: nnx.Rngs) -> batchnorm.BatchNorm:
    # PyTorch's momentum 0.1 is Flax's 0.9; statistics computed and kept in float32.
    return batchnorm.BatchNorm(
        c, momentum=0.9, epsilon=1e-5, dtype=dtype, promote_dtype=_promote_input_only, rngs=rngs
    )


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with a residual connection."""

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str, dtype, rngs: nnx.Rngs):
        self.conv1 = _conv(cin, cout, 3, stride, dtype, rngs)
        self.bn1 = _bn(cout, dtype, rngs)
        self.conv2 = _conv(cout, cout, 3, 1, dtype, rngs)
        self.bn2 = _bn(cout, dtype, rngs)
        self.needs_projection = stride != 1 or cin != cout
        self.shortcut_kind = shortcut
        self.stride, self.pad = stride, cout - cin
        if self.needs_projection and shortcut == "conv":
            self.proj_conv = _conv(cin, cout, 1, stride, dtype, rngs)
            self.proj_bn = _bn(cout, dtype, rngs)

    def _shortcut(self, x: jax.Array) -> jax.Array:
        if not self.needs_projection:
            return x
        if self.shortcut_kind == "conv":
            return self.proj_bn(self.proj_conv(x))
        x = x[:, :: self.stride, :: self.stride, :]  # option A: subsample, zero-pad channels
        half = self.pad // 2
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (half, self.pad - half)))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + self._shortcut(x))


class CifarResNet(nnx.Module):
    """A CIFAR ResNet encoder: 3x3 stem, stages of BasicBlocks, global average pool."""

    def __init__(
        self,
        blocks: Sequence[int],
        widths: Sequence[int],
        stem_width: int,
        shortcut: str,
        *,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.stem_conv = _conv(3, stem_width, 3, 1, dtype, rngs)
        self.stem_bn = _bn(stem_width, dtype, rngs)
        layers, cin = [], stem_width
        for stage, (n, width) in enumerate(zip(blocks, widths)):
            for b in range(n):
                stride = 2 if (stage > 0 and b == 0) else 1
                layers.append(BasicBlock(cin, width, stride, shortcut, dtype, rngs))
                cin = width
        self.layers = nnx.List(layers)
        self.feature_dim = cin

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, "CifarResNet")
        x = x.astype(self.dtype)  # [B, H, W, 3]
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        for layer in self.layers:
            x = layer(x)
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float64 stays float64
        return jnp.mean(x, axis=(1, 2))  # [B, feature_dim]


def cifar_resnet18(*, dtype=jnp.float32, rngs: nnx.Rngs) -> CifarResNet:
    return CifarResNet([2, 2, 2, 2], [64, 128, 256, 512], 64, "conv", dtype=dtype, rngs=rngs)


def cifar_resnet34(*, dtype=jnp.float32, rngs: nnx.Rngs) -> CifarResNet:
    return CifarResNet([3, 4, 6, 3], [64, 128, 256, 512], 64, "conv", dtype=dtype, rngs=rngs)


def cifar_resnet32(*, dtype=jnp.float32, rngs: nnx.Rngs) -> CifarResNet:
    return CifarResNet([5, 5, 5], [16, 32, 64], 16, "option_a", dtype=dtype, rngs=rngs)


def cifar_resnet8(*, dtype=jnp.float32, rngs: nnx.Rngs) -> CifarResNet:
    """One block per stage: the network of ``:smoke`` runs, not for results."""
    return CifarResNet([1, 1, 1], [16, 32, 64], 16, "option_a", dtype=dtype, rngs=rngs)
