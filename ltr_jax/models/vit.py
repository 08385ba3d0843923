"""Vision Transformer (Dosovitskiy et al., ICLR 2021) and DeiT (Touvron et al., ICML 2021).

A ViT encoder: p x p patches embedded by a strided convolution, a class token, learned
position embeddings, ``depth`` pre-norm blocks (LayerNorm -> multi-head self-attention ->
residual, LayerNorm -> GELU MLP -> residual, each branch with stochastic depth), and either
the final LayerNorm of the class token (``pool="cls"``) or the mean of the patch tokens
followed by a LayerNorm (``pool="avg"``, timm's ``fc_norm``). Features are [B, D] in float32.

DeiT is the same body trained with its recipe (strong augmentation, AdamW, stochastic depth
0.1; the recipe lives in the configs). The distillation token of DeiT needs a teacher, which
ltr_jax does not train with, so it is not built.

Registered sizes (parameter counts with a 1000-class head, equal to timm's): ViT-Ti/16
5.72M, ViT-S/16 22.05M (= DeiT-S), ViT-B/16 86.57M, all at 224 px; ``vit_small_patch4_32`` and
``vit_tiny_patch4_32`` are the small-patch variants for 32 px CIFAR images (64 patches).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ltr_jax.models import transformer as tfm

POOLS = ("cls", "avg")


class Block(nnx.Module):
    """A pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        drop_path_rate: float,
        dropout_rate: float,
        dtype: Any,
        rngs: nnx.Rngs,
        eps: float = 1e-6,
    ):
        self.norm1 = tfm.layer_norm(dim, eps, dtype, rngs)
        self.attn = tfm.Attention(dim, heads, dtype, rngs)
        self.norm2 = tfm.layer_norm(dim, eps, dtype, rngs)
        self.mlp = tfm.Mlp(dim, int(dim * mlp_ratio), dropout_rate, dtype, rngs)
        self.drop_path_rate, self.dropout_rate = drop_path_rate, dropout_rate

    def __call__(self, x: jax.Array, key: jax.Array, deterministic: bool) -> jax.Array:
        y = tfm.dropout(
            self.attn(self.norm1(x)), self.dropout_rate, tfm.fold(key, 0), deterministic
        )
        x = x + tfm.drop_path(y, self.drop_path_rate, tfm.fold(key, 1), deterministic)
        y = self.mlp(self.norm2(x), tfm.fold(key, 2), deterministic)
        return x + tfm.drop_path(y, self.drop_path_rate, tfm.fold(key, 3), deterministic)


