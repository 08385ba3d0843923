"""The decoded store (`decoded_store`) and training from it (`decoded.DecodedInput`).

Fidelity: a crop taken on device from the stored S = 256 square matches the same crop taken
by the JPEG path (Pillow, bilinear, from the full-size decoded JPEG) within a mean absolute
difference of ``FIDELITY_MEAN`` = 1.5 and a 99th percentile of ``FIDELITY_P99`` = 4 grey
levels (of 255), for ImageNet-size images with smooth regions, hard edges and pixel noise
(observed: mean 0.4-0.9, p99 1.3-3.0; a crop 3 store pixels off gives mean 10-12).
JPEG draft decoding (``data.jpeg_draft``, 1/2 or 1/4 size here) against full-size decoding,
64-pixel crops: mean below ``DRAFT_MEAN`` = 2, p99 below ``DRAFT_P99`` = 8 (observed 1.2-1.4
and 5-6).
The end-to-end resume of a run trained from the store is `test_inputs.py`'s.
"""

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import FrozenConfigDict
from PIL import Image

from ltr_jax import config_lib, runtime
from ltr_jax.data.datasets import synthetic
from ltr_jax.data.input import (
    augment,
    decoded,
    decoded_store,
    grain_pipeline,
    make,
    sampler_registry,
    streamed,
)

FIDELITY_MEAN = 1.5
FIDELITY_P99 = 4.0
DRAFT_MEAN, DRAFT_P99 = 2.0, 8.0


def _natural(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [H, W, 3]: sums of sinusoids, hard-edged discs and pixel noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    y, x = yy / max(height, width), xx / max(height, width)
    image = np.zeros((height, width, 3))
    for c in range(3):
        for _ in range(6):
            fy, fx, phase = rng.uniform(1, 12), rng.uniform(1, 12), rng.uniform(0, 6)
            image[..., c] += rng.uniform(0.1, 0.4) * np.sin(2 * np.pi * (fy * y + fx * x) + phase)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(10, 60)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.uniform(-0.5, 0.5, 3)
    image += rng.normal(0, 0.03, image.shape)
    image = (image - image.min()) / (image.max() - image.min())
    return (image * 255).astype(np.uint8)


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(375, 500), (600, 800), (500, 333)])
def test_a_store_crop_matches_the_same_crop_of_the_jpeg(shape):
    height, width = shape
    encoded = _jpeg(_natural(height, width, seed=height))
    stored = jnp.asarray(decoded_store.decode_square(encoded, 256))
    full = Image.open(io.BytesIO(encoded)).convert("RGB")
    side = min(height, width)
    scale, left0, top0 = side / 256, (width - side) / 2, (height - side) / 2
    for top, left, h, w in [
        (0, 0, 256, 256),
        (20, 30, 200, 180),
        (100, 60, 90, 120),
        (5, 5, 60, 60),
    ]:
        box = jnp.asarray([top, left, h, w], jnp.float32)
        ours = np.asarray(augment.resized_crop(augment.to_float(stored), box, (224, 224))) * 255
        original_box = (
            left0 + left * scale,
            top0 + top * scale,
            left0 + (left + w) * scale,
            top0 + (top + h) * scale,
        )
        theirs = full.resize((224, 224), Image.Resampling.BILINEAR, box=original_box)
        diff = np.abs(ours - np.asarray(theirs, np.float64))
        assert diff.mean() < FIDELITY_MEAN and np.percentile(diff, 99) < FIDELITY_P99, (
            (top, left, h, w),
            diff.mean(),
            np.percentile(diff, 99),
        )


def _encoded_split(n: int, seed: int = 0) -> synthetic.EncodedSplit:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 24, 24, 3), dtype=np.uint8)
    encoded = synthetic.encode_jpegs(images, (30, 50), seed)
    return synthetic.EncodedSplit(encoded, rng.integers(0, 3, n).astype(np.int32))


