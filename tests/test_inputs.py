"""The stages' two inputs (in device memory, streamed) and the grouped IP-DPP draws.

The streamed path runs the ImageNet-LT smoke config end to end: from a decoded store (its
default ``data.format``), a run interrupted in stage 1 and in stage 2 (between two IP-DPP
draws) and resumed gives exactly the results and logged losses of an uninterrupted run; the
``ce`` + ``crt`` run and the feed tests here decode JPEGs every epoch (``data.format=jpeg``,
the Grain pipeline); `tests/test_decoded_store.py` tests the store itself.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from ml_collections import FrozenConfigDict

from ltr_jax import config_lib, dpp, pipeline, runtime, writers
from ltr_jax.data.datasets import long_tail, synthetic
from ltr_jax.data.input import grain_pipeline, make, sampler_registry
from ltr_jax.data.input import streamed as streamed_input

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "imagenet_lt.py") + ":smoke"
STAGES = ("stage1", "probe", "stage2")


def _config(**data):
    config = config_lib.load_config_file(SMOKE)
    config.data.update(data)
    return FrozenConfigDict(config)


@pytest.fixture(scope="module")
def streamed():
    config = _config(format="jpeg")
    return make.load_input(config.data, runtime.make_mesh(1))


def _results(workdir, stages=STAGES):
    """Every stage's results.json without its ``timing`` (times differ between runs)."""
    load = lambda s: json.loads(open(os.path.join(workdir, s, "results.json")).read())
    return {s: {k: v for k, v in load(s).items() if k != "timing"} for s in stages}


def _losses(workdir):
    records = writers.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return {(r["stage"], r["step"]): r["loss"] for r in records if "loss" in r}


@pytest.mark.slow
def test_streamed_pipeline_resumes_exactly(tmp_path, monkeypatch):
    straight = str(tmp_path / "straight")
    pipeline.run(_config(), straight)

    original = streamed_input.StreamFeed.data
    crash_at = {"train": 15, "subset": 25}  # mid stage 1; stage 2 between draws 1 and 2

    def crashing(self, step, state):
        population = "subset" if self._sampling.over_subset else "train"
        if crash_at.get(population) == step:
            del crash_at[population]
            raise KeyboardInterrupt(f"simulated kill at step {step}")
        return original(self, step, state)

    monkeypatch.setattr(streamed_input.StreamFeed, "data", crashing)
    crashed = str(tmp_path / "crashed")
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            pipeline.run(_config(), crashed)
    assert not crash_at
    pipeline.run(_config(), crashed)
    assert _results(crashed) == _results(straight)
    assert _losses(crashed) == _losses(straight)
    load = lambda d: writers.read_jsonl(os.path.join(d, "stage2", "draws.jsonl"))
    assert load(crashed) == load(straight) and len(load(straight)) == 2


@pytest.mark.slow
def test_streamed_ce_and_crt_with_class_balanced_sampling(tmp_path):
    config = config_lib.load_config_file(SMOKE)
    config.data.format = "jpeg"  # the JPEG-per-epoch pipeline end to end
    config.ce.update(sampler="class_balanced", epochs=2)
    # Both stages must learn. Top-1 on the 200 balanced test images (10 % by chance), seeds 0-4
    # (config.seed; 0 is this test's), CPU-2: ce (2 epochs, 24 steps) 70, 70, 90, 40, 55, at lr
    # 0 10 (1 epoch: 36.5, 46, 20, too close to chance to set a threshold); cRT on its
    # encoder, 4 epochs at 10x the recipe's lr (0.0625 at batch 16), head updates only: 100 for
    # every seed (at the recipe's lr and 1 epoch 10.5, 29.5, 10 on a 1-epoch ce encoder). cRT's
    # features need not be learned ones (on the lr-0 ce encoder it too gives 100): the ce
    # threshold is the one that shows the streamed supervised stage learns.
    config.crt.update(epochs=4)
    config.crt.optim.lr = 2.0
    results = pipeline.run(FrozenConfigDict(config), str(tmp_path), ["ce", "crt"])
    for name, threshold in (("ce", 30.0), ("crt", 50.0)):
        assert results[name]["top1"] >= threshold, (name, results[name]["per_class_acc"])
        assert results[name]["dataset"] == "synthetic_jpeg"
    assert results["ce"]["sampler"] == "class_balanced"


