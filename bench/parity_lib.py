"""What the parity harness (``bench/parity.py``) and ``tests/test_parity.py`` share, without torch.

Weights and inputs are pure functions of a seed (NumPy), so the golden fixtures hold only
inputs' seeds and outputs: the harness loads the same seeded weights into the released PyTorch
model and into ``ltr_jax``'s, and the test rebuilds them to replay our side. Fixtures live in
``tests/fixtures/parity/`` as ``.npy`` and ``.json`` files.
"""

from __future__ import annotations

import itertools
import json
import os
import types
import zlib

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax
from flax import nnx

from ltr_jax import config_lib, dpp, param_groups, train_lib
from ltr_jax.models import heads, registry
from ltr_jax.stages import common, probe, rebalance, representation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "parity")
RESNET_FIXTURES = os.path.join(ROOT, "tests", "fixtures", "resnet")  # bench/resnet50_fixture.py
SEED = 12
NUM_CLASSES = 10
# Stage-1 steps of row d: the released schedule's shape (warm-up, cosine) at a small peak lr:
# at 1e-3 with B = 4, Adam amplifies float noise from 1e-6 (step 1) to 1e-3 (step 3) in the loss.
TRAIN = dict(steps=20, batch=4, epochs=4, steps_per_epoch=5, warmup_epochs=1, lr=1e-5, wd=0.05)


# Our path segment -> the released module's attribute name (for the state-dict keys).
_LEAF = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_SUB = {
    "conv1": "conv1",
    "bn1": "bn1",
    "conv2": "conv2",
    "bn2": "bn2",
    "proj_conv": "shortcut.0",
    "proj_bn": "shortcut.1",
}
BLOCKS = {"cifar_resnet18": [2, 2, 2, 2], "cifar_resnet34": [3, 4, 6, 3]}


def torch_name(path: str, blocks: list[int]) -> str:
    """Our variable path ('encoder/layers/3/proj_bn/var') -> the released state-dict key."""
    parts = path.split("/")
    leaf = _LEAF[parts[-1]]
    if parts[0] == "projection":
        return f"projector.{0 if parts[1] == 'fc1' else 2}.{leaf}"
    if parts[0] == "head":
        return f"lin.{leaf}"
    if parts[1] == "stem_conv":
        return f"enc.conv1.{leaf}"
    if parts[1] == "stem_bn":
        return f"enc.bn1.{leaf}"
    i, starts = int(parts[2]), np.cumsum([0] + blocks)
    layer = int(np.searchsorted(starts, i, side="right")) - 1
    return f"enc.layer{layer + 1}.{i - starts[layer]}.{_SUB[parts[3]]}.{leaf}"


def model_config(encoder: str = "cifar_resnet18") -> mlc.ConfigDict:
    """The released networks: feature -> 2048 -> 128 projection head."""
    return mlc.ConfigDict(
        dict(
            encoder=encoder,
            dtype="float32",
            proj_hidden=2048,
            proj_dim=128,
            init="flax",
            bn_running_var="unbiased",
        )  # PyTorch's running-variance update, as released
    )


def _path_rng(seed: int, path: tuple) -> np.random.Generator:
    name = "/".join(str(p) for p in path)
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _seeded_value(path: tuple, shape: tuple, seed: int) -> np.ndarray:
    """A realistic value per kind of variable: kernels at PyTorch's default scale."""
    rng, leaf = _path_rng(seed, path), str(path[-1])
    if leaf == "kernel":
        bound = 1.0 / np.sqrt(np.prod(shape[:-1]))
        return rng.uniform(-bound, bound, shape)
    if leaf in ("scale", "var"):
        return rng.uniform(0.8, 1.2, shape)
    return rng.uniform(-0.1, 0.1, shape)  # bias, BatchNorm offset and mean


