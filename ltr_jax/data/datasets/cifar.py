"""Dataset sources: official CIFAR archives -> prepared TFDS datasets -> numpy arrays.

With `image_lists` (ImageNet-LT, iNaturalist), the only modules of `ltr_jax` that import
`tensorflow_datasets`, and neither needs TensorFlow: our own builders (`ltr_cifar10`,
`ltr_cifar100`) read the OFFICIAL binary archives with the standard library's `tarfile`, check
their sha256 themselves, and write ArrayRecord files that `as_data_source` reads back without
TensorFlow. (The stock `cifar10`/`cifar100` builders, `tfds.load` and
`DownloadManager.extract` all import TensorFlow.)

The rest of the project calls only `load_dataset(config.data)`, which returns every image of
both official splits as numpy arrays sorted by their original position in the official split
(the long-tailed subsetting, which needs that order, is `long_tail.apply`). `name="synthetic"`
gives the small, deterministic, learnable CIFAR-like dataset of `synthetic`.

CIFAR: A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import socket
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ltr_jax.data.datasets import synthetic
from ltr_jax.data.datasets.records import (
    Dataset,
    DatasetNotFoundError,
    Split,
    UnverifiedArchiveError,
)

CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
CIFAR100_SHA256 = "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"
DATASET_NAMES = ("cifar10", "cifar100", "synthetic")

_IMAGE_SHAPE = (32, 32, 3)
_PIXEL_BYTES = 32 * 32 * 3
_READ_CHUNK = 4096  # records per bulk `__getitems__` call
_CITATION = """@techreport{krizhevsky2009learning,
  title={Learning Multiple Layers of Features from Tiny Images},
  author={Krizhevsky, Alex}, institution={University of Toronto}, year={2009}}"""


# --------------------------------------------------------------------------------------------
# Archive helpers (standard library only).


def sha256_of_file(path: epath.PathLike, block_size: int = 1 << 20) -> str:
    """Returns the hex sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with epath.Path(path).open("rb") as f:
        while block := f.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def _read_members(path: epath.PathLike, names: Sequence[str]) -> dict[str, bytes]:
    """Reads the named members of a (gzipped) tar archive in one sequential pass."""
    wanted, found = set(names), {}
    with tarfile.open(str(path), mode="r:*") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    missing = sorted(wanted - set(found))
    if missing:
        raise ValueError(f"Archive {path} lacks the members {missing}: not an official archive.")
    return found


def _parse_names(text: bytes, expected: int, member: str) -> list[str]:
    """Class names from a meta member: one per line, blank lines ignored."""
    names = [line.strip() for line in text.decode("utf-8").splitlines() if line.strip()]
    if len(names) != expected:
        raise ValueError(f"{member} lists {len(names)} class names, expected {expected}.")
    return names


