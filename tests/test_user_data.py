"""Your own dataset: image folders, .npz arrays and a prepared TFDS dataset, built here.

Unit tests check each loader against the pixels and labels written, the long-tail helpers
against NumPy loops, and the registry, ``:smoke`` and report rules. One slow test trains all
three sources through the stock ``run.py`` (ce, stage 1, probe, stage 2) from ~10-line config
files and reports them; the three share shapes and an XLA compilation cache, so only the first
run compiles.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from ml_collections import ConfigDict
from PIL import Image

from ltr_jax import config_lib, report, runtime
from ltr_jax.data.datasets import long_tail, own_data, records, registry
from ltr_jax.data.input import make
from ltr_jax.data.input import streamed as streamed_input

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "configs", "examples", "image_folder_lt.py")
NAMES = ("circle", "square")


def _pattern(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size]: dark noise plus a bright centre (class 1) or a dark one (class 0)."""
    image = rng.integers(0, 80, (size, size)).astype(np.uint8)
    lo, hi = size // 4, 3 * size // 4
    if label == 1:
        image[lo:hi, lo:hi] += 150
    return image


def _images(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale [2 * per_class, size, size] images and labels 0..1, classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(2), per_class)
    return np.stack([_pattern(int(y), size, rng) for y in labels]), labels


def write_folder(root, per_class: int, size: int, seed: int) -> np.ndarray:
    """``root/<class>/<i>.png|jpg``: grayscale PNGs, RGB JPEGs and an RGBA PNG; the images."""
    images, labels = _images(per_class, size, seed)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = os.path.join(root, NAMES[label])
        os.makedirs(folder, exist_ok=True)
        pil = Image.fromarray(image)
        if i % 3 == 1:
            pil.convert("RGB").save(os.path.join(folder, f"{i:03d}.jpg"), quality=95)
        elif i % 3 == 2:
            pil.convert("RGBA").save(os.path.join(folder, f"{i:03d}.png"))
        else:
            pil.save(os.path.join(folder, f"{i:03d}.png"))
    return images


def write_npz(path, per_class: int, size: int, seed: int, names=True) -> None:
    images, labels = _images(per_class, size, seed)
    extra = {"class_names": np.array(NAMES)} if names else {}
    np.savez(path, images=images, labels=labels, **extra)


class TinyShapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS image-classification dataset: grayscale PNGs under "picture", label "shape"."""

    VERSION = tfds.core.Version("1.0.0")
    PER_CLASS: dict = {"train": 40, "validation": 8}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(None, None, 1)),
                    "shape": tfds.features.ClassLabel(names=list(NAMES)),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {s: self._generate_examples(s) for s in self.PER_CLASS}

    def _generate_examples(self, split):
        images, labels = _images(self.PER_CLASS[split], 24, seed=len(split))
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"picture": Image.fromarray(image), "shape": int(label)}


def write_tfds(data_dir) -> None:
    builder = TinyShapes(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(try_download_gcs=False),
    )


def _data_config(**kw) -> ConfigDict:
    config = config_lib.base_config().data
    config.update(kw)
    return config


# --------------------------------------------------------------------------------------------
# Pixels, splits and long tails.


def test_to_rgb_expands_gray_drops_alpha_and_names_a_bad_shape():
    gray = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    rgb = own_data.to_rgb(gray, "x")
    assert rgb.shape == (2, 3, 4, 3) and all((rgb[..., c] == gray).all() for c in range(3))
    rgba = np.random.default_rng(0).integers(0, 255, (1, 2, 2, 4), dtype=np.uint8)
    np.testing.assert_array_equal(own_data.to_rgb(rgba, "x"), rgba[..., :3])
    with pytest.raises(ValueError, match=r"my.npz: images of shape \(2, 3, 4, 2\)"):
        own_data.to_rgb(np.zeros((2, 3, 4, 2), np.uint8), "my.npz")
    with pytest.raises(ValueError, match="float32"):
        own_data.to_rgb(np.zeros((2, 3, 4), np.float32), "x")


def test_fit_image_resizes_the_shorter_side_and_centre_crops():
    image = np.random.default_rng(0).integers(0, 255, (20, 40), dtype=np.uint8)
    same = own_data.fit_image(Image.fromarray(image), 20)  # no resize: the centre crop
    np.testing.assert_array_equal(same, image[:, 10:30, None].repeat(3, -1))
    flat = np.full((20, 40, 3), 77, np.uint8)
    small = own_data.fit_image(Image.fromarray(flat), 10)  # 40 x 20 -> 20 x 10 -> crop
    assert small.shape == (10, 10, 3) and (small == 77).all()


def test_split_fraction_holds_out_a_seeded_share_of_every_class():
    labels = np.repeat([0, 1, 2], [10, 5, 1])
    train, test = own_data.split_fraction(labels, 0.2, seed=3)
    assert np.bincount(labels[test], minlength=3).tolist() == [2, 1, 0]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(16))
    again = own_data.split_fraction(labels, 0.2, seed=3)
    np.testing.assert_array_equal(again[1], test)


def test_explicit_class_counts_draw_like_the_ldam_loop():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(3), 10))
    index = rng.permutation(30)
    pos = long_tail.train_subset(labels, index, 3, 100, class_counts=(7, 3, 1))
    # Reference: NumPy's legacy RNG seeded 0, each class's positions (official order) shuffled.
    order = np.argsort(index)
    np.random.seed(0)
    expected = []
    for c, n in enumerate((7, 3, 1)):
        idx = np.where(labels[order] == c)[0]
        np.random.shuffle(idx)
        expected += order[idx[:n]].tolist()
    assert pos.tolist() == sorted(expected)
    with pytest.raises(ValueError, match="one count per class"):
        long_tail.train_subset(labels, index, 3, 100, class_counts=(7, 3))
    with pytest.raises(ValueError, match=r"classes \[0\]"):
        long_tail.train_subset(labels, index, 3, 100, class_counts=(11, 3, 1))
    with pytest.raises(ValueError, match=r"leaves classes \[1, 2\] without"):
        long_tail.train_subset(np.repeat(np.arange(3), 3), np.arange(9), 3, 10)


def test_imbalance_factor_one_keeps_an_already_long_tailed_source():
    labels = np.repeat(np.arange(3), [9, 4, 1])
    assert long_tail.train_subset(labels, np.arange(14), 3, 1).tolist() == list(range(14))


def test_cap_per_class_keeps_the_first_images_of_each_class():
    labels = np.array([2, 0, 2, 2, 1, 0, 2, 0, 0])
    expected = [i for i, y in enumerate(labels) if list(labels[:i]).count(y) < 2]
    assert long_tail.cap_per_class(labels, 2).tolist() == expected
    assert long_tail.cap_per_class(labels, 0).tolist() == list(range(9))


# --------------------------------------------------------------------------------------------
# Loaders.


def test_image_folder_in_memory_and_streamed(tmp_path):
    images = write_folder(tmp_path / "train", per_class=3, size=8, seed=0)
    write_folder(tmp_path / "test", per_class=1, size=8, seed=1)
    config = _data_config(
        name="image_folder",
        train_path=str(tmp_path / "train"),
        test_path=str(tmp_path / "test"),
        image_size=8,
    )
    ds = registry.load_source(config)
    assert ds.class_names == NAMES and ds.num_classes == 2
    assert ds.train.images.shape == (6, 8, 8, 3) and ds.test.images.shape == (2, 8, 8, 3)
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1, 1]  # class, then file name order
    # Files sort by name within a class: circle 000.png 002.png 004.jpg, square 001.jpg ...
    for pos, i in ((0, 0), (4, 3), (1, 2), (5, 5)):  # grayscale and RGBA PNGs: lossless
        assert (ds.train.images[pos] == images[i][..., None]).all()
    streamed = registry.load(_data_config(**dict(config, stream_above=0, imbalance_factor=3)))
    assert streamed.streamed and isinstance(streamed.train, own_data.ImageFiles)
    assert np.bincount(streamed.train.labels).tolist() == [3, 1]  # the long tail, on the list
    record = streamed.train.source[0]
    assert record["label"] == 0 and record["image"][:4] == b"\x89PNG"
    # Through the streaming input: class names kept, test images centre-cropped at image_size.
    streamed_config = _data_config(**dict(config, stream_above=0, imbalance_factor=1))
    data = make.load_input(streamed_config, runtime.make_mesh())
    assert isinstance(data, streamed_input.StreamingInput) and data.class_names == NAMES
    shapes = data.map_split(lambda x, y, i: np.full(len(y), x.shape[1]), "test", batch_size=8)
    assert data.test_labels.tolist() == [0, 1] and shapes[:2].tolist() == [8, 8]


def test_image_folder_errors_say_what_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="root/<class>/<image>"):
        registry.load_source(_data_config(name="image_folder", train_path=str(tmp_path / "none")))
    with pytest.raises(ValueError, match="needs --config.data.train_path"):
        registry.load_source(_data_config(name="image_folder"))
    write_folder(tmp_path / "train", per_class=1, size=8, seed=0)
    os.makedirs(tmp_path / "test" / "triangle")
    with pytest.raises(ValueError, match=r"\['triangle'\] do not match"):
        registry.load_source(
            _data_config(
                name="image_folder",
                train_path=str(tmp_path / "train"),
                test_path=str(tmp_path / "test"),
            )
        )


def test_arrays_gray_several_files_and_held_out_split(tmp_path):
    write_npz(tmp_path / "a.npz", per_class=5, size=6, seed=0)
    write_npz(tmp_path / "b.npz", per_class=5, size=6, seed=1, names=False)
    paths = f"{tmp_path / 'a.npz'}, {tmp_path / 'b.npz'}"
    ds = registry.load_source(_data_config(name="arrays", train_path=paths, test_fraction=0.2))
    assert ds.class_names == NAMES
    assert len(ds.train.labels) == 16 and np.bincount(ds.test.labels).tolist() == [2, 2]
    a, _ = _images(5, 6, seed=0)
    b, _ = _images(5, 6, seed=1)
    every = np.concatenate([a, b])[..., None].repeat(3, -1)
    train, test = own_data.split_fraction(np.tile([0, 1], 10), 0.2, seed=0)
    np.testing.assert_array_equal(ds.train.images, every[train])
    np.testing.assert_array_equal(ds.test.images, every[test])
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 4, 4), np.uint8), labels=np.zeros(2))
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(3,\)"):
        registry.load_source(_data_config(name="arrays", train_path=str(tmp_path / "bad.npz")))


def test_tfds_source_keys_splits_and_class_names(tmp_path):
    write_tfds(tmp_path)
    config = _data_config(name="tfds:tiny_shapes", data_dir=str(tmp_path), image_size=16)
    config.tfds.update(image_key="picture", label_key="shape", test_split="validation")
    ds = registry.load_source(config)
    assert ds.class_names == NAMES
    assert ds.train.images.shape == (80, 16, 16, 3) and len(ds.test.labels) == 16
    images, labels = _images(40, 24, seed=len("train"))
    # TFDS stores records in its own (hashed) order: compare (label, pixels) pairs as sets.
    fitted = [own_data.fit_image(Image.fromarray(x), 16) for x in images]
    expected = sorted((int(y), x.tobytes()) for y, x in zip(labels, fitted, strict=True))
    got = sorted((int(y), x.tobytes()) for y, x in zip(ds.train.labels, ds.train.images))
    assert got == expected
    config.tfds.label_key = "label"
    with pytest.raises(ValueError, match=r"no feature 'label' \(has \['picture', 'shape'\]\)"):
        registry.load_source(config)
    with pytest.raises(records.DatasetNotFoundError, match="not prepared"):
        registry.load_source(_data_config(name="tfds:no_such_set", data_dir=str(tmp_path)))


# --------------------------------------------------------------------------------------------
# Registry, config and report rules.


def test_register_dataset_and_unknown_names():
    def loader(data_config):
        split = records.Split(
            np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 0, 1], np.int32), np.arange(4)
        )
        return records.Dataset(split, split, 2, ("a", "b"), verified=True)

    registry.register_dataset("test_user_data_set", lambda c: None)
    registry.register_dataset("test_user_data_set", loader)  # again (a re-imported config)
    assert registry.load_source(_data_config(name="test_user_data_set")).class_names == ("a", "b")
    with pytest.raises(ValueError, match="'cifar10' is built in"):
        registry.register_dataset("cifar10", loader)
    registry.register_dataset("test_user_data_bad", lambda c: "pixels")
    with pytest.raises(TypeError, match="returned str; it must return Dataset"):
        registry.load_source(_data_config(name="test_user_data_bad"))
    with pytest.raises(ValueError, match="image_folder, arrays.*register_dataset"):
        registry.DATASETS["mnist"]


REGISTERING_CONFIG = """
import numpy as np
from ltr_jax import config_lib
from ltr_jax.data.datasets import records, registry



