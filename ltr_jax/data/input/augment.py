"""On-device image augmentation: the CIFAR crop-and-flip recipe and the SimCLR recipe (SPEC §2).

Every public batch function is pure and jittable: it takes a PRNG key and a float32 batch in
[0, 1] of shape [B, H, W, C] (C = 3 for the colour ops) and returns a batch of the same shape,
dtype and range. Each example gets its own key (the batch key is split B ways and a per-image
function is vmapped), so the result does not depend on how the batch is sharded.

Randomness is drawn by `sample_*` functions and applied by deterministic ops with explicit
parameters (`resized_crop`, `adjust_brightness`, `adjust_hue`, `gaussian_blur`, ...). The ops
follow torchvision's tensor semantics (clip to [0, 1] after every colour op, half-pixel-centre
bilinear resizing of the crop, reflect padding for the blur) so they can be tested against NumPy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

# ITU-R 601 luma weights (PIL's "L" conversion).
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
_HIGHEST = jax.lax.Precision.HIGHEST
_NUM_CROP_UNIFORMS = 22  # 10 tries x (area, ratio) + 2 offsets


class ColorJitterParams(NamedTuple):
    """Parameters of one colour-jitter draw (torchvision `ColorJitter` semantics).

    Attributes:
        factors: [3] brightness, contrast and saturation factors (1 = identity).
        hue: [] hue shift in turns, in [-0.5, 0.5] (0 = identity).
        hue_position: [] int in 0..3, how many of the three blend ops run before the hue op.
        blend_order: [3] int permutation of (0 brightness, 1 contrast, 2 saturation).
    """

    factors: jax.Array
    hue: jax.Array
    hue_position: jax.Array
    blend_order: jax.Array


class SimCLRParams(NamedTuple):
    """Parameters of one SimCLR view of one image.

    Attributes:
        box: [4] float crop box (top, left, height, width) in whole pixels.
        flip: [] bool, mirror left-right.
        jitter: [] bool, apply the colour jitter.
        color: the colour-jitter parameters (used only when `jitter`).
        gray: [] bool, convert to grayscale.
        sigma: [] float, standard deviation of the 3x3 Gaussian blur.
    """

    box: jax.Array
    flip: jax.Array
    jitter: jax.Array
    color: ColorJitterParams
    gray: jax.Array
    sigma: jax.Array


def to_float(images: jax.Array) -> jax.Array:
    """Converts uint8 images in 0..255 to float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def _lerp(u: jax.Array, low: jax.Array | float, high: jax.Array | float) -> jax.Array:
    """Maps uniforms in [0, 1) to [low, high)."""
    return low + (high - low) * u


def _randint(u: jax.Array, size: jax.Array | int) -> jax.Array:
    """Maps uniforms in [0, 1) to integers uniform in 0..size-1 (as float32)."""
    return jnp.minimum(jnp.floor(u * size), size - 1)


def _per_example(fn: Callable, key: jax.Array, images: jax.Array) -> jax.Array:
    """Applies `fn(key_i, image_i)` to every image with its own split of `key`."""
    keys = jax.random.split(key, images.shape[0])  # [B]
    # Under an Explicit mesh axis vmap needs the keys sharded like the batch (no-op otherwise).
    sharding = jax.typeof(images).sharding
    if sharding.spec[0] is not None:
        spec = jax.sharding.PartitionSpec(sharding.spec[0])
        keys = jax.sharding.reshard(keys, sharding.update(spec=spec))
    return jax.vmap(fn)(keys, images)


# --- CIFAR crop + flip ----------------------------------------------------------------------


def hflip(image: jax.Array, flip: jax.Array) -> jax.Array:
    """Mirrors an [H, W, C] image left-right where `flip` is true."""
    return jnp.where(flip, image[:, ::-1], image)


def translate_flip(image: jax.Array, offset: jax.Array, flip: jax.Array, pad: int = 4) -> jax.Array:
    """Zero-pads an [H, W, C] image by `pad`, cuts the HxW window at `offset`, maybe flips it.

    Args:
        image: [H, W, C] float image.
        offset: [2] int (row, column) of the window's top-left corner in the padded image,
            each in 0..2*pad.
        flip: [] bool, mirror the window left-right.
        pad: zero padding on every side.

    Returns:
        The [H, W, C] window.
    """
    height, width, channels = image.shape
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))  # [H+2p, W+2p, C]
    window = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), (height, width, channels))
    return hflip(window, flip)