def _parse_records(data: bytes, label_bytes: int, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Splits binary records into labels [N, label_bytes] and HWC images [N, 32, 32, 3]."""
    record = label_bytes + _PIXEL_BYTES
    if len(data) % record:
        raise ValueError(
            f"{member}: {len(data)} bytes is not a whole number of {record}-byte records."
        )
    rows = np.frombuffer(data, np.uint8).reshape(-1, record)
    # Each record stores the R, G and B planes one after the other, each 32x32 row-major.
    images = rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return rows[:, :label_bytes], images


# --------------------------------------------------------------------------------------------
# TFDS builders.


class LocalCodePath:
    """Builder mixin: `code_path` is the builder's own file. (TFDS's version imports
    `importlib_resources`, not installed here.)"""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))


class _LtrCifarBuilder(LocalCodePath, tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared code of the CIFAR builders: official binary archive -> ArrayRecord."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Official binary archive; fine label, original index, archive sha256.",
    }
    ARCHIVE_FILENAME: ClassVar[str]
    ARCHIVE_URL: ClassVar[str]
    ARCHIVE_SHA256: ClassVar[str]
    TRAIN_MEMBERS: ClassVar[tuple[str, ...]]
    TEST_MEMBERS: ClassVar[tuple[str, ...]]
    NAMES_MEMBERS: ClassVar[dict[str, str]]  # feature name -> member listing its class names
    NUM_CLASSES: ClassVar[dict[str, int]]  # feature name -> number of classes
    LABEL_BYTES: ClassVar[tuple[str, ...]]  # feature stored in each leading record byte

    def __init__(
        self, *, allow_unverified_archive: bool = False, download: bool = True, **kwargs: Any
    ):
        """Builder; `kwargs` go to `tfds.core.GeneratorBasedBuilder` (`data_dir`, ...).

        Args:
            allow_unverified_archive: build from an archive whose sha256 is not the official one.
            download: allow downloading the archive when it is not in the manual folder.
            **kwargs: passed on to TFDS.
        """
        self._allow_unverified_archive = allow_unverified_archive
        self._download = download
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        labels = {
            name: tfds.features.ClassLabel(num_classes=n) for name, n in self.NUM_CLASSES.items()
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=_IMAGE_SHAPE, dtype=np.uint8),
                    **labels,
                    "index": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
            citation=_CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        archive = self._acquire_archive(dl_manager)
        verified = self._check_archive(archive)
        members = _read_members(
            archive, self.TRAIN_MEMBERS + self.TEST_MEMBERS + tuple(self.NAMES_MEMBERS.values())
        )
        for feature, member in self.NAMES_MEMBERS.items():
            names = _parse_names(members[member], self.NUM_CLASSES[feature], member)
            self.info.features[feature].names = names
        self.info.metadata.update({"archive": self.ARCHIVE_FILENAME, "verified": verified})
        return {
            "train": self._generate_examples({m: members[m] for m in self.TRAIN_MEMBERS}),
            "test": self._generate_examples({m: members[m] for m in self.TEST_MEMBERS}),
        }

    def _generate_examples(
        self, blobs: Mapping[str, bytes]
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yields (index, example) in archive order; index counts across the split's files."""
        index = 0
        for member, blob in blobs.items():
            labels, images = _parse_records(blob, len(self.LABEL_BYTES), member)
            for label_row, image in zip(labels, images, strict=True):
                example = {
                    name: int(v) for name, v in zip(self.LABEL_BYTES, label_row, strict=True)
                }
                example.update(image=np.ascontiguousarray(image), index=index)
                yield index, example
                index += 1

    def _acquire_archive(self, dl_manager: tfds.download.DownloadManager) -> epath.Path:
        """The archive from the manual folder if there, else downloaded, else a clear error."""
        folder = manual_folder(dl_manager)
        local = folder / self.ARCHIVE_FILENAME if folder else None
        if local is not None and local.exists():
            logging.info("Using %s from the manual folder.", local)
            return local
        if not self._download:
            raise DatasetNotFoundError(self._missing_message(folder, "download is disabled"))
        if not network_reachable(self.ARCHIVE_URL):  # fail in seconds, not minutes of retries
            host = urllib.parse.urlsplit(self.ARCHIVE_URL).hostname
            raise DatasetNotFoundError(
                self._missing_message(folder, f"download impossible: {host} is unreachable")
            )
        try:
            return epath.Path(dl_manager.download(self.ARCHIVE_URL))
        except (OSError, tfds.download.DownloadError) as exc:
            raise DatasetNotFoundError(
                self._missing_message(folder, f"download failed: {exc}")
            ) from exc

    def _missing_message(self, folder: epath.Path | None, reason: str) -> str:
        # Advice that fits the settings: enabling download only helps when it is off.
        other = (
            "rerun where the network is reachable"
            if self._download
            else "enable download with --config.data.download=True"
        )
        return (
            f"{self.ARCHIVE_FILENAME} not found ({reason}). Put {self.ARCHIVE_FILENAME} "
            f"(sha256 {self.ARCHIVE_SHA256}, from {self.ARCHIVE_URL}) in {folder} or pass "
            f"--config.data.manual_dir=<folder holding it>, or {other}."
        )

    def _check_archive(self, archive: epath.Path) -> bool:
        """Records the archive's sha256; refuses a mismatch unless explicitly allowed."""
        logging.info("Computing the sha256 of %s.", archive)
        actual = sha256_of_file(archive)
        self.info.metadata["archive_sha256"] = actual
        if actual == self.ARCHIVE_SHA256:
            return True
        if not self._allow_unverified_archive:
            raise UnverifiedArchiveError(
                f"{archive} has sha256 {actual}, expected the official {self.ARCHIVE_SHA256}. "
                "Refusing to build from it. To build anyway (the prepared dataset will record "
                "verified=False), set --config.data.allow_unverified_archive=True."
            )
        logging.warning(
            "Building %s from UNVERIFIED archive %s (sha256 %s, official %s).",
            self.name,
            archive,
            actual,
            self.ARCHIVE_SHA256,
        )
        return False


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")


