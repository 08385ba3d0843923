"""Tests for ltr_jax.data.input.augment: batch recipes, per-op NumPy references, sharding."""

import colorsys
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ltr_jax.data.input import augment

OPS = ("brightness", "contrast", "saturation", "hue")
simclr_jit = jax.jit(augment.simclr, static_argnames=("strength", "min_scale"))
simclr_s2 = functools.partial(simclr_jit, strength=2.0)
crop_flip_jit = jax.jit(augment.crop_flip, static_argnames=("pad",))


@functools.partial(jax.jit, static_argnums=range(1, 5))
def sample_simclr_batch(keys, height, width, strength, min_scale):
    sample = functools.partial(
        augment.sample_simclr, height=height, width=width, strength=strength, min_scale=min_scale
    )
    return jax.vmap(sample)(keys)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def sample_box_batch(keys, height, width, scale):
    return jax.vmap(lambda k: augment.sample_crop_box(k, height, width, scale))(keys)


def _images(seed, shape=(8, 32, 32, 3)):
    return jnp.asarray(np.random.default_rng(seed).random(shape, np.float32))


# --- NumPy references ------------------------------------------------------------------------


def np_gray(img):
    return 0.299 * img[..., 0:1] + 0.587 * img[..., 1:2] + 0.114 * img[..., 2:3]


def np_color_op(img, op, value):
    img = np.asarray(img, np.float64)
    if op == "brightness":
        return np.clip(value * img, 0, 1)
    if op == "contrast":
        return np.clip(value * img + (1 - value) * np_gray(img).mean(), 0, 1)
    if op == "saturation":
        return np.clip(value * img + (1 - value) * np_gray(img), 0, 1)
    out = np.empty_like(img)
    for idx in np.ndindex(img.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*img[idx])
        out[idx] = colorsys.hsv_to_rgb((h + value) % 1.0, s, v)
    return out