def load(data_config):
    split = records.Split(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 1]), np.arange(2))
    return records.Dataset(split, split, 2, ("cat", "dog"), verified=True)


registry.register_dataset("test_user_data_file", load)


def get_config(arg=None):
    config = config_lib.base_config()
    config.data.name = "test_user_data_file"
    return config_lib.apply_arg(config, arg)
"""


def test_a_config_file_registers_its_dataset_even_when_imported_twice(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(REGISTERING_CONFIG)
    config_lib.load_config_file(str(path))  # run.py's override check imports it too
    config = config_lib.load_config_file(str(path))
    assert registry.load_source(config.data).class_names == ("cat", "dog")


def test_smoke_keeps_your_data_and_thresholds_default_to_the_standard():
    config = config_lib.base_config()
    assert (config.data.many_threshold, config.data.few_threshold) == (100, 20)
    config.data.update(name="arrays", train_path="x.npz", imbalance_factor=10)
    smoke = config_lib.smoke(config)
    assert smoke.data.name == "arrays" and smoke.data.max_per_class == 50
    # The cap comes before the long tail: at IF 100 it keeps 100 per class, so the smallest
    # class keeps one image and the run keeps the configured imbalance.
    config.data.imbalance_factor = 100
    assert config_lib.smoke(config).data.max_per_class == 100
    assert smoke.model.encoder == "cifar_resnet8"
    cifar = config_lib.load_config_file(os.path.join(ROOT, "configs", "cifar10_lt.py"), "smoke")
    assert cifar.data.name == "synthetic" and cifar.data.max_per_class == 0


def test_encoder_names_a_channel_mismatch():
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from ltr_jax.models import resnet

    def forward(x):  # traced only (eval_shape): builds and calls the encoder, no compute
        return resnet.cifar_resnet8(rngs=nnx.Rngs(0))(x)

    gray = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 8, 8, 1\); it expects \[B, H, W, 3\]"):
        jax.eval_shape(forward, gray)
    rgb = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32)
    assert jax.eval_shape(forward, rgb).shape == (2, 64)


def _fake_run(workdir, name, train_path=None):
    config = {
        "seed": 0,
        "pipeline": ["ce"],
        "data": {"name": name, "train_path": train_path},
        "ce": {"loss": "ce", "sampler": "uniform", "logit_adjust": {"tau": 1.0}},
    }
    results = {
        "top1": 50.0,
        "many": None,
        "medium": 60.0,
        "few": 40.0,
        "per_class_acc": [60.0, 40.0],
        "train_class_counts": [30, 10],
        "class_names": list(NAMES),
        "dataset": name,
    }
    os.makedirs(os.path.join(workdir, "ce"))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(workdir, "ce", "results.json"), "w") as f:
        json.dump(results, f)
    return str(workdir)


def test_report_refuses_mixed_datasets_and_splits_them_on_request(tmp_path):
    a = _fake_run(tmp_path / "a", "arrays", "/data/a.npz")
    b = _fake_run(tmp_path / "b", "arrays", "/data/b.npz")
    with pytest.raises(ValueError, match=r"2 datasets \(arrays \(/data/a.npz\): .*--by_dataset"):
        report.check_one_dataset([report.load_run(a), report.load_run(b)])
    table = report.per_class_table(report.summarise({"m": [report.load_run(a)]}))
    assert "| circle | 30 | 60.0 |" in table and "| square | 10 | 40.0 |" in table
    assert set(report.split_by_dataset([a, b])) == {"arrays (/data/a.npz)", "arrays (/data/b.npz)"}


# --------------------------------------------------------------------------------------------
# End to end: three sources through run.py, then the report.

CONFIG = """
from ltr_jax import config_lib