def seed_weights(model: nnx.Module, seed: int = SEED) -> nnx.Module:
    """Overwrites every variable of ``model`` (in place) with its seeded value."""
    flat = nnx.to_flat_state(nnx.state(model))
    for path, var in flat:
        old = var.get_value()
        var.set_value(jnp.asarray(_seeded_value(path, old.shape, seed), old.dtype))
    nnx.update(model, nnx.from_flat_state(flat))
    return model


def contrastive_net(encoder: str = "cifar_resnet18", seed: int = SEED) -> heads.ContrastiveNet:
    return seed_weights(registry.make_contrastive(model_config(encoder), rngs=nnx.Rngs(0)), seed)


def classifier(seed: int = SEED) -> heads.Classifier:
    config = model_config()
    return seed_weights(registry.make_classifier(config, NUM_CLASSES, rngs=nnx.Rngs(0)), seed)


def imagenet_resnet(name: str) -> nnx.Module:
    """An ImageNet ResNet-50 / ResNeXt-50 encoder with seeded weights (``bench/resnet50_fixture.py``
    copies the same weights into torchvision's model)."""
    return seed_weights(registry.make_encoder(name, rngs=nnx.Rngs(0)))


def imagenet_resnet_inputs() -> np.ndarray:
    """[2, 64, 64, 3] float32: :func:`images` of ``SEED``, each pixel repeated 2 x 2."""
    return images(SEED, 2).repeat(2, 1).repeat(2, 2)


def images(seed: int, n: int) -> np.ndarray:
    """float32 [n, 32, 32, 3] in [0, 1] (NHWC; the harness transposes for PyTorch)."""
    return np.random.default_rng(seed).uniform(0, 1, (n, 32, 32, 3)).astype(np.float32)


def labels(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed + 1).integers(0, 4, n).astype(np.int32)


def flat_params(model: nnx.Module, what=nnx.Param) -> dict[str, np.ndarray]:
    """``{"a/b/kernel": array}`` of the ``what`` variables of ``model``."""
    flat = nnx.to_flat_state(nnx.state(model, what))
    return {"/".join(map(str, p)): np.asarray(v.get_value()) for p, v in flat}


def decayed_paths(model: nnx.Module) -> list[str]:
    """Sorted paths of the parameters that ``train_lib``'s AdamW decays."""
    mask = param_groups.decay_mask(nnx.state(model, nnx.Param))
    flat = nnx.to_flat_state(mask)
    return sorted("/".join(map(str, p)) for p, v in flat if bool(v.get_value()))


def schedule(
    steps_per_epoch: int, epochs: int, warmup_epochs: float, lr: float, base: int, batch: int
) -> np.ndarray:
    """Our per-step learning rate over a whole run."""
    optim = mlc.ConfigDict(
        dict(
            name="adamw",
            lr=lr,
            lr_base_batch=base,
            b1=0.9,
            b2=0.95,
            weight_decay=0.05,
            warmup_epochs=warmup_epochs,
        )
    )
    num_steps = epochs * steps_per_epoch
    _, sched = train_lib.make_optimizer(
        optim, batch_size=batch, num_steps=num_steps, steps_per_epoch=steps_per_epoch
    )
    return np.asarray(jax.vmap(sched)(jnp.arange(num_steps)), np.float64)