@pytest.mark.slow
def test_missing_dataset_is_a_clear_one_line_error(tmp_path):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "run.py"),
        "--config=configs/imagenet_lt.py",
        "--prepare_data",
        f"--config.data.manual_dir={tmp_path}",
        f"--config.data.data_dir={tmp_path / 'tfds'}",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2  # run.py's exit code of every user error
    assert "Traceback" not in done.stderr
    expected = f"DatasetNotFoundError: Split list ImageNet_LT_train.txt not found in {tmp_path}"
    assert expected in done.stderr


def test_streamed_facts_match_the_long_tail(streamed):
    config = _config()
    balanced = synthetic.load_synthetic_jpeg(config.data)  # the LDAM cut, by hand
    num_classes, imbalance_factor = balanced.num_classes, config.data.imbalance_factor
    labels = balanced.train.labels
    pos = long_tail.ldam_subset(labels, np.arange(len(labels)), num_classes, imbalance_factor)
    train, test = balanced.train.take(pos), balanced.test
    assert streamed.num_classes == num_classes == 10
    np.testing.assert_array_equal(streamed.train_labels, train.labels)
    np.testing.assert_array_equal(streamed.test_labels, test.labels)
    counts = np.bincount(train.labels, minlength=num_classes)
    np.testing.assert_array_equal(streamed.class_counts, counts)
    assert counts[0] == 100 and counts[-1] == 10  # LDAM profile, IF 10
    assert len(streamed.groups.many) + len(streamed.groups.medium) + len(streamed.groups.few) == 10


def test_map_split_is_the_centre_crop_in_order(streamed):
    positions = np.array([7, 3, 3, 150, 0])
    out = streamed.map_split(lambda x, y, i: (x, y, i), "train", positions, batch_size=4)
    images, labels, index = out
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(index, positions)
    np.testing.assert_array_equal(labels, streamed.train_labels[positions])
    for row, pos in enumerate(positions):
        expected = grain_pipeline.center_crop_image(streamed.train.source[pos]["image"], 32)
        np.testing.assert_array_equal(images[row], expected)


def test_centre_crop_geometry():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(60, 90, 3), dtype=np.uint8)
    out = grain_pipeline.center_crop_image(image, 32)  # shorter side 60 -> 37, crop 32 x 32
    assert out.shape == (32, 32, 3)
    assert grain_pipeline.eval_resize(224) == 256
    ramp = np.tile(np.arange(90, dtype=np.uint8)[None, :, None], (60, 1, 3))
    centre = grain_pipeline.center_crop_image(ramp, 32)[:, :, 0].astype(float)
    assert abs(centre.mean() - 44.5) < 1.5  # the middle of the ramp


def test_train_feed_views_are_independent_crops(streamed):
    sampling = sampler_registry.Sampling("uniform", jax.random.key(0), 8)
    feed = streamed.train_feed(sampling, augment="simclr", strength=1.0, num_views=2)
    batch = feed.data(0, None)
    assert batch["images"].shape == (8, 2, 32, 32, 3)
    assert not np.array_equal(np.asarray(batch["images"][:, 0]), np.asarray(batch["images"][:, 1]))
    again = feed.data(0, None)  # a restart at step 0 yields the same batch
    np.testing.assert_array_equal(np.asarray(again["images"]), np.asarray(batch["images"]))
    view = feed.view(jax.random.key(1), batch, 1)
    assert view.shape == (8, 32, 32, 3) and view.dtype == np.float32


