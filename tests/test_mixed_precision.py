"""Mixed precision (``model.dtype="bfloat16"``): a bf16 training step tracks the fp32 step.

bf16 activations and convolutions, float32 parameters, optimizer state, BatchNorm statistics
and loss. Both runs start from identical parameters (initialisation does not depend on the
compute dtype) and see identical augmented views (same keys; augmentation runs in float32), so
every difference below comes from bf16 arithmetic. Stated tolerances, with what was measured on
CPU for a CIFAR ResNet-8 + projection head, batch 16, the stage-1 step (two SimCLR views, BNS):

- loss: relative difference <= 5e-3 at each of 3 steps (measured < 5e-4);
- gradient at the same parameters: relative L2 difference <= 0.1 and cosine >= 0.99
  (measured 0.03 and 0.9996; bf16 backward through 8 mantissa bits);
- parameter update after 3 AdamW steps: relative L2 difference <= 0.25, cosine >= 0.97
  (measured 0.07 and 0.997). AdamW's first steps are close to lr * sign(g), so gradient entries
  near zero flip sign under bf16 noise: the update differs more than the gradient does.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

from ltr_jax import config_lib, runtime, train_lib
from ltr_jax.data.input import in_memory, sampler
from ltr_jax.models import registry
from ltr_jax.stages import representation

N, BATCH, STEPS = 32, 16, 3
STAGE1 = config_lib.base_config().stage1  # BNS "reference" form, SimCLR strength 2


def _model_config(dtype: str) -> mlc.ConfigDict:
    return mlc.ConfigDict(dict(encoder="cifar_resnet8", dtype=dtype, proj_hidden=64, proj_dim=32))


def _data() -> dict:
    rng = np.random.default_rng(0)
    return {
        "images": rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, 4, N).astype(np.int32),
    }


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _gradient(model, data: dict):
    """Loss and parameter gradient of the stage-1 loss at the model's current parameters."""
    graphdef, params, batch_stats, rest = train_lib.split_model(model)
    loss_fn = representation.make_loss_fn(STAGE1)
    batch = {k: jnp.asarray(v[:BATCH]) for k, v in data.items()}

    def objective(params, batch_stats):
        # Batch stats are arguments too: NNX mutates them only inside the innermost trace.
        return loss_fn(nnx.merge(graphdef, params, batch_stats, rest), batch, jax.random.key(3))

    grad_fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))
    (loss, _), (grads, _) = grad_fn(params, batch_stats)
    return loss, grads


@functools.cache
def _run(dtype: str) -> dict:
    """Gradient at initialisation, then ``STEPS`` stage-1 train steps (AdamW), of one dtype."""
    mesh, data = runtime.make_mesh(1), _data()
    model = registry.make_contrastive(_model_config(dtype), rngs=nnx.Rngs(0))
    loss0, grads0 = _gradient(model, data)
    optim = config_lib.optim("adamw", lr=1e-3, warmup_epochs=0.0)
    tx, _ = train_lib.make_optimizer(optim, batch_size=BATCH, num_steps=50, steps_per_epoch=2)
    graphdef, state = train_lib.init_train_state(model, tx)
    init_params = jax.device_get(state.params)

    def batch_fn(device_data, state):
        positions = sampler.uniform_batch(jax.random.key(1), state.step, N, BATCH)
        return in_memory.gather(device_data, positions, mesh)

    step = train_lib.make_train_step(
        graphdef, tx, batch_fn, representation.make_loss_fn(STAGE1), mesh
    )
    state, device_data = runtime.put_replicated(mesh, state), runtime.put_replicated(mesh, data)
    losses = []
    for _ in range(STEPS):
        state, metrics = step(state, device_data, jax.random.key(2))
        losses.append(metrics["loss"])
    return dict(
        loss0=loss0, grads0=grads0, init=init_params, losses=losses, state=jax.device_get(state)
    )


def test_initial_parameters_do_not_depend_on_dtype():
    np.testing.assert_array_equal(_flat(_run("bfloat16")["init"]), _flat(_run("float32")["init"]))


