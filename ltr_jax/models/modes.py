"""Train and eval modes of any model, owned by the models package.

Stages never reach into a model's layers: evaluation uses :func:`eval_view` (BatchNorm on
running statistics, dropout and stochastic depth off), and the training step hands each step's
randomness to the model with :func:`set_step_key`. A model without BatchNorm, dropout or
stochastic depth is unaffected by either.
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


def set_step_key(model: nnx.Module, key: jax.Array) -> None:
    """Sets the dropout / stochastic-depth key of every encoder in ``model`` for this step.

    Call it on a model merged inside the step being traced (the keys are not carried over).
    """
    raw = jax.random.key_data(jax.random.fold_in(key, _MODEL_SALT))
    for _, variable in nnx.iter_graph(model):
        if isinstance(variable, transformer.StepKey):
            variable.set_value(raw)