def network_reachable(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout_s`` (name lookup
    included). True when a proxy is configured: the download then goes through it."""
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    reached = []

    def probe():
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
            reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)  # a name lookup ignores timeouts
    thread.start()
    thread.join(timeout_s + 1.0)
    return bool(reached)


def manual_folder(dl_manager: tfds.download.DownloadManager) -> epath.Path | None:
    """The configured manual folder, whether or not it exists yet.

    `dl_manager.manual_dir` raises when the folder is missing or empty, but the error for a
    missing archive must name the folder, so read the attribute TFDS stores it in.
    """
    folder = getattr(dl_manager, "_manual_dir", None)
    return epath.Path(folder) if folder else None


def _manual_instructions(filename: str, url: str, sha256: str) -> str:
    return (
        f"Download {filename} (sha256 {sha256}) from {url} and put the file, unextracted, in "
        "the manual folder: the one given by --config.data.manual_dir (TFDS: --manual_dir), "
        "by default <data_dir>/downloads/manual."
    )


class LtrCifar10(_LtrCifarBuilder):
    """CIFAR-10 from the official binary archive, with each image's original index."""

    ARCHIVE_FILENAME = "cifar-10-binary.tar.gz"
    ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    ARCHIVE_SHA256 = CIFAR10_SHA256
    MANUAL_DOWNLOAD_INSTRUCTIONS = _manual_instructions(
        ARCHIVE_FILENAME, ARCHIVE_URL, CIFAR10_SHA256
    )
    TRAIN_MEMBERS = tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6))
    TEST_MEMBERS = ("cifar-10-batches-bin/test_batch.bin",)
    NAMES_MEMBERS: ClassVar[dict[str, str]] = {"label": "cifar-10-batches-bin/batches.meta.txt"}
    NUM_CLASSES: ClassVar[dict[str, int]] = {"label": 10}
    LABEL_BYTES = ("label",)


class LtrCifar100(_LtrCifarBuilder):
    """CIFAR-100 (fine labels, coarse kept too) from the official binary archive."""

    ARCHIVE_FILENAME = "cifar-100-binary.tar.gz"
    ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
    ARCHIVE_SHA256 = CIFAR100_SHA256
    MANUAL_DOWNLOAD_INSTRUCTIONS = _manual_instructions(
        ARCHIVE_FILENAME, ARCHIVE_URL, CIFAR100_SHA256
    )
    TRAIN_MEMBERS = ("cifar-100-binary/train.bin",)
    TEST_MEMBERS = ("cifar-100-binary/test.bin",)
    NAMES_MEMBERS: ClassVar[dict[str, str]] = {
        "label": "cifar-100-binary/fine_label_names.txt",
        "coarse_label": "cifar-100-binary/coarse_label_names.txt",
    }
    NUM_CLASSES: ClassVar[dict[str, int]] = {"label": 100, "coarse_label": 20}
    LABEL_BYTES = ("coarse_label", "label")


_BUILDERS: Mapping[str, type[_LtrCifarBuilder]] = {"cifar10": LtrCifar10, "cifar100": LtrCifar100}


# --------------------------------------------------------------------------------------------
# Public API.