def stage1_data() -> tuple[np.ndarray, np.ndarray]:
    """Row d's views [steps, 2, B, 32, 32, 3] and labels [B] (two classes: positives and
    negatives in every batch)."""
    t = TRAIN
    views = images(SEED + 3, t["steps"] * 2 * t["batch"])
    views = views.reshape(t["steps"], 2, t["batch"], 32, 32, 3)
    return views, (np.arange(t["batch"]) // (t["batch"] // 2)).astype(np.int32)


class _ViewFeed:
    """Pre-augmented views in the batch (``batch["views"]`` [2, B, H, W, 3])."""

    @staticmethod
    def view(key, batch, v):
        return batch["views"][v]


def _make_step(model, trainable, loss_fn, num_steps: int, warmup_steps: int, lr: float):
    optim = mlc.ConfigDict(
        dict(
            name="adamw",
            lr=lr,
            lr_base_batch=1,
            b1=0.9,
            b2=0.95,
            weight_decay=TRAIN["wd"],
            warmup_epochs=warmup_steps,
        )
    )
    tx, _ = train_lib.make_optimizer(optim, batch_size=1, num_steps=num_steps, steps_per_epoch=1)
    graphdef, state = train_lib.init_train_state(model, tx, trainable)
    mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    step = train_lib.make_train_step(graphdef, tx, lambda data, s: data, loss_fn, mesh)
    return graphdef, state, step


def stage1_run(views: np.ndarray, y: np.ndarray, seed: int = SEED) -> tuple[list, dict]:
    """Our stage-1 steps from the seeded weights on fixed views (``views`` [T, 2, B, ...]).

    Returns:
      (loss of every step, final parameters by path).
    """
    cfg = mlc.ConfigDict(
        dict(
            loss="bns",
            views_through_bn="separate",
            augment_strength=2.0,
            bns=dict(form="reference", tau=0.5, m=4),
        )
    )
    loss_fn = representation.make_loss_fn(cfg, _ViewFeed())
    t = TRAIN
    graphdef, state, step = _make_step(
        contrastive_net(seed=seed),
        nnx.Param,
        loss_fn,
        t["epochs"] * t["steps_per_epoch"],
        t["warmup_epochs"] * t["steps_per_epoch"],
        t["lr"],
    )
    losses = []
    for i in range(len(views)):
        state, metrics = step(state, {"views": views[i], "labels": y}, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return losses, flat_params(train_lib.merge_model(graphdef, jax.device_get(state)))


# Row e: the probe and stage 2 as their stages build them (``make_setup`` of
# configs/reference/cifar10_lt.py), one step on a fixed batch at a pinned learning rate.
STEP = dict(lr=1e-3, batch=8)
# Row e, weight decay alone: zero gradients for a few steps at a larger learning rate, where
# AdamW's update is the decay alone (moves every decayed entry by 1 - prod(1 - lr_t * wd)).
DECAY = dict(steps=5, lr=1e-2)
STAGES = {"probe": probe.DECLARATION, "stage2": rebalance.DECLARATION}


def reference_config() -> mlc.FrozenConfigDict:
    """configs/reference/cifar10_lt.py (the released code's switches; ResNet-18 and its
    2048 -> 128 projection as in :func:`model_config`)."""
    path = os.path.join(ROOT, "configs", "reference", "cifar10_lt.py")
    return mlc.FrozenConfigDict(config_lib.load_config_file(path))


def _mesh():
    return jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])