def sample_crop_flip(key: jax.Array, pad: int = 4) -> tuple[jax.Array, jax.Array]:
    """Draws a uniform window offset in 0..2*pad (per axis) and a fair coin for the flip."""
    u = jax.random.uniform(key, (3,))  # one draw: each threefry call is a lot of HLO
    offset = _randint(u[:2], 2 * pad + 1).astype(jnp.int32)
    return offset, u[2] < 0.5


def crop_flip_image(key: jax.Array, image: jax.Array, pad: int = 4) -> jax.Array:
    """The CIFAR recipe on one [H, W, C] image: pad, random crop, random horizontal flip."""
    offset, flip = sample_crop_flip(key, pad)
    return translate_flip(image, offset, flip, pad)


def crop_flip(key: jax.Array, images: jax.Array, pad: int = 4) -> jax.Array:
    """The CIFAR recipe on a batch: zero-pad by `pad`, random HxW crop, horizontal flip p=0.5.

    Args:
        key: PRNG key; split into one key per example.
        images: [B, H, W, C] float32 images in [0, 1].
        pad: zero padding on every side (window offsets are uniform in 0..2*pad).

    Returns:
        [B, H, W, C] float32 augmented images.
    """
    return _per_example(functools.partial(crop_flip_image, pad=pad), key, images)


# --- Random resized crop --------------------------------------------------------------------