def test_train_feed_over_a_population(streamed):
    population = np.array([5, 9, 11, 40, 41, 42, 90, 91], np.int32)
    sampling = sampler_registry.Sampling(
        "uniform", jax.random.key(0), 4, subset_size=len(population)
    )
    feed = streamed.train_feed(sampling, augment="none")
    feed.set_population(population, 0)
    seen = [feed.data(step, None)["labels"] for step in range(2)]  # one epoch: each once
    expected = np.sort(streamed.train_labels[population])
    np.testing.assert_array_equal(np.sort(np.concatenate([np.asarray(s) for s in seen])), expected)


def test_class_balanced_plan_is_balanced_and_step_indexed():
    labels = np.repeat(np.arange(4), [100, 30, 5, 1])
    plan = grain_pipeline.class_balanced_plan(labels, 4, 64, seed=[1, 2])
    again = grain_pipeline.class_balanced_plan(labels, 4, 64, seed=[1, 2])
    np.testing.assert_array_equal(plan.global_positions(7), again.global_positions(7))
    drawn = np.concatenate([labels[plan.global_positions(s)] for s in range(200)])
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(freq, 0.25, atol=0.02)
    halves = [
        grain_pipeline.class_balanced_plan(
            labels, 4, 64, seed=[1, 2], process_index=i, process_count=2
        )
        for i in range(2)
    ]
    rows = [np.array([h.locate(j)[2] for j in range(32)]) for h in halves]
    np.testing.assert_array_equal(np.concatenate(rows), plan.global_positions(0))


def test_sampling_errors():
    with pytest.raises(ValueError, match="only the uniform"):
        sampler_registry.check_sampling(
            sampler_registry.Sampling("class_balanced", jax.random.key(0), 4, subset_size=4)
        )
    with pytest.raises(ValueError, match="Unknown sampler"):
        sampler_registry.check_sampling(sampler_registry.Sampling("balanced", jax.random.key(0), 4))
    with pytest.raises(ValueError, match="Unknown augment"):
        streamed_input.host_augment("mixup", 1.0)
    with pytest.raises(ValueError, match="Unknown dataset name"):
        make.load_input(FrozenConfigDict({"name": "imagenet"}), None)


# --- Grouped IP-DPP draws ------------------------------------------------------------------


def _padded(counts, rng):
    p = [rng.uniform(0.01, 1.0, n) for n in counts]
    return dpp.pad_per_class(p)


@pytest.mark.parametrize("method", ["structured", "uniform"])
def test_grouped_draw_equals_each_class_drawn_alone(method):
    rng = np.random.default_rng(0)
    counts = [300, 7, 40, 12, 2, 64, 65]  # widths 128 (3 rows: 2 chunks), 512
    p, valid = _padded(counts, rng)
    key, k = jax.random.key(3), 12
    sel = dpp.sample_ip_dpp_grouped(key, p, valid, k, method=method, max_rows=2)
    for c, n in enumerate(counts):
        assert sel[c].sum() == min(n, k) and not sel[c, n:].any()
        if n <= k:
            assert sel[c, :n].all()
            continue
        width = dpp.bucket_size(n, power_of_two=True)
        row_p = np.zeros(width, np.float32)
        row_p[:n] = p[c, :n]
        alone = dpp.sample_ip_dpp(
            jax.random.fold_in(key, c), row_p, k, method=method, mask=np.arange(width) < n
        )
        np.testing.assert_array_equal(sel[c, :n], np.asarray(alone)[:n])


def test_size_groups_keep_compiles_few_for_imagenet_lt_like_counts():
    counts = np.round(1280 * (5 / 1280) ** (np.arange(1000) / 999)).astype(int)  # 1280..5
    groups = dpp.size_groups(counts[counts > 50])
    shapes = {(width, len(rows)) for width, rows in groups}
    assert len(shapes) <= 6  # widths 128..2048, full chunks of 256 classes or one padded chunk
    covered = np.concatenate([rows for _, rows in groups])
    assert set(covered.tolist()) == set(range(int((counts > 50).sum())))


def test_grouped_draw_rejects_non_prefix_masks():
    p = np.ones((1, 4), np.float32)
    with pytest.raises(ValueError, match="prefix"):
        dpp.sample_ip_dpp_grouped(jax.random.key(0), p, np.array([[True, False, True, True]]), 1)