def stage_context(workdir: str) -> common.StageContext:
    """A run context of the reference config whose workdir holds the seeded network as the
    stage-1 encoder and the probe's head (what ``make_setup`` of the probe and stage 2 load).

    The data is a stand-in with the CIFAR-10-LT class counts (``make_setup`` reads only the
    labels and counts; the parity batch is fed directly)."""
    config = reference_config()
    counts = [5000 // 100 ** (c / (NUM_CLASSES - 1)) for c in range(NUM_CLASSES)]
    train_labels = np.repeat(np.arange(NUM_CLASSES), np.asarray(counts, int)).astype(np.int32)
    data = types.SimpleNamespace(
        train_labels=train_labels,
        class_counts=np.bincount(train_labels, minlength=NUM_CLASSES),
        num_classes=NUM_CLASSES,
        mesh=_mesh(),
    )
    ctx = common.StageContext(config, workdir, data.mesh, data, jax.random.key(config.seed))
    net = classifier()
    common.save_module(ctx, "stage1", "encoder", net.encoder)
    common.save_module(ctx, "probe", "head", net.head)
    return ctx


def stage_setup(
    ctx: common.StageContext, stage: str, float64: bool = False
) -> train_lib.TrainSetup:
    """``make_setup`` of the probe or stage 2, its fresh head (the released code's probe and
    stage 2 start from a new linear layer) replaced by the seeded one; ``float64``: the model
    then cast to float64 (:func:`to_float64`, inside ``jax.enable_x64(True)``)."""
    setup = STAGES[stage].make_setup(ctx)
    nnx.update(setup.model.head, nnx.state(classifier().head))
    if float64:
        to_float64(setup.model)
    return setup


def to_float64(model: nnx.Module) -> nnx.Module:
    """``model`` (in place) computing and holding every float variable in float64: each layer's
    compute and parameter dtype set to float64 (a ``None`` one follows its inputs), its values
    cast. Needs ``jax_enable_x64``; the float64 half of row e (both sides in float64)."""
    if not jax.config.jax_enable_x64:
        raise RuntimeError("to_float64 needs float64: run it inside jax.enable_x64(True)")
    for _, layer in nnx.iter_modules(model):
        for attr in ("dtype", "param_dtype"):
            if getattr(layer, attr, None) is not None:
                setattr(layer, attr, jnp.float64)
    floating = lambda v: jnp.issubdtype(v.dtype, jnp.floating)
    cast = lambda v: jnp.asarray(v, jnp.float64) if floating(v) else v
    nnx.update(model, jax.tree.map(cast, nnx.state(model)))
    return model


def _view(key, batch, v=0):
    """The parity batch as it is: the augmentation is row f's."""
    return batch["images"]


def stage_optimizer(setup: train_lib.TrainSetup, lr: float, num_steps: int):
    """The stage's optimiser (``setup.optim``: AdamW, betas, weight decay and its groups) with
    the schedule pinned: cosine from ``lr`` over ``num_steps``, no warm-up (a run's first step
    has learning rate 0)."""
    optim = mlc.ConfigDict(dict(setup.optim.to_dict(), lr=lr, warmup_epochs=0.0))
    tx, _ = train_lib.make_optimizer(
        optim, batch_size=optim.lr_base_batch, num_steps=num_steps, steps_per_epoch=1
    )
    return tx


def stage_step(setup: train_lib.TrainSetup, images_: np.ndarray, y: np.ndarray):
    """One step of the stage's train step (``train_lib.make_train_step`` of its model,
    trainable filter and loss) at ``STEP["lr"]``.

    Returns:
      (loss, parameters after the step by path, batch statistics after the step by path).
    """
    tx = stage_optimizer(setup, STEP["lr"], 1)
    graphdef, state = train_lib.init_train_state(setup.model, tx, setup.trainable)
    state = jax.tree.map(jnp.array, state)  # a copy: the step donates it, the setup stays
    loss = lambda model, batch, key: setup.loss(model, batch, key, _view)
    step = train_lib.make_train_step(graphdef, tx, lambda data, s: data, loss, _mesh())
    state, metrics = step(state, {"images": images_, "labels": y}, jax.random.key(0))
    merged = train_lib.merge_model(graphdef, jax.device_get(state))
    return float(metrics["loss"]), flat_params(merged), flat_params(merged, nnx.BatchStat)


def _flat(state) -> dict[str, np.ndarray]:
    return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(state)}


def stage_grads(setup: train_lib.TrainSetup, images_: np.ndarray, y: np.ndarray):
    """The stage's loss and its gradients on the parity batch, as its train step takes them
    (the trainable variables of ``setup.trainable``; BatchNorm as the stage's model runs it).

    Returns:
      (loss, gradients by path, BatchNorm statistics after the forward pass by path).
    """
    graphdef, params, stats, rest = train_lib.split_model(setup.model, setup.trainable)

    def loss(params, stats, batch):  # stats differentiated too: BatchNorm mutates them
        model = nnx.merge(graphdef, params, stats, rest)
        value, _ = setup.loss(model, batch, jax.random.key(0), _view)
        return value, nnx.state(model, nnx.BatchStat)

    # The images are arguments, not constants: XLA constant-folds a closed-over batch through
    # the convolutions for tens of seconds.
    grad_fn = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    (value, after), (grads, _) = jax.jit(grad_fn)(params, stats, {"images": images_, "labels": y})
    return float(value), _flat(grads), _flat(after)