def test_params_optimizer_state_batch_stats_and_loss_stay_float32():
    run = _run("bfloat16")
    state = run["state"]
    float32 = {jnp.dtype("float32")}
    assert {x.dtype for x in jax.tree.leaves(state.params)} == float32
    assert {x.dtype for x in jax.tree.leaves(state.batch_stats)} == float32
    opt_floats = [
        x for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    assert opt_floats and {x.dtype for x in opt_floats} == float32
    assert run["loss0"].dtype == jnp.float32
    assert all(loss.dtype == jnp.float32 for loss in run["losses"])


def test_bf16_loss_tracks_fp32_loss():
    lo, hi = _run("bfloat16"), _run("float32")
    np.testing.assert_allclose(float(lo["loss0"]), float(hi["loss0"]), rtol=5e-3)
    np.testing.assert_allclose(
        [float(x) for x in lo["losses"]], [float(x) for x in hi["losses"]], rtol=5e-3
    )


def test_bf16_gradient_tracks_fp32_gradient():
    lo, hi = _flat(_run("bfloat16")["grads0"]), _flat(_run("float32")["grads0"])
    assert _rel(lo, hi) <= 0.1
    assert _cos(lo, hi) >= 0.99


def test_bf16_update_after_three_adamw_steps_tracks_fp32():
    lo, hi = _run("bfloat16"), _run("float32")
    update_lo = _flat(lo["state"].params) - _flat(lo["init"])
    update_hi = _flat(hi["state"].params) - _flat(hi["init"])
    assert _rel(update_lo, update_hi) <= 0.25
    assert _cos(update_lo, update_hi) >= 0.97
    stats_lo, stats_hi = _flat(lo["state"].batch_stats), _flat(hi["state"].batch_stats)
    assert _rel(stats_lo, stats_hi) <= 1e-2


@pytest.fixture
def bf16_batchnorm():
    """The stem BatchNorm of a bf16 ResNet-8 (16 channels), in train mode."""
    encoder = registry.make_encoder("cifar_resnet8", dtype="bfloat16", rngs=nnx.Rngs(0))
    return encoder.stem_bn


def test_bf16_batchnorm_moving_average_is_float32(bf16_batchnorm):
    # A running mean that bf16 cannot represent: a bf16 copy of it in the update would move the
    # average by about 0.9 * 2**-12 = 2e-4 (Flax updates from the float32 variable; keep it so).
    bn = bf16_batchnorm
    old = np.float32(1.0 + 2.0**-12)
    bn.mean[...] = jnp.full((16,), old, jnp.float32)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 8, 8, 16)), jnp.bfloat16)
    bn(x)
    batch_mean = np.asarray(x, np.float32).mean((0, 1, 2))
    np.testing.assert_allclose(np.asarray(bn.mean[...]), 0.9 * old + 0.1 * batch_mean, atol=1e-6)
    assert bn.mean[...].dtype == jnp.float32


def test_bf16_batchnorm_eval_uses_float32_statistics(bf16_batchnorm):
    # Activations with a large mean and a small spread (x = 1, mean 1 + 2**-12, var 1e-6):
    # with bf16 statistics (Flax's default promotion) the mean rounds to 1 and the output to 0
    # instead of -0.074; train mode subtracts the float32 batch mean, so eval must too.
    bn = bf16_batchnorm
    bn.mean[...] = jnp.full((16,), 1.0 + 2.0**-12, jnp.float32)
    bn.var[...] = jnp.full((16,), 1e-6, jnp.float32)
    y = bn(jnp.ones((2, 4, 4, 16), jnp.bfloat16), use_running_average=True)
    expected = -(2.0**-12) / np.sqrt(1e-6 + 1e-5)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float32), expected, rtol=1e-2)


def test_bf16_classifier_logits_are_float32_and_track_fp32():
    images = jnp.asarray(_data()["images"][:8], jnp.float32) / 255.0
    logits = {}
    for dtype in ("float32", "bfloat16"):
        model = registry.make_classifier(_model_config(dtype), 4, rngs=nnx.Rngs(0))
        logits[dtype] = model(images)  # train-mode BatchNorm: batch statistics
    assert logits["bfloat16"].dtype == jnp.float32
    lo, hi = np.asarray(logits["bfloat16"]), np.asarray(logits["float32"])
    assert _rel(lo.ravel(), hi.ravel()) <= 5e-2