def np_blur(img, sigma):
    kernel = np.exp(-0.5 * (np.arange(-1, 2) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(np.asarray(img, np.float64), ((1, 1), (1, 1), (0, 0)), mode="reflect")
    out = np.zeros(img.shape)
    for dy, dx in itertools.product(range(3), range(3)):
        window = padded[dy : dy + img.shape[0], dx : dx + img.shape[1]]
        out += kernel[dy] * kernel[dx] * window
    return out


def np_resized_crop(img, box):
    top, left, bh, bw = (int(v) for v in box)
    crop = np.asarray(img, np.float64)[top : top + bh, left : left + bw]
    out_h, out_w = img.shape[:2]
    out = np.zeros((out_h, out_w, img.shape[2]))
    for r, c in itertools.product(range(out_h), range(out_w)):
        y = min(max((r + 0.5) * bh / out_h - 0.5, 0.0), bh - 1)
        x = min(max((c + 0.5) * bw / out_w - 0.5, 0.0), bw - 1)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1, x1 = min(y0 + 1, bh - 1), min(x0 + 1, bw - 1)
        fy, fx = y - y0, x - x0
        top_row = (1 - fx) * crop[y0, x0] + fx * crop[y0, x1]
        bottom_row = (1 - fx) * crop[y1, x0] + fx * crop[y1, x1]
        out[r, c] = (1 - fy) * top_row + fy * bottom_row
    return out


def np_windows(img, pad):
    """All (2 pad + 1)^2 x 2 crop/flip candidates of one image, [N, H, W, C]."""
    h, w, _ = img.shape
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
    wins = [padded[y : y + h, x : x + w] for y in range(2 * pad + 1) for x in range(2 * pad + 1)]
    wins = np.stack(wins)
    return np.concatenate([wins, wins[:, :, ::-1]])


# --- Batch recipes ---------------------------------------------------------------------------


def test_to_float():
    x = jnp.asarray([[0, 128, 255]], jnp.uint8)
    y = augment.to_float(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, [[0.0, 128 / 255, 1.0]])


RECIPES = {
    "simclr": simclr_s2,
    "crop_flip": crop_flip_jit,
}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_shape_dtype_range_and_determinism(name):
    fn = RECIPES[name]
    x = _images(0)
    out = fn(jax.random.key(1), x)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_array_equal(out, fn(jax.random.key(1), x))
    assert not np.allclose(out, fn(jax.random.key(2), x))


@pytest.mark.parametrize(
    "batch_fn, image_fn",
    [
        (simclr_s2, functools.partial(augment.simclr_image, strength=2.0)),
        (crop_flip_jit, augment.crop_flip_image),
    ],
    ids=["simclr", "crop_flip"],
)
def test_per_example_keys(batch_fn, image_fn):
    x = jnp.broadcast_to(_images(3, (1, 32, 32, 3)), (8, 32, 32, 3))  # one image, 8 copies
    key = jax.random.key(4)
    out = np.asarray(batch_fn(key, x))
    keys = jax.random.split(key, 8)
    for i in (0, 5):
        np.testing.assert_allclose(out[i], jax.jit(image_fn)(keys[i], x[i]), atol=1e-5)
    # The same image gets a different transform in every slot.
    assert len({out[i].tobytes() for i in range(8)}) == 8


def test_crop_flip_is_a_window_and_flip_is_fair():
    pad, n = 4, 512
    x = np.asarray(_images(5, (n, 8, 8, 3)))
    out = np.asarray(crop_flip_jit(jax.random.key(6), jnp.asarray(x), pad=pad))
    flips, offsets = [], []
    for img, res in zip(x, out, strict=True):
        matches = np.flatnonzero(np.all(np_windows(img, pad) == res, axis=(1, 2, 3)))
        assert matches.size == 1
        flip, offset = divmod(int(matches[0]), (2 * pad + 1) ** 2)
        flips.append(flip)
        offsets.append(offset)
    assert abs(np.mean(flips) - 0.5) < 0.08
    rows, cols = np.divmod(offsets, 2 * pad + 1)
    assert set(rows) == set(cols) == set(range(2 * pad + 1))  # all of 0..2*pad are drawn


def test_translate_flip_matches_numpy():
    img = np.asarray(_images(7, (1, 6, 5, 3))[0])
    windows = np_windows(img, 2)
    for oy, ox, flip in [(0, 0, False), (4, 1, True), (2, 3, False), (4, 4, True)]:
        out = augment.translate_flip(jnp.asarray(img), jnp.asarray([oy, ox]), flip, pad=2)
        np.testing.assert_array_equal(out, windows[flip * 25 + oy * 5 + ox])


# --- Colour ops ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, fn",
    [
        ("brightness", augment.adjust_brightness),
        ("contrast", augment.adjust_contrast),
        ("saturation", augment.adjust_saturation),
    ],
)
@pytest.mark.parametrize("factor", [0.0, 0.4, 1.0, 1.7])
def test_blend_ops_match_numpy(op, fn, factor):
    img = _images(8, (1, 6, 7, 3))[0]
    np.testing.assert_allclose(fn(img, factor), np_color_op(img, op, factor), atol=1e-6)


def test_grayscale_matches_numpy():
    img = _images(9, (1, 6, 7, 3))[0]
    expected = np.broadcast_to(np_gray(np.asarray(img, np.float64)), img.shape)
    np.testing.assert_allclose(augment.grayscale(img), expected, atol=1e-6)


def _hue_test_pixels():
    rand = np.asarray(_images(10, (1, 200, 1, 3))[0, :, 0])
    special = np.asarray(
        [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]],
        np.float32,
    )
    return np.concatenate([rand, special])  # [207, 3]


def test_hsv_matches_colorsys_and_round_trips():
    rgb = _hue_test_pixels()
    hsv = np.asarray(augment.rgb_to_hsv(jnp.asarray(rgb)))
    expected = np.asarray([colorsys.rgb_to_hsv(*p) for p in rgb.astype(np.float64)])
    np.testing.assert_allclose(hsv, expected, atol=1e-5)
    np.testing.assert_allclose(augment.hsv_to_rgb(jnp.asarray(hsv)), rgb, atol=1e-5)


@pytest.mark.parametrize("delta", [0.0, 0.13, -0.4, 0.5])
def test_adjust_hue_matches_colorsys(delta):
    rgb = _hue_test_pixels()[:, None, :]  # [N, 1, 3]
    out = augment.adjust_hue(jnp.asarray(rgb), delta)
    np.testing.assert_allclose(out, np_color_op(rgb, "hue", delta), atol=1e-5)
    if delta == 0.0:
        np.testing.assert_allclose(out, rgb, atol=1e-6)


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2), (2, 0, 3, 1)])
def test_color_jitter_order_matches_numpy(order):
    img = _images(11, (1, 5, 6, 3))[0]
    values = {"brightness": 1.5, "contrast": 0.5, "saturation": 1.8, "hue": 0.27}
    blends = [op for op in order if op != 3]
    params = augment.ColorJitterParams(
        factors=jnp.asarray([values[OPS[i]] for i in range(3)]),
        hue=jnp.asarray(values["hue"]),
        hue_position=jnp.asarray(order.index(3)),
        blend_order=jnp.asarray(blends),
    )
    expected = np.asarray(img, np.float64)
    for op in order:
        expected = np_color_op(expected, OPS[op], values[OPS[op]])
    np.testing.assert_allclose(augment.apply_color_jitter(img, params), expected, atol=1e-5)