def decay_only(setup: train_lib.TrainSetup) -> dict[str, float]:
    """``||p_T - p_0|| / ||p_0||`` of every trained tensor after ``DECAY["steps"]`` updates of
    the stage's optimiser (:func:`stage_optimizer` at ``DECAY["lr"]``) on zero gradients:
    Adam's part is then 0, and what moves is the decoupled weight decay alone."""
    tx = stage_optimizer(setup, DECAY["lr"], DECAY["steps"])
    params = train_lib.split_model(setup.model, setup.trainable)[1]
    zeros = jax.tree.map(jnp.zeros_like, params)

    @jax.jit
    def update(p, opt_state):
        updates, opt_state = tx.update(zeros, opt_state, p)
        return optax.apply_updates(p, updates), opt_state

    p, opt_state = params, tx.init(params)
    for _ in range(DECAY["steps"]):
        p, opt_state = update(p, opt_state)
    before, after = _flat(params), _flat(p)
    return {
        k: float(np.linalg.norm(after[k] - before[k]) / np.linalg.norm(before[k])) for k in before
    }


def uniform_inclusion_counts(n: int, k: int, draws: int) -> np.ndarray:
    """How often each of ``n`` items is in our ``sampler="uniform"`` k-subset, over draws."""
    valid = jnp.ones(n, bool)
    keys = jax.random.split(jax.random.key(SEED), draws)
    sel = jax.vmap(
        lambda key: dpp.sample_ip_dpp(key, jnp.ones(n), k, "reference", "uniform", mask=valid)
    )(keys)
    return np.asarray(sel).sum(0).astype(np.float64)


def fixture_path(name: str) -> str:
    return os.path.join(FIXTURES, name)


def save_json(name: str, payload) -> None:
    os.makedirs(FIXTURES, exist_ok=True)
    with open(fixture_path(name), "w") as f:
        json.dump(payload, f, indent=1, sort_keys=True)


def load_json(name: str):
    with open(fixture_path(name)) as f:
        return json.load(f)


def save_npy(name: str, array: np.ndarray) -> None:
    os.makedirs(FIXTURES, exist_ok=True)
    np.save(fixture_path(name), array)


def load_npy(name: str) -> np.ndarray:
    return np.load(fixture_path(name))


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (0 when both are 0)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref))
    return float(np.max(np.abs(ours - ref)) / scale) if scale else float(np.max(np.abs(ours)))


def param_digest(params: dict[str, np.ndarray], n: int = 64) -> dict[str, list[float]]:
    """Per parameter: sum, L2 norm and ``n`` seeded entries (a fixture-sized fingerprint)."""
    out = {}
    for name, value in sorted(params.items()):
        flat = np.asarray(value, np.float64).reshape(-1)
        pick = _path_rng(0, (name,)).choice(flat.size, min(n, flat.size), replace=False)
        out[name] = [float(flat.sum()), float(np.linalg.norm(flat))] + flat[pick].tolist()
    return out


# A gradient's fingerprint: its norm, its largest |entry|, PROJECTIONS projections on seeded
# Gaussian directions (each moves by about ||difference|| when the tensor changes: a
# full-tensor comparison in a few numbers) and SAMPLES seeded entries (all of a smaller tensor).
PROJECTIONS, SAMPLES = 8, 256
WIDTH = 2 + PROJECTIONS + SAMPLES


