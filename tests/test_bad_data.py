"""Your own data, wrong: unreadable image files named, 16-bit PNGs scaled (not clipped),
classes without images refused with the fix that fits (not "lower the imbalance factor")."""

import io
import os
import sys

import numpy as np
import pytest
from ml_collections import FrozenConfigDict
from PIL import Image

from ltr_jax import config_lib, validation
from ltr_jax.data.datasets import own_data as user_sources
from ltr_jax.data.datasets import registry as datasets
from ltr_jax.data.input import decoded_store
from ltr_jax.data.input import grain_pipeline as streaming

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from test_run_errors import CE_SMOKE, _assert_one_line  # noqa: E402


def _data_config(**kw):
    config = config_lib.base_config().data
    config.update(kw)
    return config


def _folder(root, classes=("a", "b"), per_class=3, size=8) -> str:
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / name, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / name / f"{i}.png")
    return str(root)


def test_unreadable_images_are_named_with_the_fix(tmp_path):
    root = _folder(tmp_path / "train")
    good = (tmp_path / "train" / "a" / "0.png").read_bytes()
    (tmp_path / "train" / "a" / "cut.png").write_bytes(good[: len(good) // 2])  # truncated
    (tmp_path / "train" / "b" / "junk.jpg").write_bytes(b"not an image at all" * 20)
    config = _data_config(name="image_folder", train_path=root, image_size=8)
    with pytest.raises(user_sources.DatasetError) as e:
        datasets.load(config)
    message = str(e.value)
    assert message.startswith("2 image file(s) cannot be read:") and "\n" not in message
    for path in (root + "/a/cut.png", root + "/b/junk.jpg"):
        assert path in message
    assert "move them out of the class folders" in message


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)
    os.makedirs(tmp_path / "train" / "a")
    os.makedirs(tmp_path / "train" / "b")
    for name in ("a", "b"):
        for i in range(2):
            Image.fromarray(ramp).save(tmp_path / "train" / name / f"{i}.png")
    assert Image.open(tmp_path / "train" / "a" / "0.png").mode == "I;16"  # a real 16-bit PNG
    config = _data_config(
        name="image_folder", train_path=str(tmp_path / "train"), image_size=16, test_fraction=0.5
    )
    ds = datasets.load_source(config)  # the decoded images, before any long tail
    expected = np.arange(256).reshape(16, 16)  # 257 * v / 257: the 8-bit ramp, exactly
    np.testing.assert_array_equal(ds.train.images[0, ..., 0], expected)
    assert (ds.train.images[0] == ds.train.images[0, ..., :1]).all()  # gray in 3 channels
    # The streamed path (large folders, ImageNet) decodes through the same conversion.
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    crop = streaming.center_crop_image(buffer.getvalue(), 16)
    assert abs(float(crop.mean()) - expected.mean()) < 2.0  # was ~254 (clipped)
    stored = decoded_store.decode_square(buffer.getvalue(), 16)  # data.format=decoded
    np.testing.assert_array_equal(stored[..., 0], expected)


def test_empty_class_folder_is_named_not_blamed_on_the_long_tail(capsys, tmp_path):
    root = _folder(tmp_path / "train", per_class=4)
    os.makedirs(tmp_path / "train" / "c" / "sub")  # a class folder without images
    (tmp_path / "train" / "c" / "readme.txt").write_text("no images")
    argv = (
        "--config.data.name=image_folder",
        f"--config.data.train_path={root}",
        "--config.data.image_size=8",
    )
    match = ("class folder(s) c hold no image file", "move the folder out")
    line = _assert_one_line(capsys, str(tmp_path / "wd"), *argv, match=match, config=CE_SMOKE)
    assert "imbalance" not in line


def test_npz_labels_with_gaps_or_out_of_range(tmp_path):
    images = np.zeros((6, 4, 4), np.uint8)
    np.savez(tmp_path / "gaps.npz", images=images, labels=np.array([0, 0, 2, 2, 4, 4]))
    config = _data_config(name="arrays", train_path=str(tmp_path / "gaps.npz"))
    with pytest.raises(user_sources.DatasetError) as e:
        datasets.load(config)
    assert "2 of 5 classes have no training image in your data: 1 (1), 3 (3)" in str(e.value)
    assert "renumber them without gaps" in str(e.value) and "imbalance" not in str(e.value)
    # Labels beyond class_names (without class_names, C is the largest label + 1).
    labels, names = np.array([0, 0, 0, 1, 1, 2]), np.array(["x", "y"])
    np.savez(tmp_path / "named.npz", images=images, labels=labels, class_names=names)
    config = _data_config(name="arrays", train_path=str(tmp_path / "named.npz"))
    with pytest.raises(user_sources.DatasetError, match=r"span 0..2, outside the 2 classes"):
        datasets.load(config)


def test_a_class_empty_in_the_data_is_not_blamed_on_the_long_tail():
    config = FrozenConfigDict(config_lib.load_config_file(CE_SMOKE))  # imbalance factor 10
    counts, names = np.array([50, 0, 5]), ("a", "b", "c")
    with pytest.raises(validation.ConfigError, match=r"\(b\) in the data itself") as e:
        validation.validate_data(config, ("ce",), counts, names)
    assert "imbalance" not in str(e.value) and "add images of those classes" in str(e.value)
