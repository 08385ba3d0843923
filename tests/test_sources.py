"""Tests of ltr_jax.data.datasets.cifar on small archives written here in the official layouts.

No network, no real data: every archive is a few records made with numpy and tarfile, and every
TFDS folder lives in tmp_path.
"""

import hashlib
import io
import logging
import tarfile

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from ltr_jax.data.datasets import cifar, records, synthetic

C10_TRAIN_SIZES = (2, 3, 1, 2, 2)  # records in data_batch_1..5
C10_TEST_SIZE = 4
C100_TRAIN_SIZE, C100_TEST_SIZE = 6, 3
C10_NAMES = [f"c10_name_{i}" for i in range(10)]
C100_FINE = [f"fine_{i}" for i in range(100)]
C100_COARSE = [f"coarse_{i}" for i in range(20)]


def _records(label_bytes: np.ndarray, images: np.ndarray) -> bytes:
    """Official record layout, written plainly: label bytes, then the R, G, B planes."""
    out = bytearray()
    for labels, image in zip(label_bytes, images, strict=True):
        out += bytes(labels.tolist())
        for channel in range(3):
            out += image[:, :, channel].tobytes()  # 32x32, row-major
    return bytes(out)


def _write_tar(path, files: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _random_images(rng, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture
def c10_archive(tmp_path):
    """A CIFAR-10 layout archive in tmp_path/manual, and the arrays it holds."""
    rng = np.random.default_rng(0)
    n_train = sum(C10_TRAIN_SIZES)
    expected = {
        "train_images": _random_images(rng, n_train),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": _random_images(rng, C10_TEST_SIZE),
        "test_labels": rng.integers(0, 10, size=C10_TEST_SIZE, dtype=np.uint8),
    }
    # Constant, distinct planes: R=10, G=20, B=30 must come back in that channel order.
    expected["test_images"][0] = np.array([10, 20, 30], np.uint8)
    files, start = {}, 0
    for i, size in enumerate(C10_TRAIN_SIZES, start=1):
        part = slice(start, start + size)
        labels = expected["train_labels"][part, None]
        data = _records(labels, expected["train_images"][part])
        files[f"cifar-10-batches-bin/data_batch_{i}.bin"] = data
        start += size
    test_labels = expected["test_labels"][:, None]
    files["cifar-10-batches-bin/test_batch.bin"] = _records(test_labels, expected["test_images"])
    files["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(C10_NAMES) + "\n\n").encode()
    manual = tmp_path / "manual"
    manual.mkdir()
    _write_tar(manual / "cifar-10-binary.tar.gz", files)
    return manual, expected


@pytest.fixture
def c100_archive(tmp_path):
    """A CIFAR-100 layout archive in tmp_path/manual100, and the arrays it holds."""
    rng = np.random.default_rng(1)
    expected = {}
    files = {}
    for split, size in (("train", C100_TRAIN_SIZE), ("test", C100_TEST_SIZE)):
        coarse = rng.integers(0, 20, size=size, dtype=np.uint8)
        fine = rng.integers(20, 100, size=size, dtype=np.uint8)  # never equal to coarse
        images = _random_images(rng, size)
        expected.update({f"{split}_images": images, f"{split}_fine": fine})
        expected[f"{split}_coarse"] = coarse
        files[f"cifar-100-binary/{split}.bin"] = _records(np.stack([coarse, fine], 1), images)
    files["cifar-100-binary/fine_label_names.txt"] = "\n".join(C100_FINE).encode()
    files["cifar-100-binary/coarse_label_names.txt"] = "\n".join(C100_COARSE).encode()
    manual = tmp_path / "manual100"
    manual.mkdir()
    _write_tar(manual / "cifar-100-binary.tar.gz", files)
    return manual, expected


def _config(tmp_path, **overrides) -> ml_collections.FrozenConfigDict:
    config = {
        "name": "cifar10",
        "data_dir": str(tmp_path / "tfds"),
        "manual_dir": None,
        "download": False,
        "allow_unverified_archive": False,
        "synthetic": {"num_classes": 10, "train_per_class": 50, "test_per_class": 20, "seed": 0},
    }
    config.update(overrides)
    return ml_collections.FrozenConfigDict(config)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cifar10_round_trip_unverified(tmp_path, c10_archive):
    manual, expected = c10_archive
    config = _config(tmp_path, manual_dir=str(manual), allow_unverified_archive=True)
    ds = cifar.load_dataset(config)
    for split in ("train", "test"):
        got = getattr(ds, split)
        np.testing.assert_array_equal(got.images, expected[f"{split}_images"])
        np.testing.assert_array_equal(got.labels, expected[f"{split}_labels"])
        np.testing.assert_array_equal(got.index, np.arange(len(got.labels)))
        assert got.images.dtype == np.uint8 and got.labels.dtype == np.int32
        assert got.index.dtype == np.int64
    np.testing.assert_array_equal(ds.test.images[0, 5, 7], [10, 20, 30])
    assert ds.num_classes == 10 and ds.class_names == tuple(C10_NAMES)
    assert ds.verified is False


def test_metadata_records_unverified_archive(tmp_path, c10_archive):
    manual, _ = c10_archive
    cifar.load_dataset(_config(tmp_path, manual_dir=str(manual), allow_unverified_archive=True))
    # A fresh builder reads what the preparation persisted.
    builder = cifar.LtrCifar10(data_dir=str(tmp_path / "tfds"))
    assert builder.is_prepared()
    assert builder.info.metadata["verified"] is False
    assert builder.info.metadata["archive_sha256"] == _sha256(manual / "cifar-10-binary.tar.gz")


def test_cifar100_round_trip_fine_and_coarse(tmp_path, c100_archive):
    manual, expected = c100_archive
    config = _config(
        tmp_path, name="cifar100", manual_dir=str(manual), allow_unverified_archive=True
    )
    ds = cifar.load_dataset(config)
    for split in ("train", "test"):
        got = getattr(ds, split)
        np.testing.assert_array_equal(got.images, expected[f"{split}_images"])
        np.testing.assert_array_equal(got.labels, expected[f"{split}_fine"])
        np.testing.assert_array_equal(got.index, np.arange(len(got.labels)))
    assert ds.num_classes == 100 and ds.class_names == tuple(C100_FINE)
    builder = cifar.LtrCifar100(data_dir=str(tmp_path / "tfds"))
    records = builder.as_data_source(split="train").__getitems__(range(C100_TRAIN_SIZE))
    coarse = sorted((int(r["index"]), int(r["coarse_label"])) for r in records)
    np.testing.assert_array_equal([c for _, c in coarse], expected["train_coarse"])
    assert builder.info.features["coarse_label"].names == C100_COARSE


def test_unverified_archive_is_refused(tmp_path, c10_archive):
    manual, _ = c10_archive
    with pytest.raises(records.UnverifiedArchiveError) as info:
        cifar.load_dataset(_config(tmp_path, manual_dir=str(manual)))
    message = str(info.value)
    assert "allow_unverified_archive" in message
    assert cifar.CIFAR10_SHA256 in message
    assert _sha256(manual / "cifar-10-binary.tar.gz") in message
    assert "cifar-10-binary.tar.gz" in message
    assert not cifar.LtrCifar10(data_dir=str(tmp_path / "tfds")).is_prepared()


def test_verified_archive_builds(tmp_path, c10_archive, monkeypatch):
    manual, expected = c10_archive
    digest = _sha256(manual / "cifar-10-binary.tar.gz")
    monkeypatch.setattr(cifar.LtrCifar10, "ARCHIVE_SHA256", digest)
    ds = cifar.load_dataset(_config(tmp_path, manual_dir=str(manual)))
    assert ds.verified is True
    np.testing.assert_array_equal(ds.train.images, expected["train_images"])
    metadata = cifar.LtrCifar10(data_dir=str(tmp_path / "tfds")).info.metadata
    assert metadata["verified"] is True and metadata["archive_sha256"] == digest


def test_unverified_preparation_is_not_reused_silently(tmp_path, c10_archive, caplog):
    manual, _ = c10_archive
    cifar.load_dataset(_config(tmp_path, manual_dir=str(manual), allow_unverified_archive=True))
    # Already prepared: the refusal must come from the recorded flag, not from the archive.
    (manual / "cifar-10-binary.tar.gz").unlink()
    with pytest.raises(records.UnverifiedArchiveError, match="allow_unverified_archive"):
        cifar.load_dataset(_config(tmp_path, manual_dir=str(manual)))
    with caplog.at_level(logging.WARNING):
        ds = cifar.load_dataset(_config(tmp_path, allow_unverified_archive=True))
    assert ds.verified is False
    assert any("UNVERIFIED" in r.getMessage() for r in caplog.records)


def test_missing_archive_without_download(tmp_path):
    manual = tmp_path / "empty_manual"
    manual.mkdir()
    with pytest.raises(records.DatasetNotFoundError) as info:
        cifar.load_dataset(_config(tmp_path, manual_dir=str(manual)))
    message = str(info.value)
    for needle in ("cifar-10-binary.tar.gz", str(manual), cifar.CIFAR10_SHA256, "manual_dir"):
        assert needle in message
    assert "download" in message


def test_missing_archive_names_default_manual_folder(tmp_path):
    with pytest.raises(records.DatasetNotFoundError, match="downloads/manual"):
        cifar.load_dataset(_config(tmp_path, name="cifar100"))


def test_download_network_error_is_clear(tmp_path, monkeypatch):
    def unreachable(self, url):
        raise ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(tfds.download.DownloadManager, "download", unreachable)
    monkeypatch.setattr(cifar, "network_reachable", lambda url: True)  # the probe passes
    with pytest.raises(records.DatasetNotFoundError, match="download failed") as info:
        cifar.load_dataset(_config(tmp_path, download=True))
    assert "cifar-10-binary.tar.gz" in str(info.value)


def test_download_is_used_when_not_in_manual_folder(tmp_path, c10_archive, monkeypatch):
    manual, expected = c10_archive
    urls = []

    def fake_download(self, url):
        urls.append(url)
        return manual / "cifar-10-binary.tar.gz"

    monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
    monkeypatch.setattr(cifar, "network_reachable", lambda url: True)
    config = _config(tmp_path, download=True, allow_unverified_archive=True)
    ds = cifar.load_dataset(config)
    assert urls == [cifar.LtrCifar10.ARCHIVE_URL]
    np.testing.assert_array_equal(ds.test.labels, expected["test_labels"])


def test_truncated_records_are_rejected():
    with pytest.raises(ValueError, match="whole number"):
        cifar._parse_records(b"\x00" * 3074, 1, "data_batch_1.bin")


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="cifar10.*cifar100.*synthetic"):
        cifar.load_dataset(_config(tmp_path, name="mnist"))


def test_synthetic_shapes_dtypes_and_determinism(tmp_path):
    config = _config(tmp_path, name="synthetic")
    ds = cifar.load_dataset(config)
    again = cifar.load_dataset(config)
    assert ds.train.images.shape == (500, 32, 32, 3) and ds.test.images.shape == (200, 32, 32, 3)
    assert ds.train.images.dtype == np.uint8 and ds.train.labels.dtype == np.int32
    assert ds.train.index.dtype == np.int64
    np.testing.assert_array_equal(ds.train.index, np.arange(500))
    np.testing.assert_array_equal(np.bincount(ds.train.labels), np.full(10, 50))
    np.testing.assert_array_equal(np.bincount(ds.test.labels), np.full(10, 20))
    assert ds.num_classes == 10 and ds.class_names[3] == "class_3" and ds.verified is True
    for split in ("train", "test"):
        np.testing.assert_array_equal(getattr(ds, split).images, getattr(again, split).images)
        np.testing.assert_array_equal(getattr(ds, split).labels, getattr(again, split).labels)
    other = synthetic.make_synthetic_dataset(10, 50, 20, seed=1)
    assert not np.array_equal(other.train.images, ds.train.images)


def test_synthetic_classes_are_distinguishable():
    ds = synthetic.make_synthetic_dataset(10, 50, 20, seed=0)
    train = ds.train.images.reshape(500, -1).astype(np.float32)
    means = np.stack([train[ds.train.labels == c].mean(0) for c in range(10)])  # [C, D]
    test = ds.test.images.reshape(200, -1).astype(np.float32)
    distances = ((test[:, None, :] - means[None]) ** 2).sum(-1)  # [N, C]
    accuracy = (distances.argmin(1) == ds.test.labels).mean()
    assert accuracy > 0.95