def fingerprint(values: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """(sorted names, float64 [T, WIDTH] rows, NaN-padded where a tensor has < SAMPLES entries)."""
    names, rows = sorted(values), np.full((len(values), WIDTH), np.nan)
    for i, name in enumerate(names):
        flat = np.asarray(values[name], np.float64).reshape(-1)
        rng = _path_rng(1, (name,))
        proj = [flat @ rng.standard_normal(flat.size, np.float32) for _ in range(PROJECTIONS)]
        pick = np.sort(rng.choice(flat.size, min(SAMPLES, flat.size), replace=False))
        rows[i, : 2 + PROJECTIONS] = [np.linalg.norm(flat), np.abs(flat).max(), *proj]
        rows[i, 2 + PROJECTIONS : 2 + PROJECTIONS + len(pick)] = flat[pick]
    return names, rows


def fingerprint_errors(ours: dict[str, np.ndarray], names: list[str], ref: np.ndarray) -> dict:
    """Per tensor, the worst of: relative error of the norm and of the largest |entry|, error
    of the projections relative to the reference norm (about the relative L2 difference of
    the whole tensors) and of the sampled entries relative to the reference's largest |entry|
    (each tensor scaled by itself). A tensor that is 0 in the reference: the largest |entry|
    of ours."""
    if sorted(ours) != list(names):
        raise ValueError(f"tensors differ: {sorted(set(ours) ^ set(names))}")
    _, mine = fingerprint(ours)
    out = {}
    for name, a, b in zip(names, mine, ref):
        norm, top = b[0], b[1]
        if top == 0:
            out[name] = float(a[1])
            continue
        valid = ~np.isnan(b)
        k = 2 + PROJECTIONS
        out[name] = float(
            max(
                abs(a[0] - norm) / norm,
                abs(a[1] - top) / top,
                np.max(np.abs(a[2:k] - b[2:k])) / norm,
                np.max(np.abs(a[k:][valid[k:]] - b[k:][valid[k:]])) / top,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Row f: the SimCLR augmentation by distribution (the two sides' RNGs differ).

# Draws per strength; strengths of the released configs (CIFAR-10 s = 2, CIFAR-100 s = 1);
# the synthetic images (`augment_images`) of the output statistics that CI checks.
AUGMENT = dict(draws=2000, strengths=(1.0, 2.0), seed=SEED + 7, image_seed=SEED + 8)
# Quantile levels the fixture stores for every continuous statistic.
LEVELS = np.linspace(0.0, 1.0, 21)
# The 24 orders of the colour-jitter ops (0 brightness, 1 contrast, 2 saturation, 3 hue).
ORDERS = list(itertools.permutations(range(4)))


def our_simclr_params(strength: float, draws: int, seed: int, size: int = 32) -> dict:
    """The crop, jitter and grayscale draws of ``draws`` SimCLR views (``augment.simclr``'s keys).

    Returns:
      dict of NumPy arrays: ``area`` and ``aspect`` (crop area / image area, width / height),
      ``jitter`` and ``gray`` (bool), ``brightness``, ``contrast``, ``saturation``, ``hue``
      (the factors and shift a view would apply) and ``order`` (index into ``ORDERS``).
    """
    from ltr_jax.data.input import augment

    keys = jax.random.split(jax.random.key(seed), draws)  # the per-example keys of simclr()
    p = jax.device_get(jax.vmap(lambda k: augment.sample_simclr(k, size, size, strength))(keys))
    box, color = np.asarray(p.box), p.color
    hue_at, blends = np.asarray(color.hue_position), np.asarray(color.blend_order)
    orders = [tuple(b[:h].tolist()) + (3,) + tuple(b[h:].tolist()) for h, b in zip(hue_at, blends)]
    factors = np.asarray(color.factors)
    return dict(
        area=box[:, 2] * box[:, 3] / size**2,
        aspect=box[:, 3] / box[:, 2],
        jitter=np.asarray(p.jitter),
        gray=np.asarray(p.gray),
        brightness=factors[:, 0],
        contrast=factors[:, 1],
        saturation=factors[:, 2],
        hue=np.asarray(color.hue),
        order=np.array([ORDERS.index(o) for o in orders]),
    )


def output_stats(views: np.ndarray) -> dict:
    """Per-view statistics of [N, H, W, 3] outputs in [0, 1]: channel ``mean`` and ``std``
    ([N, 3]), mean HSV ``saturation`` and ``value`` ([N]) and ``gray`` (R = G = B everywhere)."""
    views = np.asarray(views, np.float64)
    maxc, minc = views.max(-1), views.min(-1)
    sat = np.where(maxc > 0, (maxc - minc) / np.where(maxc > 0, maxc, 1.0), 0.0)
    return dict(
        mean=views.mean((1, 2)),
        std=views.std((1, 2)),
        saturation=sat.mean((1, 2)),
        value=maxc.mean((1, 2)),
        gray=np.all(maxc == minc, axis=(1, 2)),
    )


def augment_images(seed: int, n: int) -> np.ndarray:
    """uint8 [n, 32, 32, 3] synthetic images for row f's output statistics in CI: a smooth
    colour field (bilinear over a 5 x 5 grid of random colours), a random saturation and
    brightness, pixel noise. Image i depends only on (seed, i): any prefix is the same."""
    t = np.linspace(0.0, 4.0, 32)
    i0 = np.minimum(np.floor(t).astype(int), 3)
    f = (t - i0)[:, None, None]
    out = np.empty((n, 32, 32, 3), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        grid = rng.uniform(0.0, 1.0, (5, 5, 3))
        rows = grid[i0] * (1 - f) + grid[i0 + 1] * f  # [32, 5, 3]
        img = rows[:, i0] * (1 - f[:, 0])[None] + rows[:, i0 + 1] * f[:, 0][None]
        gray = img.mean(-1, keepdims=True)
        img = (gray + rng.uniform(0.0, 1.0) * (img - gray)) * rng.uniform(0.3, 1.0)
        img = img + rng.normal(0.0, 0.03, img.shape)
        out[i] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return out


def output_fixture_stats(stats: dict) -> dict:
    """Quantiles (``LEVELS``) of the four pixel-output statistics of :func:`output_stats`
    (per channel for ``mean`` and ``std``) and the share of gray outputs."""
    q = lambda x: np.quantile(np.asarray(x, np.float64), LEVELS).tolist()
    return dict(
        mean=[q(stats["mean"][:, c]) for c in range(3)],
        std=[q(stats["std"][:, c]) for c in range(3)],
        saturation=q(stats["saturation"]),
        value=q(stats["value"]),
        gray_rate=float(np.mean(stats["gray"])),
        views=int(len(stats["gray"])),
    )


def augment_fixture_stats(params: dict, jitter_rate: float, gray_rate: float) -> dict:
    """What ``augment.json`` holds for one strength: quantiles of every continuous draw
    (jitter factors over the views that were jittered), how often each of the 24 orders of
    the jitter ops was drawn, the share of views jittered and the share of views of colour
    images made gray."""
    on = params["jitter"]
    q = lambda x: np.quantile(np.asarray(x, np.float64), LEVELS).tolist()
    return dict(
        area=q(params["area"]),
        aspect=q(params["aspect"]),
        **{k: q(params[k][on]) for k in ("brightness", "contrast", "saturation", "hue")},
        order_counts=np.bincount(params["order"][on], minlength=len(ORDERS)).tolist(),
        jitter_rate=float(jitter_rate),
        gray_rate=float(gray_rate),
        draws=int(len(params["area"])),
    )


def cdf_gap(sample: np.ndarray, quantiles: list[float]) -> float:
    """Largest distance of each level l (``LEVELS``, ends excluded) from the share of
    ``sample`` at the fixture's quantile q_l: 0 when share(< q_l) <= l <= share(<= q_l), so an
    atom (e.g. the saturation 0 of gray views) is read right; a Kolmogorov-Smirnov distance
    read at 19 points."""
    sample = np.sort(np.asarray(sample, np.float64))
    inner, levels = np.asarray(quantiles)[1:-1], LEVELS[1:-1]
    below = np.searchsorted(sample, inner, side="left") / len(sample)
    at_most = np.searchsorted(sample, inner, side="right") / len(sample)
    return float(np.max(np.maximum(np.maximum(below - levels, levels - at_most), 0.0)))
