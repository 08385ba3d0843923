"""Weight initialisers of whole models: ``config.model.init``, a name -> function registry.

- ``flax``: the initialisers the modules are built with (He-normal fan-out convolutions,
  LeCun-normal linear kernels, zero biases).
- ``torch``: PyTorch's defaults, which the paper's released code trains from: every
  convolution and linear kernel ``U(-b, b)`` with ``b = 1 / sqrt(fan_in)`` (kaiming-uniform
  with ``a = sqrt(5)``), every linear bias ``U(-b, b)`` with the same bound. BatchNorm
  starts at scale 1, offset 0 under both.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from flax import nnx


def _keep(module: nnx.Module, key: jax.Array) -> nnx.Module:
    del key
    return module


def torch_bound(kernel_shape: tuple[int, ...]) -> float:
    """``1 / sqrt(fan_in)`` of a Flax kernel ([..., in, out]: fan_in = all but the last dim)."""
    return 1.0 / float(np.sqrt(np.prod(kernel_shape[:-1])))


def _torch(module: nnx.Module, key: jax.Array) -> nnx.Module:
    """Redraws every Conv / Linear kernel and bias as PyTorch would; key per layer."""
    layers = [m for _, m in nnx.iter_modules(module) if isinstance(m, (nnx.Conv, nnx.Linear))]
    for i, layer in enumerate(layers):
        k_w, k_b = jax.random.split(jax.random.fold_in(key, i))
        kernel = layer.kernel[...]
        bound = torch_bound(kernel.shape)
        layer.kernel[...] = jax.random.uniform(k_w, kernel.shape, kernel.dtype, -bound, bound)
        if layer.bias is not None:
            bias = layer.bias[...]
            layer.bias[...] = jax.random.uniform(k_b, bias.shape, bias.dtype, -bound, bound)
    return module


INITS: dict[str, Callable[[nnx.Module, jax.Array], nnx.Module]] = {"flax": _keep, "torch": _torch}


def apply_init(module: nnx.Module, name: str, key: jax.Array) -> nnx.Module:
    """Initialises ``module`` in place with the registered scheme ``name`` and returns it."""
    if name not in INITS:
        raise ValueError(f"Unknown model.init {name!r}; valid: {', '.join(INITS)}.")
    return INITS[name](module, key)
