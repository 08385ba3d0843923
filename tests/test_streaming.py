"""Tests of the streaming input pipeline (`grain_pipeline`) on tiny synthetic JPEGs."""

import io
import itertools

import jax
import numpy as np
import pytest
from PIL import Image

from ltr_jax import runtime
from ltr_jax.data.input import augment, grain_pipeline

NUM_IMAGES = 64
BATCH = 8  # 8 steps per epoch
SIZE = 16


def _jpeg(rng: np.random.Generator, height: int = 40, width: int = 48) -> bytes:
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source() -> list[dict]:
    """64 JPEGs of 48x40 whose label is their index, so batches show which images they hold."""
    rng = np.random.default_rng(0)
    return [{"image": _jpeg(rng), "label": i} for i in range(NUM_IMAGES)]


def _batches(source, num_steps: int, **kwargs) -> list[dict]:
    kwargs = {"seed": 3, "global_batch_size": BATCH, "image_size": SIZE, "num_workers": 2} | kwargs
    spec = grain_pipeline.IteratorSpec(num_steps=num_steps, **kwargs)
    return list(grain_pipeline.make_iterator(source, spec))


def _assert_same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["labels"], y["labels"])
        np.testing.assert_array_equal(x["images"], y["images"])


def test_batches_are_deterministic(source):
    _assert_same(_batches(source, 3), _batches(source, 3))
    assert not np.array_equal(
        _batches(source, 1)[0]["labels"], _batches(source, 1, seed=4)[0]["labels"]
    )


def test_resume_matches_uninterrupted_run(source):
    full = _batches(source, 11)  # crosses the epoch boundary at step 8
    _assert_same(_batches(source, 6, start_step=5), full[5:])


def test_process_slices_concatenate_to_global_batch(source):
    whole = _batches(source, 3)
    parts = [_batches(source, 3, process_index=i, process_count=2) for i in range(2)]
    for step, batch in enumerate(whole):
        for key in ("images", "labels"):
            joined = np.concatenate([parts[0][step][key], parts[1][step][key]])
            np.testing.assert_array_equal(joined, batch[key])


def test_worker_count_does_not_change_batches(source):
    one = _batches(source, 3, num_workers=1)
    _assert_same(one, _batches(source, 3, num_workers=3))
    _assert_same(one, _batches(source, 3, num_workers=0))


def test_shapes_dtypes_and_ranges(source):
    batch = _batches(source, 1, process_count=2)[0]
    assert batch["images"].shape == (BATCH // 2, SIZE, SIZE, 3)
    assert batch["images"].dtype == np.uint8
    assert batch["labels"].shape == (BATCH // 2,) and batch["labels"].dtype == np.int32
    assert batch["labels"].min() >= 0 and batch["labels"].max() < NUM_IMAGES
    assert batch["images"].std() > 10  # real pixels, not a constant fill


def test_epoch_covers_every_image_once_dropping_remainder(source):
    labels = [b["labels"] for b in _batches(source, 16, num_workers=1)]  # two epochs
    epochs = [np.concatenate(labels[:8]), np.concatenate(labels[8:])]
    for seen in epochs:
        np.testing.assert_array_equal(np.sort(seen), np.arange(NUM_IMAGES))
    assert not np.array_equal(epochs[0], epochs[1])  # a new permutation every epoch
    plan = grain_pipeline.BatchPlan(NUM_IMAGES + 5, BATCH, seed=3)  # 8 steps, 5 dropped per epoch
    assert plan.steps_per_epoch == 8
    for epoch in range(2):
        positions = np.concatenate([plan.global_positions(epoch * 8 + s) for s in range(8)])
        assert len(np.unique(positions)) == 64 and positions.max() < NUM_IMAGES + 5


def test_crop_box_matches_on_device_sampler():
    rng = np.random.default_rng(1)
    shapes = [(40, 48), (375, 500), (10, 200), (200, 10)]
    for (height, width), scale in itertools.product(shapes, [(0.08, 1.0), (0.9, 1.0)]):
        u = rng.random(22).astype(np.float32)
        ours = grain_pipeline.crop_box_from_uniforms(u, height, width, scale)
        ref = augment._crop_box_from_uniforms(u, height, width, scale, (3 / 4, 4 / 3))
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


class _FixedRng:
    """Stands in for a generator: fixed crop uniforms, then the flip uniform."""

    def __init__(self, crop_u: np.ndarray, flip_u: float):
        self.u = np.concatenate([crop_u, [flip_u]])

    def random(self, n: int) -> np.ndarray:
        return self.u[:n]


def test_full_image_box_is_a_plain_resize_then_flip(source):
    # Area 1 at ratio 1 (44x44) does not fit 48x40: the centre fallback is the whole image.
    crop_u = np.array([1.0 - 1e-9] * 10 + [0.5] * 10 + [0.0, 0.0])
    assert grain_pipeline.crop_box_from_uniforms(crop_u, 40, 48) == (0, 0, 40, 48)
    image = Image.open(io.BytesIO(source[0]["image"])).convert("RGB")
    expected = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    got = grain_pipeline.augment_image(source[0]["image"], _FixedRng(crop_u, 0.9), SIZE)
    np.testing.assert_array_equal(got, expected)
    flipped = grain_pipeline.augment_image(source[0]["image"], _FixedRng(crop_u, 0.1), SIZE)
    np.testing.assert_array_equal(flipped, expected[:, ::-1])


def test_global_batch_is_sharded_over_data():
    mesh = runtime.make_mesh()
    local = {
        "images": np.arange(16 * 2 * 2 * 3, dtype=np.uint8).reshape(16, 2, 2, 3),
        "labels": np.arange(16, dtype=np.int32),
    }
    (batch,) = grain_pipeline.global_batches(mesh, iter([local]))
    assert batch["images"].shape == (16, 2, 2, 3)
    assert batch["labels"].sharding == runtime.batch_sharded(mesh)
    np.testing.assert_array_equal(jax.device_get(batch["labels"]), local["labels"])


def test_invalid_batch_sizes_fail_loudly(source):
    with pytest.raises(ValueError, match="not divisible"):
        grain_pipeline.make_iterator(source, grain_pipeline.IteratorSpec(9, process_count=2))
    with pytest.raises(ValueError, match="exceeds"):
        grain_pipeline.make_iterator(source, grain_pipeline.IteratorSpec(128))


def test_worker_processes_give_the_thread_batches(source):
    """Decoding in worker processes (whole batches each) yields the batches of the threads,
    for the default plan from a resume step, two views, and an evaluation plan."""
    kwargs = dict(start_step=6, num_views=2, process_index=1, process_count=2)
    _assert_same(_batches(source, 4, num_processes=2, **kwargs), _batches(source, 4, **kwargs))
    plan, num_batches = grain_pipeline.eval_plan(np.arange(5, 30), BATCH)
    evals = dict(plan=plan, mode="eval", seed=0)
    _assert_same(
        _batches(source, num_batches, num_processes=2, **evals),
        _batches(source, num_batches, **evals),
    )


def test_worker_processes_refuse_a_too_small_shared_memory(tmp_path, monkeypatch):
    grain_pipeline.check_shared_memory(1, str(tmp_path))  # plenty free
    with pytest.raises(ValueError, match="shm-size"):
        grain_pipeline.check_shared_memory(1 << 60, str(tmp_path))
