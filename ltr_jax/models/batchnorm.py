"""BatchNorm whose running variance follows PyTorch or Flax: ``config.model.bn_running_var``.

Both normalise a training batch with its biased variance (divide by n). They differ only in the
running average: Flax folds in that biased variance, PyTorch the unbiased one (n / (n - 1)
times it), where n is the number of values per channel (batch x height x width). The paper's
released code trains PyTorch modules, so ``unbiased`` is its behaviour; ``biased`` (Flax's) is
the default. Evaluation reads the running variance, so the switch moves eval-mode outputs only.

A training batch's variance is the two-pass mean of (x - mean)^2, as PyTorch's, not Flax's
default one-pass E[x^2] - E[x]^2 (``use_fast_variance``), whose float32 error grows with
mean^2 / variance: a channel whose mean is 1000 standard deviations loses most of its digits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

# model.bn_running_var -> does the running average take the unbiased batch variance?
RUNNING_VAR: dict[str, bool] = {"biased": False, "unbiased": True}


class BatchNorm(nnx.BatchNorm):
    """``nnx.BatchNorm`` with an optional unbiased running-variance update.

    Attributes:
      unbiased_running_var: fold ``n / (n - 1)`` x the batch variance into the running
        variance (PyTorch); False: the biased batch variance (Flax).
    """

    unbiased_running_var: bool = False

    def __init__(self, *args, use_fast_variance: bool = False, **kwargs):
        super().__init__(*args, use_fast_variance=use_fast_variance, **kwargs)

    def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask=None):
        training = not (
            self.use_running_average if use_running_average is None else use_running_average
        )
        if not (training and self.unbiased_running_var):
            return super().__call__(x, use_running_average, mask=mask)
        old = self.var[...]
        y = super().__call__(x, use_running_average, mask=mask)
        new = self.var[...]  # momentum * old + (1 - momentum) * biased
        count = x.size // x.shape[-1] if mask is None else jnp.sum(mask) // x.shape[-1]
        # (1 - momentum) * biased * n / (n - 1) = (1 - momentum) * biased + correction.
        correction = (new - self.momentum * old) / (count - 1)
        self.var[...] = jax.lax.stop_gradient(new + correction)
        return y


def apply_running_var(module: nnx.Module, name: str) -> nnx.Module:
    """Sets the running-variance rule ``name`` on every :class:`BatchNorm` of ``module``."""
    if name not in RUNNING_VAR:
        raise ValueError(f"Unknown model.bn_running_var {name!r}; valid: {', '.join(RUNNING_VAR)}.")
    for _, layer in nnx.iter_modules(module):
        if isinstance(layer, BatchNorm):
            layer.unbiased_running_var = RUNNING_VAR[name]
    return module