def get_config(arg=None):
    config = config_lib.base_config()
    config.pipeline = ("ce", "stage1", "probe", "stage2")
    config.data.update({data})
    return config_lib.apply_arg(config, arg)
"""


def _run(args, env, cwd):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "run.py"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.slow
def test_own_datasets_train_through_the_whole_pipeline(tmp_path):
    """A 1-channel .npz, an image folder and a prepared TFDS dataset from the stock run.py:
    class names and counts in every results.json and in the report. The folder (the README's
    example config) runs ce, stage 1, probe and stage 2; the .npz and TFDS sources run ce only,
    since the stages after loading run the same code whatever the source."""
    write_npz(tmp_path / "train.npz", per_class=40, size=32, seed=0)
    write_npz(tmp_path / "test.npz", per_class=8, size=32, seed=1, names=False)
    write_folder(tmp_path / "folder", per_class=48, size=40, seed=2)
    write_tfds(tmp_path / "tfds")
    # Same shapes everywhere (2 classes, 40 + 10 training and 16 test images of 32 x 32), so
    # the second and third runs reuse the first one's compiled XLA programs (from the test
    # suite's shared compilation cache when conftest sets one, else from one of our own).
    env = dict(os.environ)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "xla_cache"))
    env.update(
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    data = {
        "arrays": dict(
            name="arrays",
            train_path=str(tmp_path / "train.npz"),
            test_path=str(tmp_path / "test.npz"),
            imbalance_factor=4,
        ),
        "tfds": dict(
            name="tfds:tiny_shapes",
            data_dir=str(tmp_path / "tfds"),
            image_size=32,
            tfds=dict(image_key="picture", label_key="shape", test_split="validation"),
            imbalance_factor=4,
        ),
    }
    workdirs = {}
    for source, fields in data.items():
        path = tmp_path / f"{source}.py"
        path.write_text(CONFIG.format(data=repr(fields)))
        workdirs[source] = str(tmp_path / f"wd_{source}")
        args = [f"--config={path}:smoke", f"--workdir={workdirs[source]}", "--stages=ce"]
        _run(args, env, tmp_path)
    workdirs["folder"] = str(tmp_path / "wd_folder")
    overrides = dict(train_path=tmp_path / "folder", test_fraction=0.167, imbalance_factor=4)
    _run(
        [
            f"--config={EXAMPLE}:smoke",
            f"--workdir={workdirs['folder']}",
            *(f"--config.data.{k}={v}" for k, v in overrides.items()),
            "--stages=ce,stage1,probe,stage2",
        ],
        env,
        ROOT,
    )
    for source, workdir in workdirs.items():
        for stage in ("ce", "stage1", "probe", "stage2") if source == "folder" else ("ce",):
            with open(os.path.join(workdir, stage, "results.json")) as f:
                results = json.load(f)
            assert results["class_names"] == list(NAMES), (source, stage)
            assert results["train_class_counts"] == [40, 10], (source, stage)
            assert (results["many_threshold"], results["few_threshold"]) == (100, 20)
            assert stage == "stage1" or len(results["per_class_acc"]) == 2
    with pytest.raises(ValueError, match="3 datasets"):
        report.make_report(list(workdirs.values()), str(tmp_path / "mixed"))
    out = report.make_report([workdirs["arrays"]], str(tmp_path / "report"))
    assert out["dataset"] == f"arrays ({tmp_path / 'train.npz'})"
    assert "| circle | 40 |" in out["per_class_table"]
    assert "| square | 10 |" in out["per_class_table"]
