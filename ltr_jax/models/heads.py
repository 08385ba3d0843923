"""Heads on top of an encoder: the linear classifier and the BNS projection head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class LinearHead(nnx.Module):
    """Linear classifier; logits are returned in float32 (float64 for float64 features)."""

    def __init__(self, in_dim: int, num_classes: int, *, rngs: nnx.Rngs):
        self.fc = nnx.Linear(in_dim, num_classes, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.fc(features.astype(jnp.promote_types(features.dtype, jnp.float32)))


class CosineHead(nnx.Module):
    """Cosine classifier (LDAM's ``NormedLinear``): logits are cosines in [-1, 1], no bias."""

    def __init__(self, in_dim: int, num_classes: int, *, rngs: nnx.Rngs):
        w = jax.random.uniform(rngs.params(), (in_dim, num_classes), jnp.float32, -1.0, 1.0)
        self.kernel = nnx.Param(w / jnp.linalg.norm(w, axis=0, keepdims=True))  # unit columns

    def __call__(self, features: jax.Array) -> jax.Array:
        x = features.astype(jnp.float32)
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # [B, D]
        w = self.kernel[...]
        return x @ (w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12))


class ProjectionHead(nnx.Module):
    """Linear -> ReLU -> Linear (no BatchNorm); L2-normalised output (SPEC §2), float32 (float64
    for a float64 model)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, dtype=jnp.float32, rngs):
        self.fc1 = nnx.Linear(in_dim, hidden_dim, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden_dim, out_dim, dtype=dtype, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        z = self.fc2(nnx.relu(self.fc1(features)))  # [B, out_dim]
        z = z.astype(jnp.promote_types(z.dtype, jnp.float32))
        return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


class Classifier(nnx.Module):
    """Encoder + linear head."""

    def __init__(self, encoder: nnx.Module, head: LinearHead):
        self.encoder = encoder
        self.head = head

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.head(self.encoder(images))


class ContrastiveNet(nnx.Module):
    """Encoder + projection head, the stage-1 network."""

    def __init__(self, encoder: nnx.Module, projection: ProjectionHead):
        self.encoder = encoder
        self.projection = projection

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.projection(self.encoder(images))