class VisionTransformer(tfm.StochasticEncoder):
    """A ViT / DeiT encoder mapping images [B, S, S, 3] to features [B, embed_dim]."""

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        drop_path_rate: float = 0.0,
        dropout_rate: float = 0.0,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Builds the encoder.

        Args:
          image_size: side of the (square) input images; the position-embedding grid is
            ``image_size // patch_size`` on a side.
          patch_size: side of the patches.
          embed_dim, depth, num_heads, mlp_ratio: the transformer's width, blocks, heads and
            MLP expansion.
          pool: ``cls`` (final LayerNorm, class token) or ``avg`` (mean of patch tokens, then
            LayerNorm).
          drop_path_rate: stochastic depth of the last block, rising linearly from 0.
          dropout_rate: dropout after the position embeddings, attention and MLP layers.
          dtype: compute dtype.
          rngs: parameter initialisation keys.
        """
        if pool not in POOLS:
            raise ValueError(f"Unknown ViT pool {pool!r}; valid: {', '.join(POOLS)}.")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}.")
        self.dtype, self.pool, self.dropout_rate = dtype, pool, dropout_rate
        self.image_size, self.patch_size = image_size, patch_size
        self.grid = image_size // patch_size
        self.patch_embed = tfm.PatchEmbed(patch_size, embed_dim, dtype, rngs)
        self.cls_token = nnx.Param(jnp.zeros((1, 1, embed_dim), jnp.float32))
        tokens = self.grid**2 + 1
        self.pos_embed = nnx.Param(tfm.TRUNC_NORMAL(rngs.params(), (1, tokens, embed_dim)))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nnx.List(
            [Block(embed_dim, num_heads, mlp_ratio, r, dropout_rate, dtype, rngs) for r in rates]
        )
        if pool == "cls":
            self.norm = tfm.layer_norm(embed_dim, 1e-6, dtype, rngs)
        else:
            self.fc_norm = tfm.layer_norm(embed_dim, 1e-6, dtype, rngs)
        self.feature_dim = embed_dim
        self.deterministic = False
        self.step_key = tfm.new_step_key()

    def tokens(self, images: jax.Array) -> jax.Array:
        """Patch embeddings with the class token prepended and positions added: [B, T, D]."""
        b, h, w, _ = images.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"This ViT takes {self.image_size}x{self.image_size} images, got {h}x{w}: "
                "pick the encoder built for this image size (or set data.image_size)."
            )
        x = self.patch_embed(images.astype(self.dtype))  # [B, H/p, W/p, D]
        x = x.reshape(b, -1, x.shape[-1])
        cls = jnp.broadcast_to(self.cls_token[...].astype(x.dtype), (b, 1, x.shape[-1]))
        return jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)

    def __call__(self, images: jax.Array) -> jax.Array:
        key, det = self.step_key[...], self.deterministic
        x = tfm.dropout(self.tokens(images), self.dropout_rate, tfm.fold(key, 0), det)
        for i, block in enumerate(self.blocks):
            x = block(x, tfm.fold(key, i + 1), det)  # [B, T, D]
        if self.pool == "cls":
            return self.norm(x)[:, 0].astype(jnp.float32)  # [B, D]
        return self.fc_norm(jnp.mean(x[:, 1:], axis=1)).astype(jnp.float32)


def _vit(image_size, patch, dim, depth, heads, drop_path, pool="cls"):
    def factory(*, dtype=jnp.float32, rngs: nnx.Rngs, drop_path_rate: float | None = None):
        rate = drop_path if drop_path_rate is None else drop_path_rate
        return VisionTransformer(
            image_size=image_size,
            patch_size=patch,
            embed_dim=dim,
            depth=depth,
            num_heads=heads,
            pool=pool,
            drop_path_rate=rate,
            dtype=dtype,
            rngs=rngs,
        )

    factory.__doc__ = (
        f"ViT {dim}-d x {depth} blocks, {heads} heads, patch {patch} at {image_size}px."
    )
    return factory


# Name -> factory; the stochastic depth defaults are those of the DeiT recipe (0.1 for S and
# B, 0 for Ti). ``drop_path_rate`` (config ``model.drop_path_rate``) overrides them.
ENCODERS = {
    "vit_tiny_patch16_224": _vit(224, 16, 192, 12, 3, 0.0),
    "vit_small_patch16_224": _vit(224, 16, 384, 12, 6, 0.1),
    "vit_base_patch16_224": _vit(224, 16, 768, 12, 12, 0.1),
    "deit_tiny_patch16_224": _vit(224, 16, 192, 12, 3, 0.0),
    "deit_small_patch16_224": _vit(224, 16, 384, 12, 6, 0.1),
    "deit_base_patch16_224": _vit(224, 16, 768, 12, 12, 0.1),
    "vit_tiny_patch4_32": _vit(32, 4, 192, 12, 3, 0.1),
    "vit_small_patch4_32": _vit(32, 4, 384, 12, 6, 0.1),
    # Smoke-test sizes (not for results): 32 px, 2 blocks; vit_smoke pools by averaging.
    "vit_smoke": _vit(32, 8, 32, 2, 2, 0.1, pool="avg"),
    "deit_smoke": _vit(32, 8, 32, 2, 2, 0.1),
}
