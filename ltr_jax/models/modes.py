"""Train and eval modes of any model, owned by the models package.

Stages never reach into a model's layers: evaluation uses :func:`eval_view` (BatchNorm on
running statistics, dropout and stochastic depth off), and the training step hands each
step's randomness to the model's variables with :func:`with_step_key`. A model without
BatchNorm, dropout or stochastic depth is unaffected by either.
"""

from __future__ import annotations

import jax
from flax import nnx

from ltr_jax.models import transformer

# Salt folded into the step key for a model's own randomness, apart from the stage's draws.
_MODEL_SALT = 0x6D6F64


def eval_view(model: nnx.Module) -> nnx.Module:
    """A view of ``model`` in eval mode, sharing its variables."""
    return nnx.view(model, use_running_average=True, deterministic=True, raise_if_not_found=False)


def frozen_view(model: nnx.Module, *, batch_statistics: bool) -> nnx.Module:
    """Eval mode (dropout and stochastic depth off) for a frozen network; with
    ``batch_statistics`` BatchNorm normalises with each batch's statistics, as a PyTorch
    module left in train mode does (the released probe's encoder)."""
    if not batch_statistics:
        return eval_view(model)
    return nnx.view(model, use_running_average=False, deterministic=True, raise_if_not_found=False)


def with_step_key(state: nnx.State, key: jax.Array) -> nnx.State:
    """``state`` (variables split off a model) with every encoder's dropout / stochastic-depth
    key set for this step; merge the model from it inside the step. A pure function: nothing
    is mutated, so it works inside any trace."""
    raw = jax.random.key_data(jax.random.fold_in(key, _MODEL_SALT))
    is_variable = lambda v: isinstance(v, nnx.Variable)
    return jax.tree.map(
        lambda v: v.replace(raw) if isinstance(v, transformer.StepKey) else v,
        state,
        is_leaf=is_variable,
    )
