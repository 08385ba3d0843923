"""Swin Transformer (Liu et al., ICCV 2021) encoders as Flax NNX modules.

4 x 4 patches embedded and normalised, then four stages of Swin blocks on a token grid that
patch merging (2 x 2 neighbours concatenated, LayerNorm, linear 4C -> 2C) halves at the start
of stages 2-4. A block is pre-norm window attention (self-attention inside non-overlapping
w x w windows, with a learned relative position bias per head) and a GELU MLP; every second
block shifts the windows by w // 2 (a cyclic roll, with a mask keeping attention inside the
regions that were neighbours before the roll). A window larger than the grid shrinks to the
grid and is not shifted (as in the original code). Features: the final LayerNorm, averaged
over the grid, [B, 8 * embed_dim] in float32.

Registered: Swin-T (96-d, depths 2-2-6-2, 28.29M parameters with a 1000-class head), Swin-B
(128-d, 2-2-18-2, 87.77M), both window 7 at 224 px, and ``swin_smoke`` (32 px, not for
results). Parameter names are timm's (``layers.i.downsample``, ``layers.i.blocks.j.attn``...).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ltr_jax.models import transformer as tfm

EPS = 1e-5  # Swin uses PyTorch's default LayerNorm epsilon


@functools.cache
def relative_position_index(window: int) -> np.ndarray:
    """[w*w, w*w] index into the (2w-1)^2 bias table of each pair of window positions."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window - 1)  # [N, N, 2]
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def partition(x: jax.Array, window: int) -> jax.Array:
    """[B, H, W, C] -> [B * H/w * W/w, w * w, C], windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def unpartition(windows: jax.Array, window: int, h: int, w: int) -> jax.Array:
    """The inverse of :func:`partition`: [B * nW, w * w, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


@functools.cache
def shift_mask(h: int, w: int, window: int, shift: int) -> np.ndarray:
    """[nW, N, N] additive mask (0 or -100, the original value) of shifted-window attention."""
    regions = np.zeros((h, w), np.float32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(bounds):
        for j, ws in enumerate(bounds):
            regions[hs, ws] = 3 * i + j
    r = regions.reshape(h // window, window, w // window, window).transpose(0, 2, 1, 3)
    r = r.reshape(-1, window * window)  # [nW, N], the windows of ``partition``
    return np.where(r[:, None, :] != r[:, :, None], -100.0, 0.0).astype(np.float32)


class WindowAttention(tfm.Attention):
    """Multi-head attention inside windows, with a relative position bias per head."""

    def __init__(self, dim: int, heads: int, window: int, dtype: Any, rngs: nnx.Rngs):
        super().__init__(dim, heads, dtype, rngs)
        table = tfm.TRUNC_NORMAL(rngs.params(), ((2 * window - 1) ** 2, heads))
        self.relative_position_bias_table = nnx.Param(table)
        self.window = window

    def position_bias(self) -> jax.Array:
        index = relative_position_index(self.window)
        return self.relative_position_bias_table[...][index].transpose(2, 0, 1)  # [H, N, N]

    def __call__(self, windows: jax.Array, mask: np.ndarray | None) -> jax.Array:
        bias = self.position_bias()[None]  # [1, H, N, N]
        if mask is not None:  # [nW, N, N]: windows are image-major, so tile over images
            bias = bias + jnp.asarray(mask)[:, None]
            bias = jnp.tile(bias, (windows.shape[0] // mask.shape[0], 1, 1, 1))
        return super().__call__(windows, bias)


class SwinBlock(nnx.Module):
    """(Shifted) window attention and an MLP, pre-norm, with stochastic depth."""

    def __init__(
        self,
        dim: int,
        heads: int,
        window: int,
        shift: int,
        drop_path_rate: float,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        self.norm1 = tfm.layer_norm(dim, EPS, dtype, rngs)
        self.attn = WindowAttention(dim, heads, window, dtype, rngs)
        self.norm2 = tfm.layer_norm(dim, EPS, dtype, rngs)
        self.mlp = tfm.Mlp(dim, 4 * dim, 0.0, dtype, rngs)
        self.window, self.shift, self.drop_path_rate = window, shift, drop_path_rate

    def _attend(self, x: jax.Array) -> jax.Array:
        _, h, w, _ = x.shape
        s = self.shift
        if s:
            x = jnp.roll(x, (-s, -s), axis=(1, 2))
        mask = shift_mask(h, w, self.window, s) if s else None
        x = unpartition(self.attn(partition(x, self.window), mask), self.window, h, w)
        return jnp.roll(x, (s, s), axis=(1, 2)) if s else x

    def __call__(self, x: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
        rate = self.drop_path_rate
        x = x + tfm.drop_path(self._attend(self.norm1(x)), rate, tfm.fold(key, 0), deterministic)
        y = self.mlp(self.norm2(x), tfm.fold(key, 1), deterministic)
        return x + tfm.drop_path(y, rate, tfm.fold(key, 2), deterministic)


class PatchMerging(nnx.Module):
    """2 x 2 neighbouring tokens concatenated (4C), normalised, projected to 2C."""

    def __init__(self, dim: int, dtype: Any, rngs: nnx.Rngs):
        self.norm = tfm.layer_norm(4 * dim, EPS, dtype, rngs)
        self.reduction = tfm.linear(4 * dim, 2 * dim, dtype, rngs, use_bias=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        # Channel order (0,0), (1,0), (0,1), (1,1) of (row, col) offsets, as the original.
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(b, h // 2, w // 2, 4 * c)))


class SwinStage(nnx.Module):
    """Optional patch merging, then Swin blocks alternating plain and shifted windows."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        window: int,
        resolution: int,
        rates: Sequence[float],
        downsample: bool,
        dtype: Any,
        rngs: nnx.Rngs,
    ):
        if downsample:
            self.downsample = PatchMerging(dim // 2, dtype, rngs)
        if resolution <= window:  # the whole grid is one window: nothing to shift
            window, shift = resolution, 0
        else:
            if resolution % window:
                raise ValueError(f"Swin grid {resolution} is not a multiple of window {window}.")
            shift = window // 2
        self.blocks = nnx.List(
            [
                SwinBlock(dim, heads, window, shift if j % 2 else 0, rates[j], dtype, rngs)
                for j in range(depth)
            ]
        )

    def __call__(self, x: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
        if hasattr(self, "downsample"):
            x = self.downsample(x)
        for j, block in enumerate(self.blocks):
            x = block(x, tfm.fold(key, j), deterministic)
        return x


class SwinTransformer(tfm.StochasticEncoder):
    """A Swin encoder mapping images [B, S, S, 3] to features [B, 8 * embed_dim]."""

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window: int,
        drop_path_rate: float = 0.0,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Builds the encoder; stochastic depth rises linearly to ``drop_path_rate`` over all
        blocks, and the grid of stage i is ``image_size / patch_size / 2**i``."""
        self.dtype, self.image_size = dtype, image_size
        self.patch_embed = tfm.PatchEmbed(patch_size, embed_dim, dtype, rngs, norm_eps=EPS)
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        layers, resolution, start = [], image_size // patch_size, 0
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2**i
            resolution = resolution // 2 if i else resolution
            layers.append(
                SwinStage(
                    dim,
                    depth,
                    heads,
                    window,
                    resolution,
                    rates[start : start + depth],
                    i > 0,
                    dtype,
                    rngs,
                )
            )
            start += depth
        self.layers = nnx.List(layers)
        self.feature_dim = embed_dim * 2 ** (len(depths) - 1)
        self.norm = tfm.layer_norm(self.feature_dim, EPS, dtype, rngs)
        self.deterministic = False
        self.step_key = tfm.new_step_key()

    def __call__(self, images: jax.Array) -> jax.Array:
        _, h, w, _ = images.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"This Swin takes {self.image_size}x{self.image_size} images, got {h}x{w}: "
                "pick the encoder built for this image size (or set data.image_size)."
            )
        x = self.patch_embed(images.astype(self.dtype))  # [B, S/4, S/4, C]
        for i, stage in enumerate(self.layers):
            x = stage(x, tfm.fold(self.step_key[...], i), self.deterministic)
        return jnp.mean(self.norm(x).astype(jnp.float32), axis=(1, 2))  # [B, 8C]


def _swin(image_size, patch, dim, depths, heads, window, drop_path):
    def factory(*, dtype=jnp.float32, rngs: nnx.Rngs, drop_path_rate: float | None = None):
        rate = drop_path if drop_path_rate is None else drop_path_rate
        return SwinTransformer(
            image_size=image_size,
            patch_size=patch,
            embed_dim=dim,
            depths=depths,
            num_heads=heads,
            window=window,
            drop_path_rate=rate,
            dtype=dtype,
            rngs=rngs,
        )

    factory.__doc__ = f"Swin {dim}-d, depths {depths}, window {window}, at {image_size}px."
    return factory


# Stochastic depth defaults: the original ImageNet-1k recipes (0.2 for T, 0.5 for B).
ENCODERS = {
    "swin_tiny_patch4_window7_224": _swin(224, 4, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, 0.2),
    "swin_base_patch4_window7_224": _swin(224, 4, 128, (2, 2, 18, 2), (4, 8, 16, 32), 7, 0.5),
    # 32 px CIFAR: 2 x 2 patches, a 16 x 16 grid, windows of 4.
    "swin_tiny_patch2_window4_32": _swin(32, 2, 96, (2, 2, 6, 2), (3, 6, 12, 24), 4, 0.2),
    "swin_smoke": _swin(32, 4, 16, (2, 1), (2, 4), 4, 0.1),  # smoke tests, not for results
}
