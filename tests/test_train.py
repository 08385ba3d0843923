"""The training step and loop: data-parallel equality, schedules, weight-decay mask."""

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
import pytest
from flax import nnx

from ltr_jax import config_lib, runtime, train_lib
from ltr_jax.data.input import augment, in_memory, sampler
from ltr_jax.losses import classification
from ltr_jax.models import registry


def _setup(mesh, batch_size=16, n=64):
    rng = np.random.default_rng(0)
    data = {
        "images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
        "labels": rng.integers(0, 4, n).astype(np.int32),
    }
    model_cfg = mlc.ConfigDict(dict(encoder="cifar_resnet8", dtype="float32"))
    model = registry.make_classifier(model_cfg, 4, rngs=nnx.Rngs(0))
    optim = config_lib.optim("adamw", lr=1e-3, warmup_epochs=1.0)
    tx, _ = train_lib.make_optimizer(optim, batch_size=batch_size, num_steps=8, steps_per_epoch=4)
    graphdef, state = train_lib.init_train_state(model, tx)
    sample = lambda step: sampler.uniform_batch(jax.random.key(1), step, n, batch_size)

    def batch_fn(device_data, state):
        return in_memory.gather(device_data, sample(state.step), mesh)

    def loss_fn(model, batch, key):
        logits = model(augment.crop_flip(key, augment.to_float(batch["images"])))
        return classification.cross_entropy(logits, batch["labels"]), {}

    step = train_lib.make_train_step(graphdef, tx, batch_fn, loss_fn, mesh)
    return step, runtime.put_replicated(mesh, state), runtime.put_replicated(mesh, data)


def _run(mesh, steps=2):
    step, state, data = _setup(mesh)
    losses = []
    for _ in range(steps):
        state, metrics = step(state, data, jax.random.key(2))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


def test_data_parallel_step_equals_single_device():
    assert jax.device_count() == 8
    state1, losses1 = _run(runtime.make_mesh(1))
    state8, losses8 = _run(runtime.make_mesh(8))
    np.testing.assert_allclose(losses1, losses8, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state1), jax.tree.leaves(state8)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5)
    assert int(state8.step) == 2


def test_batch_is_sharded_over_data_axis():
    mesh = runtime.make_mesh(8)
    data = runtime.put_replicated(mesh, {"images": np.zeros((32, 2)), "labels": np.zeros(32)})
    out = jax.jit(lambda d: in_memory.gather(d, jnp.arange(16), mesh))(data)
    assert out["images"].sharding.spec[0] == runtime.DATA_AXIS


def test_schedule_warmup_then_cosine_to_zero():
    optim = config_lib.optim("adamw", lr=1e-3, lr_base_batch=256, warmup_epochs=2.0)
    _, schedule = train_lib.make_optimizer(optim, batch_size=512, num_steps=100, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(20)), 2e-3, rtol=1e-6)  # peak = 1e-3 * 512/256
    assert float(schedule(10)) == pytest.approx(1e-3, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_no_weight_decay_on_biases_and_1d_params(name):
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    optim_lr = config_lib.optim(name, lr=1.0, warmup_epochs=0.0, weight_decay=0.5)
    tx, _ = train_lib.make_optimizer(optim_lr, batch_size=256, num_steps=10, steps_per_epoch=1)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(updates["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["kernel"]).max()) > 0.0


def _warmup_cosine(peak, warmup, total, t):
    """The schedule's closed form: linear warm-up from 0, then half-cosine to 0 (SPEC §2)."""
    if t < warmup:
        return peak * t / warmup
    return 0.5 * peak * (1 + np.cos(np.pi * (t - warmup) / (total - warmup)))


# (stage whose optimiser section is used, batch size): AdamW as stages 1 and 2 and the probe
# build it, SGD with momentum as the ce family does. A large batch scales the peak lr up
# (linear scaling rule), so that 6 steps of decay move every entry well above float noise.
@pytest.mark.parametrize(("stage", "batch_size"), [("stage2", 64 * 400), ("ce", 128 * 20)])
def test_weight_decay_moves_each_tensor_by_the_formula(stage, batch_size):
    optim = config_lib.base_config()[stage].optim
    wd, steps, spe = optim.weight_decay, 6, 2  # warm-up 0.5 epoch (1 step), then cosine
    optim.warmup_epochs = 0.5
    tx, _ = train_lib.make_optimizer(
        optim, batch_size=batch_size, num_steps=steps, steps_per_epoch=spe
    )
    model = registry.make_classifier(
        mlc.ConfigDict(dict(encoder="cifar_resnet8", dtype="float32")), 4, rngs=nnx.Rngs(0)
    )
    with jax.enable_x64(True):  # float64: the decay of one step is ~1e-3 of each entry
        params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), nnx.state(model, nnx.Param))
        zero = jax.tree.map(jnp.zeros_like, params)  # a zero loss gradient: decay alone moves
        update = jax.jit(lambda p, s: tx.update(zero, s, p))
        current, opt_state = params, tx.init(params)
        for _ in range(steps):
            updates, opt_state = update(current, opt_state)
            current = optax.apply_updates(current, updates)
    peak = optim.lr * batch_size / optim.lr_base_batch
    lrs = [_warmup_cosine(peak, 1, steps, t) for t in range(steps)]
    decayed = untouched = 0
    flat = jax.tree_util.tree_leaves_with_path(params)
    for (path, before), after in zip(flat, jax.tree.leaves(current), strict=True):
        before, after = np.asarray(before), np.asarray(after)
        if before.ndim < 2:  # biases, BatchNorm scales and offsets: no decay at all
            np.testing.assert_array_equal(after, before, err_msg=jax.tree_util.keystr(path))
            untouched += 1
            continue
        expected, trace = before.copy(), np.zeros_like(before)
        for lr in lrs:  # AdamW: w -= lr wd w; SGD: g = wd w, trace = g + m trace, w -= lr trace
            if optim.name == "adamw":  # (with a zero gradient Adam's own update is exactly 0)
                expected = expected - lr * wd * expected
            else:
                trace = wd * expected + optim.momentum * trace
                expected = expected - lr * trace
        np.testing.assert_allclose(after - before, expected - before, rtol=1e-6, atol=0)
        assert np.abs(after - before).max() > 1e-4 * np.abs(before).max()  # decay is visible
        decayed += 1
    assert (decayed, untouched) == (8, 15)  # 7 convolutions + head kernel; BN, head bias


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="adamw, sgd"):
        train_lib.make_optimizer(
            config_lib.optim("lamb"), batch_size=1, num_steps=1, steps_per_epoch=1
        )


def test_apply_in_batches_pads_and_drops_padding():
    mesh = runtime.make_mesh(8)
    x = np.arange(37, dtype=np.float32)
    out = runtime.apply_in_batches(jax.jit(lambda v: v * 2), (x,), 16, mesh)
    np.testing.assert_array_equal(out, x * 2)