def center_box_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """torchvision's fallback crop size: the largest centred box with ratio inside `ratio`."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return int(round(width / min(ratio))), width
    if in_ratio > max(ratio):
        return height, int(round(height * max(ratio)))
    return height, width


def sample_crop_box(
    key: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    num_tries: int = 10,
) -> jax.Array:
    """Draws a torchvision `RandomResizedCrop` box, all tries at once.

    `num_tries` candidates (area fraction ~ U(scale), log aspect ratio ~ U(log ratio), sides
    rounded to whole pixels) are drawn together; the first that fits is used, else the centre
    crop fallback. The offset is uniform over the positions where the box fits.

    Returns:
        [4] float32 box (top, left, height, width), all whole numbers.
    """
    u = jax.random.uniform(key, (2 * num_tries + 2,))
    return _crop_box_from_uniforms(u, height, width, scale, ratio)


def _crop_box_from_uniforms(
    u: jax.Array,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> jax.Array:
    """`sample_crop_box` given its [2 T + 2] uniforms (T areas, T ratios, 2 offsets)."""
    num_tries = (u.shape[0] - 2) // 2
    area = height * width * _lerp(u[:num_tries], scale[0], scale[1])  # [T]
    aspect = jnp.exp(_lerp(u[num_tries : 2 * num_tries], math.log(ratio[0]), math.log(ratio[1])))
    box_w = jnp.round(jnp.sqrt(area * aspect))  # [T]
    box_h = jnp.round(jnp.sqrt(area / aspect))  # [T]
    valid = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    first = jnp.argmax(valid)
    found = valid[first]
    fallback_h, fallback_w = center_box_size(height, width, ratio)
    box_h = jnp.where(found, box_h[first], fallback_h)
    box_w = jnp.where(found, box_w[first], fallback_w)
    slack = jnp.stack([height - box_h, width - box_w])  # [2]
    offset = jnp.where(found, _randint(u[-2:], slack + 1), slack // 2)
    return jnp.stack([offset[0], offset[1], box_h, box_w]).astype(jnp.float32)


def _interp_matrix(start: jax.Array, length: jax.Array, out_size: int, in_size: int) -> jax.Array:
    """[out_size, in_size] bilinear weights resampling pixels [start, start + length).

    Half-pixel centres (torch `align_corners=False`); sample positions are clamped to the crop,
    so pixels outside the crop never contribute (torchvision crops before it resizes).
    """
    pos = start + (jnp.arange(out_size) + 0.5) * (length / out_size) - 0.5  # [out]
    pos = jnp.clip(pos, start, start + length - 1)
    return jnp.maximum(0.0, 1.0 - jnp.abs(pos[:, None] - jnp.arange(in_size)[None, :]))


def resized_crop(
    image: jax.Array, box: jax.Array, size: tuple[int, int] | None = None
) -> jax.Array:
    """Crops `box` from an [H, W, C] image and resizes it bilinearly to `size` (default H x W).

    Implemented as two small matmuls with interpolation matrices (no gather). There is no
    antialiasing, which only matters when the crop is larger than the output (never in the
    SimCLR recipe, where the output is the full image size).

    Args:
        image: [H, W, C] float image.
        box: [4] (top, left, height, width) in pixels, inside the image.
        size: output (height, width); the input's by default.

    Returns:
        [out_h, out_w, C] resized crop.
    """
    height, width, _ = image.shape
    out_h, out_w = size or (height, width)
    box = jnp.asarray(box, jnp.float32)
    rows = _interp_matrix(box[0], box[2], out_h, height)  # [out_h, H]
    cols = _interp_matrix(box[1], box[3], out_w, width)  # [out_w, W]
    return jnp.einsum("oh,hwc,pw->opc", rows, image, cols, precision=_HIGHEST)


def random_resized_crop_flip_image(key: jax.Array, image: jax.Array, size: int) -> jax.Array:
    """The ImageNet training recipe on one [H, W, C] image: `RandomResizedCrop` (area
    U(0.08, 1), ratio in [3/4, 4/3]) to ``size`` x ``size``, then a horizontal flip p=0.5."""
    height, width, _ = image.shape
    u = jax.random.uniform(key, (_NUM_CROP_UNIFORMS + 1,))
    box = _crop_box_from_uniforms(u[:-1], height, width, (0.08, 1.0), (3 / 4, 4 / 3))
    return hflip(resized_crop(image, box, (size, size)), u[-1] < 0.5)


def random_resized_crop_flip(key: jax.Array, images: jax.Array, size: int) -> jax.Array:
    """`random_resized_crop_flip_image` on a batch [B, H, W, C] -> [B, size, size, C]."""
    fn = functools.partial(random_resized_crop_flip_image, size=size)
    return _per_example(fn, key, images)


def centre_crop_resize(images: jax.Array, side: float, size: int) -> jax.Array:
    """The centred ``side`` x ``side`` box of every [H, W, C] image resized to ``size``.

    Evaluation from a decoded store: resize-to-R + centre-crop-``size`` of the original is
    the centred box of side ``S * size / R`` of the store's S x S square.
    """
    height, width, _ = images.shape[1:]
    box = jnp.asarray([(height - side) / 2, (width - side) / 2, side, side], jnp.float32)
    return jax.vmap(lambda image: resized_crop(image, box, (size, size)))(images)


# --- Colour ops -----------------------------------------------------------------------------
# Public ops take channels-last [..., 3] images; the work is done on channel planes [3, ...].
# XLA cancels the back-to-back transposes when ops are chained, and on CPU fused chains of
# colour ops ran ~4x faster on planes than with a minor channel axis of size 3.


def _on_planes(fn: Callable[[jax.Array], jax.Array], image: jax.Array) -> jax.Array:
    """Applies `fn: planes [C, ...] -> [C', ...]` to an [..., C] image, giving [..., C']."""
    return jnp.moveaxis(fn(jnp.moveaxis(image, -1, 0)), 0, -1)


def _luma(planes: jax.Array) -> jax.Array:
    """ITU-R 601 luma of [3, ...] planes, shape [...]."""
    return GRAY_WEIGHTS[0] * planes[0] + GRAY_WEIGHTS[1] * planes[1] + GRAY_WEIGHTS[2] * planes[2]


def _gray_planes(planes: jax.Array) -> jax.Array:
    """The luma of [3, ...] planes replicated to three planes."""
    return jnp.broadcast_to(_luma(planes), planes.shape)


def grayscale(image: jax.Array) -> jax.Array:
    """Grayscale [..., 3] image: the luma replicated to all three channels."""
    return _on_planes(_gray_planes, image)


def _blend(planes: jax.Array, target: jax.Array, factor: jax.Array) -> jax.Array:
    """torchvision's `_blend`: factor * image + (1 - factor) * target, clipped to [0, 1]."""
    return jnp.clip(factor * planes + (1.0 - factor) * target, 0.0, 1.0)


def adjust_brightness(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Multiplies an [H, W, 3] image by `factor`, clipped to [0, 1]."""
    return jnp.clip(factor * image, 0.0, 1.0)


def adjust_contrast(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Blends an [H, W, 3] image with the mean of its grayscale version."""
    return _on_planes(lambda planes: _blend(planes, jnp.mean(_luma(planes)), factor), image)


def adjust_saturation(image: jax.Array, factor: jax.Array) -> jax.Array:
    """Blends an [H, W, 3] image with its grayscale version."""
    return _on_planes(lambda planes: _blend(planes, _luma(planes), factor), image)


def _wrap(x: jax.Array, period: float) -> jax.Array:
    """x mod period via floor: XLA's float remainder is a scalar libm call on CPU, ~10x slower."""
    return x - period * jnp.floor(x / period)


def _hue_chroma(planes: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Hue in sextants (6 h, before wrapping), max and chroma of [3, ...] planes, each [...]."""
    red, green, blue = planes[0], planes[1], planes[2]
    maxc = jnp.maximum(jnp.maximum(red, green), blue)
    chroma = maxc - jnp.minimum(jnp.minimum(red, green), blue)
    # The max channel by index, ties to red then green (torchvision's maxc == r, then g): not
    # by `maxc == red`, which fails where XLA fuses and recomputes the planes' producer in
    # another rounding (seen with the unrolled colour jitter: wrong hue sector, errors 0.04).
    top = jnp.argmax(planes, axis=0)
    is_r = top == 0
    is_g = top == 1
    # torchvision's three masked sums, with one division: (g-b)/c, 2+(b-r)/c or 4+(r-g)/c.
    numerator = jnp.where(is_r, green - blue, jnp.where(is_g, blue - red, red - green))
    base = jnp.where(is_r, 0.0, jnp.where(is_g, 2.0, 4.0))
    return base + numerator / jnp.where(chroma == 0, 1.0, chroma), maxc, chroma


def _rgb_from_hue(hue6: jax.Array, maxc: jax.Array, chroma: jax.Array) -> jax.Array:
    """[3, ...] RGB planes from hue in sextants, max and chroma, by the branch-free formula.

    Channel n (R: 5, G: 3, B: 1) is max - chroma clip(min(k, 4 - k), 0, 1) with
    k = (n + 6 h) mod 6: the usual six-sector formula without a six-way select.
    """
    sector = jnp.asarray([5.0, 3.0, 1.0], maxc.dtype).reshape((3,) + (1,) * maxc.ndim)
    k = _wrap(sector + hue6, 6.0)  # [3, ...]
    return maxc - chroma * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)


def _hsv_planes(planes: jax.Array) -> jax.Array:
    """HSV planes of [3, ...] RGB planes."""
    hue6, maxc, chroma = _hue_chroma(planes)
    sat = chroma / jnp.where(maxc == 0, 1.0, maxc)
    return jnp.stack([_wrap(hue6 / 6.0, 1.0), sat, maxc])


def rgb_to_hsv(image: jax.Array) -> jax.Array:
    """[..., 3] RGB in [0, 1] to HSV, hue in turns [0, 1) (torchvision's `_rgb2hsv`)."""
    return _on_planes(_hsv_planes, image)


def hsv_to_rgb(hsv: jax.Array) -> jax.Array:
    """[..., 3] HSV (hue in turns) to RGB."""
    return _on_planes(lambda p: _rgb_from_hue(6.0 * p[0], p[2], p[2] * p[1]), hsv)


def _shift_hue(planes: jax.Array, delta: jax.Array) -> jax.Array:
    """`adjust_hue` on [3, ...] planes."""
    hue6, maxc, chroma = _hue_chroma(planes)
    return jnp.clip(_rgb_from_hue(hue6 + 6.0 * delta, maxc, chroma), 0.0, 1.0)


def adjust_hue(image: jax.Array, delta: jax.Array) -> jax.Array:
    """Rotates the hue of an [..., 3] image by `delta` turns (delta in [-0.5, 0.5]).

    Equals RGB -> HSV -> shift hue mod 1 -> RGB, without materialising HSV: a hue shift keeps
    the max (value) and the chroma (value x saturation) of every pixel.
    """
    return _on_planes(lambda planes: _shift_hue(planes, delta), image)


def _blend_op(planes: jax.Array, op: jax.Array, factor: jax.Array) -> jax.Array:
    """Brightness (op 0), contrast (1) or saturation (2) as one blend with a selected target."""
    luma = _luma(planes)  # [H, W]
    target = jnp.where(op == 0, 0.0, jnp.where(op == 1, jnp.mean(luma), luma))
    return _blend(planes, target, factor)


def _jitter_step(step: int, planes: jax.Array, params: ColorJitterParams) -> jax.Array:
    """Step 3 shifts the hue; steps 0..2 / 4..6 run blend slot 0..2 if it is before / after it.

    A blend slot on the wrong side of the hue op gets factor 1, an exact identity.
    """
    if step == 3:
        return _shift_hue(planes, params.hue)
    before = step < 3
    slot = step if before else step - 4
    op = params.blend_order[slot]
    active = slot < params.hue_position if before else slot >= params.hue_position
    return _blend_op(planes, op, jnp.where(active, params.factors[op], 1.0))


def apply_color_jitter(image: jax.Array, params: ColorJitterParams) -> jax.Array:
    """Applies brightness, contrast, saturation and hue to an [H, W, 3] image in a given order.

    The order is `blend_order[:hue_position]`, hue, `blend_order[hue_position:]`: seven steps
    (three blend slots, hue, three blend slots) with the inactive slots as identities, so every
    image of a vmapped batch runs the same program: six cheap blends and one hue shift.
    Unrolled in Python, with no `cond` or `while` in the compiled step (XLA:GPU syncs with the
    host for each); an optimisation barrier after every step keeps XLA from fusing the whole
    chain, which recomputes every earlier op in every later one (measured 10x slower on CPU):
    each step's output is materialised once.
    """

    def chain(planes: jax.Array) -> jax.Array:
        for step in range(7):
            planes = jax.lax.optimization_barrier(_jitter_step(step, planes, params))
        return planes

    return _on_planes(chain, image)


def sample_color_jitter(key: jax.Array, strength: float = 1.0) -> ColorJitterParams:
    """Draws ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s) parameters and a uniform random order.

    Factors are U(max(0, 1 - 0.8 s), 1 + 0.8 s); the hue shift is U(-h, h) with
    h = min(0.2 s, 0.5). The hue position (4 ways) and the blend order (6 ways) together give
    each of the 24 orders of the four ops with probability 1/24.
    """
    return _color_jitter_from_uniforms(jax.random.uniform(key, (8,)), strength)


def _color_jitter_from_uniforms(u: jax.Array, strength: float) -> ColorJitterParams:
    """`sample_color_jitter` given its [8] uniforms."""
    amount = 0.8 * strength
    factors = _lerp(u[:3], jnp.maximum(0.0, 1.0 - amount), 1.0 + amount)
    max_hue = jnp.minimum(0.2 * strength, 0.5)
    hue = _lerp(u[3], -max_hue, max_hue)
    hue_position = _randint(u[4], 4).astype(jnp.int32)
    blend_order = jnp.argsort(u[5:8]).astype(jnp.int32)  # uniform permutation of 3
    return ColorJitterParams(factors, hue, hue_position, blend_order)


# --- Gaussian blur --------------------------------------------------------------------------


def _reflect_neighbour_sum(image: jax.Array, axis: int) -> jax.Array:
    """x[i - 1] + x[i + 1] along `axis`, with reflect padding (x[-1] = x[1], x[n] = x[n - 2])."""
    size = image.shape[axis]
    take = functools.partial(jax.lax.slice_in_dim, image, axis=axis)
    prev = jnp.concatenate([take(1, 2), take(0, size - 1)], axis=axis)
    nxt = jnp.concatenate([take(1, size), take(size - 2, size - 1)], axis=axis)
    return prev + nxt


def gaussian_blur(image: jax.Array, sigma: jax.Array) -> jax.Array:
    """3x3 Gaussian blur of an [H, W, C] image, separable, reflect padding (torchvision).

    The 1-D kernel is exp(-x^2 / (2 sigma^2)) at x = -1, 0, 1, normalised to sum 1.
    """
    edge = jnp.exp(-0.5 / jnp.square(sigma))
    centre_w = 1.0 / (1.0 + 2.0 * edge)
    edge_w = edge * centre_w
    image = centre_w * image + edge_w * _reflect_neighbour_sum(image, axis=0)
    return centre_w * image + edge_w * _reflect_neighbour_sum(image, axis=1)


# --- SimCLR recipe --------------------------------------------------------------------------


def sample_simclr(
    key: jax.Array, height: int, width: int, strength: float = 1.0, min_scale: float = 0.08
) -> SimCLRParams:
    """Draws the parameters of one SimCLR view (SPEC §2) of an HxW image.

    All randomness comes from one vector of uniforms: every separate threefry call adds a
    lot of HLO, and this runs for every image of every training step.
    """
    u = jax.random.uniform(key, (_NUM_CROP_UNIFORMS + 12,))
    crop_u, color_u, (flip_u, jitter_u, gray_u, sigma_u) = jnp.split(
        u, [_NUM_CROP_UNIFORMS, _NUM_CROP_UNIFORMS + 8]
    )
    return SimCLRParams(
        box=_crop_box_from_uniforms(crop_u, height, width, (min_scale, 1.0), (3 / 4, 4 / 3)),
        flip=flip_u < 0.5,
        jitter=jitter_u < 0.8,
        color=_color_jitter_from_uniforms(color_u, strength),
        gray=gray_u < 0.2,
        sigma=_lerp(sigma_u, 0.1, 2.0),
    )


def apply_simclr(
    image: jax.Array, params: SimCLRParams, size: tuple[int, int] | None = None
) -> jax.Array:
    """Resized crop -> flip -> colour jitter -> grayscale -> blur on one [H, W, 3] image
    (output ``size``, default H x W)."""
    image = resized_crop(image, params.box, size)
    return apply_simclr_colour(hflip(image, params.flip), params)


def apply_simclr_colour(image: jax.Array, params: SimCLRParams) -> jax.Array:
    """The recipe after crop and flip: colour jitter -> grayscale -> blur -> clip."""
    image = jnp.where(params.jitter, apply_color_jitter(image, params.color), image)
    image = jnp.where(params.gray, grayscale(image), image)
    image = gaussian_blur(image, params.sigma)
    return jnp.clip(image, 0.0, 1.0)


def simclr_image(
    key: jax.Array,
    image: jax.Array,
    strength: float = 1.0,
    min_scale: float = 0.08,
    size: int | None = None,
) -> jax.Array:
    """One SimCLR view of one [H, W, 3] image (``size`` x ``size``, default H x W)."""
    height, width, _ = image.shape
    params = sample_simclr(key, height, width, strength, min_scale)
    return apply_simclr(image, params, None if size is None else (size, size))


def simclr(
    key: jax.Array,
    images: jax.Array,
    strength: float = 1.0,
    min_scale: float = 0.08,
    size: int | None = None,
) -> jax.Array:
    """The SimCLR view recipe of SPEC §2 on a batch, one independent draw per example.

    Random resized crop (area U(min_scale, 1), log-uniform ratio in [3/4, 4/3], 10 tries, centre
    fallback) back to HxW, horizontal flip p=0.5, colour jitter p=0.8 (brightness, contrast,
    saturation 0.8 s, hue 0.2 s, random order), grayscale p=0.2, 3x3 Gaussian blur with
    sigma ~ U(0.1, 2.0) always.

    Args:
        key: PRNG key; split into one key per example.
        images: [B, H, W, 3] float32 images in [0, 1].
        strength: colour-jitter strength s.
        min_scale: smallest crop area as a fraction of the image.
        size: output side (default: the input's H x W); a decoded store's S-pixel squares
            are cropped to ``data.image_size`` here.

    Returns:
        [B, size, size, 3] (default [B, H, W, 3]) float32 augmented images in [0, 1].
    """
    fn = functools.partial(simclr_image, strength=strength, min_scale=min_scale, size=size)
    return _per_example(fn, key, images)


def simclr_colour_image(key: jax.Array, image: jax.Array, strength: float = 1.0) -> jax.Array:
    """The colour part of one SimCLR view (jitter, grayscale, blur) of an already cropped and
    flipped [H, W, 3] image: the parameters are those `simclr_image` draws from ``key``."""
    height, width, _ = image.shape
    return apply_simclr_colour(image, sample_simclr(key, height, width, strength))


def simclr_colour(key: jax.Array, images: jax.Array, strength: float = 1.0) -> jax.Array:
    """`simclr_colour_image` on a batch, one independent draw per example (streamed input:
    the host did the random resized crop and the flip)."""
    fn = functools.partial(simclr_colour_image, strength=strength)
    return _per_example(fn, key, images)