def _jitter_step_with_cond(step, planes, params):
    """One step of the colour jitter as it was before the static unroll: a traced step index
    and a `lax.cond` choosing the hue shift or a blend."""

    def blend(planes):
        before = step < 3
        slot = jnp.where(before, step, step - 4)
        op = params.blend_order[slot]
        active = jnp.where(before, slot < params.hue_position, slot >= params.hue_position)
        return augment._blend_op(planes, op, jnp.where(active, params.factors[op], 1.0))

    return jax.lax.cond(step == 3, lambda p: augment._shift_hue(p, params.hue), blend, planes)


def _jitter_with_loop_and_cond(image, params):
    """The colour jitter as it was: a `fori_loop` over the seven steps."""
    body = lambda step, planes: _jitter_step_with_cond(step, planes, params)
    return augment._on_planes(lambda p: jax.lax.fori_loop(0, 7, body, p), image)


def test_unrolled_color_jitter_matches_the_loop_and_has_no_control_flow():
    """A step is bit-identical to the loop's step; the chain is not bit-identical: XLA:CPU
    sums the contrast's mean and contracts the blends (FMA) differently inside a while body
    than in straight-line code (observed: a third of the pixels differ, by at most 4.8e-7)."""
    images = _images(12, (16, 8, 8, 3))
    params = jax.vmap(lambda k: augment.sample_color_jitter(k, 1.0))(
        jax.random.split(jax.random.key(3), 16)
    )  # orders, hue positions and factors drawn as in training
    for step in (0, 3, 6):  # a blend slot before the hue shift, the hue shift, one after it
        new = lambda x, p, s=step: augment._on_planes(lambda q: augment._jitter_step(s, q, p), x)
        old = lambda x, p, s=step: augment._on_planes(
            lambda q: _jitter_step_with_cond(jnp.int32(s), q, p), x
        )
        np.testing.assert_array_equal(
            jax.jit(jax.vmap(new))(images, params), jax.jit(jax.vmap(old))(images, params)
        )
    new = jax.jit(jax.vmap(augment.apply_color_jitter))
    old = jax.jit(jax.vmap(_jitter_with_loop_and_cond))
    np.testing.assert_allclose(new(images, params), old(images, params), rtol=0, atol=2e-6)
    hlo = new.lower(images, params).compile().as_text()
    assert " conditional(" not in hlo and " while(" not in hlo
    simclr = jax.jit(lambda k, x: augment.simclr(k, x, 2.0))
    hlo = simclr.lower(jax.random.key(0), images).compile().as_text()
    assert " conditional(" not in hlo
    loops = [line for line in hlo.splitlines() if " while(" in line]
    assert all("threefry" in x or "_uniform" in x for x in loops)  # CPU's random bits only


# --- Blur and resized crop -------------------------------------------------------------------


def test_blur_of_constant_is_constant():
    img = jnp.full((7, 9, 3), 0.37, jnp.float32)
    np.testing.assert_allclose(augment.gaussian_blur(img, 1.3), img, atol=1e-6)


@pytest.mark.parametrize("sigma", [0.1, 0.7, 2.0])
def test_blur_matches_numpy(sigma):
    img = _images(12, (1, 7, 9, 3))[0]
    np.testing.assert_allclose(augment.gaussian_blur(img, sigma), np_blur(img, sigma), atol=1e-6)


def test_resized_crop_full_box_is_identity():
    img = _images(13, (1, 32, 32, 3))[0]
    out = augment.resized_crop(img, jnp.asarray([0.0, 0.0, 32.0, 32.0]))
    np.testing.assert_allclose(out, img, atol=1e-6)


@pytest.mark.parametrize("box", [(0, 0, 10, 12), (3, 5, 7, 4), (6, 2, 10, 6), (1, 1, 1, 3)])
def test_resized_crop_matches_numpy(box):
    img = _images(14, (1, 16, 12, 3))[0]
    out = augment.resized_crop(img, jnp.asarray(box, jnp.float32))
    np.testing.assert_allclose(out, np_resized_crop(img, box), atol=1e-5)