def load_dataset(data_config: Any) -> Dataset:
    """Loads both splits of the configured dataset into memory.

    Args:
        data_config: read-only ConfigDict with `name` ("cifar10" | "cifar100" | "synthetic"),
            `data_dir` (TFDS data dir, None for the TFDS default), `manual_dir` (folder holding
            the official archive, or None), `download`, `allow_unverified_archive`, and
            `synthetic` (`num_classes`, `train_per_class`, `test_per_class`, `seed`).

    Returns:
        A `Dataset` whose splits are sorted by original index.

    Raises:
        ValueError: unknown dataset name.
        DatasetNotFoundError: no archive in the manual folder and it cannot be downloaded.
        UnverifiedArchiveError: the archive, or an earlier preparation, is not verified and
            `allow_unverified_archive` is False.
    """
    name = data_config.name
    if name == "synthetic":  # kept for callers of this function; the registry has its own
        return synthetic.load_synthetic(data_config)
    if name not in _BUILDERS:
        raise ValueError(f"Unknown dataset name {name!r}; valid names: {DATASET_NAMES}.")
    builder = _BUILDERS[name](
        data_dir=data_config.data_dir,
        file_format="array_record",
        allow_unverified_archive=data_config.allow_unverified_archive,
        download=data_config.download,
    )
    prepare(builder, data_config.manual_dir)
    verified = _check_prepared(builder, data_config.allow_unverified_archive)
    label = builder.info.features["label"]
    return Dataset(
        train=_read_split(builder, "train"),
        test=_read_split(builder, "test"),
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        verified=verified,
    )


def prepare(builder: tfds.core.DatasetBuilder, manual_dir: str | None) -> None:
    """Builds a builder's ArrayRecord files (offline, manual folder ``manual_dir``) unless
    already there."""
    if builder.is_prepared():
        logging.info("%s already prepared in %s.", builder.name, builder.data_dir)
        return
    logging.info("Preparing %s in %s ...", builder.name, builder.data_dir)
    start = time.perf_counter()
    builder.download_and_prepare(
        file_format="array_record",
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual_dir,
            # Nothing of ours is on the TFDS bucket; asking would need the network.
            try_download_gcs=False,
        ),
    )
    logging.info("Prepared %s in %.1f s.", builder.name, time.perf_counter() - start)


def _check_prepared(builder: _LtrCifarBuilder, allow_unverified_archive: bool) -> bool:
    """Reads back whether the prepared data came from a verified archive."""
    metadata = builder.info.metadata or {}
    verified = bool(metadata.get("verified", False))
    if verified:
        return True
    message = (
        f"{builder.name} in {builder.data_dir} was prepared from an UNVERIFIED archive "
        f"(sha256 {metadata.get('archive_sha256')}, official {builder.ARCHIVE_SHA256})."
    )
    if not allow_unverified_archive:
        raise UnverifiedArchiveError(
            f"{message} Set --config.data.allow_unverified_archive=True to use it, or delete "
            "that folder to prepare again from the official archive."
        )
    logging.warning("%s Using it because allow_unverified_archive=True.", message)
    return False


def _read_split(builder: _LtrCifarBuilder, split: str) -> Split:
    """Reads a whole prepared split, sorted by original index."""
    start = time.perf_counter()
    images, labels, index = _read_all(builder.as_data_source(split=split))
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise ValueError(f"{builder.data_dir}: the {split} indices are not 0..{len(index) - 1}.")
    logging.info(
        "Read %d %s records of %s in %.1f s.",
        len(order),
        split,
        builder.name,
        time.perf_counter() - start,
    )
    return Split(images=images[order], labels=labels[order], index=index[order])


def _read_all(source: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every record of a data source, in bulk `__getitems__` chunks: images, labels, index."""
    images, labels, index = [], [], []
    for lo in range(0, len(source), _READ_CHUNK):
        records = source.__getitems__(range(lo, min(lo + _READ_CHUNK, len(source))))
        images.append(np.stack([r["image"] for r in records]))  # [chunk, 32, 32, 3]
        labels.append(np.array([r["label"] for r in records], np.int32))
        index.append(np.array([r["index"] for r in records], np.int64))
    if not images:
        return np.zeros((0, *_IMAGE_SHAPE), np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int64)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(index)