def test_preparation_resumes_after_a_kill_and_stores_each_image_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_store, "CHUNK_SIZE", 4)
    split = _encoded_split(10)
    decode, decoded = decoded_store._decode_chunk, []

    def killed_at_third_chunk(path, start, encoded, size):
        if len(decoded) == 2:
            raise KeyboardInterrupt("simulated kill")
        decoded.append(start)
        return decode(path, start, encoded, size)

    monkeypatch.setattr(decoded_store, "_decode_chunk", killed_at_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        decoded_store.prepare_store(str(tmp_path), {"train": split}, size=20, num_processes=1)
    assert not decoded_store.is_complete(str(tmp_path))
    monkeypatch.setattr(decoded_store, "_decode_chunk", decode)
    calls = []
    monkeypatch.setattr(decoded_store, "_decode_chunk", lambda *a: calls.append(a[1]) or decode(*a))
    decoded_store.prepare_store(str(tmp_path), {"train": split}, size=20, num_processes=1)
    assert calls == [8]  # only the chunk the kill interrupted
    store = decoded_store.open_store(str(tmp_path), 20)["train"]
    assert store.source.shape == (10, 20, 20, 3) and store.source.dtype == np.uint8
    np.testing.assert_array_equal(store.labels, split.labels)
    for i in range(10):
        np.testing.assert_array_equal(
            store.source[i], decoded_store.decode_square(split.images[i], 20)
        )
    with pytest.raises(ValueError, match="Delete that folder"):
        decoded_store.open_store(str(tmp_path), 32)


def test_preparation_in_worker_processes_equals_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(decoded_store, "CHUNK_SIZE", 3)
    splits = {"train": _encoded_split(7, 1), "test": _encoded_split(4, 2)}
    one = decoded_store.prepare_store(str(tmp_path / "one"), splits, size=16, num_processes=1)
    two = decoded_store.prepare_store(str(tmp_path / "two"), splits, size=16, num_processes=2)
    assert one["counts"] == two["counts"] == {"train": 7, "test": 4}
    a, b = (decoded_store.open_store(str(tmp_path / d), 16) for d in ("one", "two"))
    for name in splits:
        np.testing.assert_array_equal(a[name].source, b[name].source)


def test_decode_square_is_the_centre_square():
    ramp = np.tile(np.arange(90, dtype=np.uint8)[None, :, None], (60, 1, 3))  # [60, 90, 3]
    square = decoded_store.decode_square(ramp, 60).astype(float)
    np.testing.assert_allclose(square[0, :, 0], np.arange(15, 75), atol=0.5)  # columns 15..74


def _smoke_data(tmp_path, **data):
    config = config_lib.load_config_file("configs/imagenet_lt.py:smoke")
    config.data.update(**{"decoded_dir": str(tmp_path / "store"), **data})
    return make.load_input(FrozenConfigDict(config).data, runtime.make_mesh(1))


def test_decoded_feed_is_step_indexed_and_each_process_gathers_its_rows(tmp_path):
    data = _smoke_data(tmp_path)
    assert isinstance(data, decoded.DecodedInput) and data.train.source.shape[1:] == (40, 40, 3)
    sampling = sampler_registry.Sampling("uniform", jax.random.key(0), 8)
    feed = data.train_feed(sampling, augment="crop_flip", num_views=2)
    straight = [np.asarray(feed.data(step, None)["images"]) for step in range(4)]
    resumed = data.train_feed(sampling, augment="crop_flip", num_views=2)
    np.testing.assert_array_equal(np.asarray(resumed.data(3, None)["images"]), straight[3])
    feed.close(), resumed.close()
    plan = grain_pipeline.BatchPlan(
        len(data.train_labels), 8, sampler_registry.key_to_seed(sampling.key)
    )
    np.testing.assert_array_equal(straight[3], data.train.source[plan.global_positions(3)])
    halves = []
    for i in range(2):
        half = grain_pipeline.BatchPlan(len(data.train_labels), 8, plan.seed, i, 2)
        local = next(decoded_store.make_iterator(data.train, plan=half, start_step=3))
        halves.append(local["images"])
    np.testing.assert_array_equal(np.concatenate(halves), straight[3])
    batch = {"images": jnp.asarray(straight[0])}
    view = jax.jit(feed.view, static_argnums=2)
    views = [view(jax.random.key(v), batch, v) for v in (0, 1, 0)]
    assert views[0].shape == (8, 32, 32, 3) and views[0].dtype == jnp.float32
    assert not np.allclose(views[0], views[1])
    np.testing.assert_array_equal(views[0], views[2])  # the crop is a function of the key


# The store's evaluation images against the JPEG path's own (``data.format="jpeg"``: shorter
# side resized to 32, centre crop 28 at an integer offset, from the full decode) on the smoke
# set's 40- and 56-pixel JPEGs: observed mean absolute difference 1.1-1.3 grey levels over
# the images (up to 5.4 for one image: the JPEG path rounds its crop offset, the store centres
# its square exactly, a shift of 0.4 pixel on a noisy 40 x 56 image); a crop one pixel off
# gives 12-16, another image 17 or more.
EVAL_MEAN = 3.0


def test_decoded_evaluation_is_the_jpeg_paths_centre_crop(tmp_path):
    data = _smoke_data(tmp_path, image_size=28, decoded_size=32)  # resize 32, crop 28: exact
    jpeg = _smoke_data(tmp_path, image_size=28, format="jpeg", decoded_dir=None)
    assert isinstance(jpeg, streamed.StreamingInput)
    positions = np.array([4, 0, 9, 9, 17, 199])
    images, labels, index = data.map_split(lambda x, y, i: (x, y, i), "test", positions, 4)
    assert images.shape == (6, 28, 28, 3) and images.dtype == np.uint8
    want = jpeg.map_split(lambda x, y, i: x, "test", positions, 4)
    diff = np.abs(images.astype(np.float64) - want).mean((1, 2, 3))
    assert diff.mean() <= EVAL_MEAN, diff
    np.testing.assert_array_equal(labels, data.test_labels[positions])
    np.testing.assert_array_equal(labels, jpeg.test_labels[positions])
    np.testing.assert_array_equal(index, positions)


def test_random_resized_crop_flip_samples_a_box_of_the_image():
    ramp = jnp.tile(jnp.arange(64.0)[None, :, None], (48, 1, 3))[None].repeat(16, 0)  # columns
    crop = jax.jit(augment.random_resized_crop_flip, static_argnums=2)
    out = crop(jax.random.key(0), ramp, 20)
    assert out.shape == (16, 20, 20, 3)
    rows = np.asarray(out[:, 0, :, 0])  # [B, 20]: each a monotone piece of 0..63
    steps = np.diff(rows, axis=1)
    assert ((steps >= -1e-4).all(axis=1) | (steps <= 1e-4).all(axis=1)).all()
    assert (rows >= 0).all() and (rows <= 63).all()
    assert (steps[:, 0] < 0).any() and (steps[:, 0] > 0).any()  # some flipped, some not
    np.testing.assert_allclose(out[:, :, :, 0], out[:, :1, :, 0].repeat(20, 1), atol=1e-4)


def test_format_errors():
    config = config_lib.load_config_file("configs/imagenet_lt.py")
    assert config.data.format == "decoded"
    assert config_lib.load_config_file("configs/inat2018.py").data.format == "decoded"
    config.data.format = "png"
    with pytest.raises(ValueError, match="Unknown data.format 'png'"):
        decoded.check_format(config.data)
    config.data.update(format="decoded", decoded_size=200)
    with pytest.raises(ValueError, match="decoded_size=256 or more"):
        decoded.check_format(config.data)
    with pytest.raises(ValueError, match="Unknown augment"):
        decoded.store_augment("mixup", 1.0, 224, 256)


def test_jpeg_draft_decodes_smaller_only_where_every_crop_allows():
    assert grain_pipeline.draft_scale([(0, 0, 300, 400), (0, 0, 130, 500)], 64) == 2
    assert grain_pipeline.draft_scale([(0, 0, 375, 500)], 64) == 4
    assert grain_pipeline.draft_scale([(0, 0, 100, 90)], 64) == 1
    encoded = _jpeg(_natural(375, 500, seed=1))
    for seed in range(6):
        full = grain_pipeline.augment_image(encoded, np.random.default_rng(seed), 64, num_views=2)
        drafted = grain_pipeline.augment_image(
            encoded, np.random.default_rng(seed), 64, num_views=2, draft=True
        )
        diff = np.abs(full.astype(float) - drafted)
        assert 0 < diff.mean() < DRAFT_MEAN and np.percentile(diff, 99) < DRAFT_P99, (
            seed,
            diff.mean(),
            np.percentile(diff, 99),
        )