def test_crop_box_samples_are_valid():
    keys = jax.random.split(jax.random.key(15), 2000)
    boxes = np.asarray(sample_box_batch(keys, 32, 32, (0.08, 1.0)))
    top, left, h, w = boxes.T
    np.testing.assert_array_equal(boxes, np.round(boxes))
    assert (top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() < 0.12 and area.max() > 0.9 and 0.35 < area.mean() < 0.6
    ratio = w / h
    assert ratio.min() > 0.6 and ratio.max() < 1.6  # 3/4..4/3 up to rounding of small boxes
    assert top.max() > 20 and left.max() > 20  # offsets spread over the slack


def test_crop_box_fallback_is_centre_crop():
    keys = jax.random.split(jax.random.key(16), 4)
    full = sample_box_batch(keys, 32, 32, (1.0, 1.0))
    np.testing.assert_array_equal(full, np.tile([0, 0, 32, 32], (4, 1)))
    # A 16x64 image fits no candidate of full area; torchvision's fallback is 16 x round(16*4/3).
    np.testing.assert_array_equal(
        sample_box_batch(keys, 16, 64, (1.0, 1.0)), np.tile([0, 21, 16, 21], (4, 1))
    )


# --- SimCLR parameters and composition ------------------------------------------------------


def test_simclr_parameter_distribution():
    keys = jax.random.split(jax.random.key(17), 4000)
    params = sample_simclr_batch(keys, 32, 32, 3.0, 0.08)
    assert abs(float(params.flip.mean()) - 0.5) < 0.04
    assert abs(float(params.jitter.mean()) - 0.8) < 0.04
    assert abs(float(params.gray.mean()) - 0.2) < 0.04
    sigma = np.asarray(params.sigma)
    assert sigma.min() >= 0.1 and sigma.max() <= 2.0 and abs(sigma.mean() - 1.05) < 0.05
    color = params.color
    factors = np.asarray(color.factors)
    assert factors.min() >= 0.0 and factors.max() <= 3.4 and factors.max() > 3.2
    hue = np.asarray(color.hue)  # 0.2 * 3 = 0.6 is clamped to 0.5
    assert hue.min() >= -0.5 and hue.max() <= 0.5 and np.abs(hue).max() > 0.45
    # The 24 orders of the four ops, each about 4000 / 24 = 167 times.
    order_ids = np.asarray(color.hue_position) * 100 + np.asarray(color.blend_order) @ [9, 3, 1]
    _, counts = np.unique(order_ids, return_counts=True)
    assert counts.size == 24 and counts.min() > 110
    np.testing.assert_array_equal(
        np.sort(np.asarray(color.blend_order)), np.tile([0, 1, 2], (4000, 1))
    )


def test_strength_zero_full_crop_only_blurs():
    x = _images(18)
    key = jax.random.key(19)
    out = np.asarray(simclr_jit(key, x, strength=0.0, min_scale=1.0))
    keys = jax.random.split(key, 8)
    params = sample_simclr_batch(keys, 32, 32, 0.0, 1.0)
    np.testing.assert_array_equal(params.box, np.tile([0, 0, 32, 32], (8, 1)))
    np.testing.assert_array_equal(params.color.factors, 1.0)
    np.testing.assert_array_equal(params.color.hue, 0.0)
    for i in range(8):
        img = np.asarray(x[i])[:, ::-1] if params.flip[i] else np.asarray(x[i])
        img = np.broadcast_to(np_gray(img), img.shape) if params.gray[i] else img
        np.testing.assert_allclose(out[i], np_blur(img, float(params.sigma[i])), atol=1e-5)


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_batch_matches_unsharded(axis_type):
    axis_types = (getattr(jax.sharding.AxisType, axis_type),)
    mesh = jax.make_mesh((8,), ("data",), axis_types=axis_types)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x = _images(20)
    key = jax.random.key(21)
    out = simclr_s2(key, jax.device_put(x, sharding))
    assert out.sharding.is_equivalent_to(sharding, x.ndim)
    np.testing.assert_allclose(out, simclr_s2(key, x), atol=1e-6)
    out_cf = crop_flip_jit(key, jax.device_put(x, sharding))
    np.testing.assert_array_equal(out_cf, crop_flip_jit(key, x))
