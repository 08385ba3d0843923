"""ImageNet-LT and iNaturalist 2018: a manual download + split lists -> ArrayRecord, without TF.

Two TFDS builders, `ltr_imagenet_lt` and `ltr_inaturalist2018`, turn the user's copy of the
images plus the split lists of the OLTR / decoupling code (``<path> <label>`` per line, read by
`split_lists.read_split_list`) into prepared ArrayRecord datasets that
`builder.as_data_source(split)` reads back without TensorFlow. Record i of a split is line i of
its list: ``{"image": the original encoded file, byte for byte, "label": int, "index": i}``.

Images come from the manual folder in either form, chosen per top-level folder of the listed
paths (an extracted folder wins over an archive):

- ImageNet-2012: ``ILSVRC2012_img_train.tar`` (one tar per class inside) or ``train/<wnid>/``;
  ``ILSVRC2012_img_val.tar`` (flat: test-list entries are matched by file name) or
  ``val/<wnid>/`` or a flat ``val/``. ImageNet-LT's train and val lists read the official
  training images, its test list the official validation images.
- iNaturalist 2018: ``train_val2018.tar.gz`` or ``train_val2018/<supercategory>/<id>/``. Its
  train list gives `train`, its val list `test` (the usual evaluation split).

Archives are streamed once with `tarfile` (mode ``r|*``, nested tars read from the member's file
object) and never extracted. Listed images arrive in archive order, not list order, so the ones
read before their turn wait in memory (`REORDER_MEMORY_BYTES`) and beyond that in an unlinked
temporary file next to the output; for a list in random order (iNaturalist's are in annotation
order) that file grows to about the size of the listed images, and is freed when preparation
ends. Extracted folders are read in list order directly and need no temporary space.

Why not `GeneratorBasedBuilder` (as `cifar.py` does for CIFAR): its writer shuffles examples
through a buffer that, past 1 GB, spills to disk with `tf.io.gfile` and so imports TensorFlow.
`ShardBasedBuilder` (TFDS >= 4.9.10) writes each shard from our generator in our order.

The image feature is `tfds.features.Scalar(dtype=np.object_)`: a bytes scalar stored as a
``bytes_list`` through TFDS's own protobuf classes (no TensorFlow), decoded by
`deserialize_example_np` back to the same Python `bytes`. (`tfds.features.Image` would also keep
the bytes, but decodes to pixels unless every reader passes `SkipDecoding`; `Text` is for UTF-8.)

Labels of each split, the class names, the lists' sha256 and the image forms used are kept in
`info.metadata` (``metadata.json`` of the prepared dataset), so `load_image_list_dataset` gets
the labels without reading a single image record.

ImageNet-LT: Z. Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019.
iNaturalist 2018: G. Van Horn et al., "The iNaturalist Species Classification and Detection
Dataset", CVPR 2018; lists of B. Kang et al., "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import posixpath
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ltr_jax.data.datasets import cifar, records, split_lists
from ltr_jax.data.datasets.cifar import sha256_of_file
from ltr_jax.data.datasets.records import DatasetNotFoundError, UnverifiedArchiveError

IMAGENET_LT_LIST_SHA256 = {
    "train": "efdbdad4f050237c310b2f354cf95a8b1d7c8d57a63c4ea4bb6bf2bcb012f37f",
    "val": "9af7ba688acf9532ff5845a8fb14a1e97fdc4c51ac48bc72c08ea9c3f7ff142e",
    "test": "d1590191cf8a71fada7b1aaedaa2d139a2aea93ff2f1b755319d0bd8dbaa55d5",
}
INATURALIST2018_SIZES = {"train": 437_513, "test": 24_426}
DATASETS = ("imagenet_lt", "inaturalist2018")
_SHOW_MISSING = 5  # missing images named in an error message


class MissingImagesError(DatasetNotFoundError):
    """Images named by a split list are not in the manual download."""


# One split: random access to encoded images (record i = line i of its list), and its int32
# labels in source order, read from the metadata without reading the records.
ImageSplit = records.SourceSplit


@dataclasses.dataclass(frozen=True)
class ImageListDataset:
    """The train and evaluation splits of an image-list dataset."""

    train: ImageSplit
    test: ImageSplit
    num_classes: int
    class_names: tuple[str, ...]
    verified: bool  # every list with a published sha256 matched it


@dataclasses.dataclass(frozen=True)
class ImagePart:
    """The images under one top-level folder of the listed paths, as an archive or a folder.

    Attributes:
        folder: first component of the listed paths; also the extracted folder's name.
        archive: the official archive holding these images.
        layout: the extracted layout, for messages.
        nested: the archive holds one tar per class (ImageNet's training archive).
        flat: the archive has no class folders: listed images are matched by file name.
    """

    folder: str
    archive: str
    layout: str
    nested: bool = False
    flat: bool = False

    def key(self, listed: str) -> str:
        """The name under which `listed` (a path from a split list) appears in the archive."""
        return f"{self.folder}/{posixpath.basename(listed)}" if self.flat else listed

    def candidates(self, root: epath.Path, listed: str) -> list[epath.Path]:
        """Where `listed` may be in an extracted folder under `root`, in order of preference."""
        paths = [root / listed]
        if self.flat:
            paths.append(root / self.folder / posixpath.basename(listed))
        return paths

    def members(self, archive: epath.Path) -> Iterator[tuple[str, IO[bytes]]]:
        """Streams the files of the archive, in archive order, without extracting them.

        Args:
                archive: path of the (possibly compressed) tar.

        Yields:
            (key, file object); the object is readable until the next one is yielded.
        """
        with tarfile.open(os.fspath(archive), mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if self.nested:
                    yield from self._inner_members(member.name, tar.extractfile(member))
                elif self.flat:
                    yield (
                        f"{self.folder}/{posixpath.basename(member.name)}",
                        tar.extractfile(member),
                    )
                else:
                    yield posixpath.normpath(member.name), tar.extractfile(member)

    def _inner_members(self, name: str, fileobj: IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
        """Files of a per-class inner tar ``<wnid>.tar``, keyed ``<folder>/<wnid>/<file>``."""
        if not name.endswith(".tar"):
            return
        wnid = posixpath.basename(name).removesuffix(".tar")
        with tarfile.open(fileobj=fileobj, mode="r|*") as inner:
            for member in inner:
                if member.isfile():
                    key = f"{self.folder}/{wnid}/{posixpath.basename(member.name)}"
                    yield key, inner.extractfile(member)


@dataclasses.dataclass(frozen=True)
class _SplitList:
    """A split list as read: file name, image paths and labels in file order, sha256."""

    filename: str
    paths: list[str]
    labels: np.ndarray  # int32 [N]
    sha256: str


# --------------------------------------------------------------------------------------------
# Reading images: progress, archives (streamed once, reordered), extracted folders.


class _Progress:
    """Logs the count, rate and volume of processed items every `every` items."""

    def __init__(
        self,
        what: str,
        unit: str,
        total: int | None,
        every: int,
        status: Callable[[], str] | None = None,
    ):
        """Counts nothing yet; the clock starts at the first item.

        Args:
            what: what is being processed, for the message.
            unit: what is counted.
            total: the count at the end, if known (logged when reached).
            every: log every this many items.
            status: more to say, appended to the message.
        """
        self._what, self._unit, self._total, self._every = what, unit, total, every
        self._status = status or str
        self._count, self._bytes, self._start = 0, 0, None

    def update(self, num_bytes: int) -> None:
        """Counts one item of `num_bytes` bytes."""
        if self._start is None:
            self._start = time.perf_counter()
        self._count += 1
        self._bytes += num_bytes
        if self._count % self._every == 0 or self._count == self._total:
            self.log()

    def log(self) -> None:
        """Logs where the count stands."""
        elapsed = max(time.perf_counter() - (self._start or time.perf_counter()), 1e-9)
        of_total = f"/{self._total:,}" if self._total else ""
        logging.info(
            "%s: %s%s %s (%.0f/s, %.1f MB/s)%s",
            self._what,
            f"{self._count:,}",
            of_total,
            self._unit,
            self._count / elapsed,
            self._bytes / elapsed / 1e6,
            self._status(),
        )


class _ArchiveImages:
    """The listed images of one archive, streamed once and handed out in any order.

    An image read before it is asked for is held in memory while the held bytes stay under
    `memory_bytes`, and otherwise appended to an unlinked temporary file in `spill_dir`.
    """

    def __init__(
        self,
        part: ImagePart,
        archive: epath.Path,
        entries: Sequence[tuple[str, str]],
        spill_dir: str,
        memory_bytes: int,
        log_every: int,
    ):
        """Opens the archive for streaming; nothing is read until the first `read`.

        Args:
            part: how the archive is laid out.
            archive: its path.
            entries: (listed path, where it is listed) of every image that will be read; an
                image listed twice is read twice.
            spill_dir: folder of the temporary file (the system's if not a local folder).
            memory_bytes: most bytes held in memory.
            log_every: log progress every this many archive files.
        """
        self._part, self._archive = part, archive
        self._spill_dir, self._memory_limit = spill_dir, memory_bytes
        self._uses = collections.Counter(part.key(listed) for listed, _ in entries)
        self._wanted = {}  # key -> where it is first listed, for messages
        for listed, where in entries:
            self._wanted.setdefault(part.key(listed), where)
        self._members = part.members(archive)
        self._held: dict[str, bytes | tuple[int, int]] = {}  # key -> bytes | (offset, size)
        self._seen: set[str] = set()
        self._memory = self._spilled = self._spilled_images = 0
        self._spill: IO[bytes] | None = None
        self._progress = _Progress(
            f"Scanning {archive.name}", "files", None, log_every, status=self._status
        )

    def read(self, listed: str) -> bytes:
        """The bytes of the listed image, streaming on through the archive as needed.

        Raises:
            MissingImagesError: the archive ended without it (names every missing image).
        """
        key = self._part.key(listed)
        while key not in self._held:
            if not self._pull():
                raise self._missing_error()
        return self._release(key)

    def close(self) -> None:
        """Closes the archive and frees the temporary file."""
        self._members.close()
        if self._spill is not None:
            self._spill.close()
        self._progress.log()

    def _status(self) -> str:
        return (
            f"; found {len(self._seen):,}/{len(self._wanted):,} listed images, "
            f"{self._memory / 1e6:,.1f} MB waiting in memory; {self._spilled_images:,} images "
            f"({self._spilled / 1e6:,.1f} MB) went through the temporary file"
        )

    def _pull(self) -> bool:
        """Reads the next archive file, keeping it if listed; False at the end."""
        try:
            key, fileobj = next(self._members)
        except StopIteration:
            return False
        size = 0
        if key in self._uses and key not in self._seen:
            data = fileobj.read()
            size = len(data)
            self._seen.add(key)
            self._hold(key, data)
        self._progress.update(size)
        return True

    def _hold(self, key: str, data: bytes) -> None:
        if self._memory + len(data) <= self._memory_limit:
            self._held[key] = data
            self._memory += len(data)
            return
        if self._spill is None:
            folder = self._spill_dir if os.path.isdir(self._spill_dir) else None
            self._spill = tempfile.TemporaryFile(dir=folder, buffering=0)
        self._held[key] = (self._spilled, len(data))
        self._spill.write(data)
        self._spilled += len(data)
        self._spilled_images += 1

    def _release(self, key: str) -> bytes:
        """The held bytes of `key`, forgotten once every request for them is served."""
        value = self._held[key]
        self._uses[key] -= 1
        if not self._uses[key]:
            del self._held[key]
        if isinstance(value, bytes):
            if key not in self._held:
                self._memory -= len(value)
            return value
        offset, size = value
        return os.pread(self._spill.fileno(), size, offset)

    def _missing_error(self) -> MissingImagesError:
        missing = [where for key, where in self._wanted.items() if key not in self._seen]
        match = "file name" if self._part.flat else "path inside the archive"
        return MissingImagesError(
            f"{len(missing):,} of the {len(self._wanted):,} listed images are not in "
            f"{self._archive} (matched by {match}): {_first(missing)}. Is it the complete "
            "official archive?"
        )


class _FolderImages:
    """Listed images in an extracted folder, located (and checked) before anything is written."""

    def __init__(self, part: ImagePart, root: epath.Path, entries: Sequence[tuple[str, str]]):
        """Locates every listed image.

        Args:
            part: how the folder is laid out.
            root: the manual folder (holding ``part.folder``).
            entries: (listed path, where it is listed) of every image that will be read.

        Raises:
            MissingImagesError: some listed images are not there (names the first few).
        """
        self._paths: dict[str, str] = {}  # listed -> file (strings: 400k Paths weigh)
        missing = []
        for listed, where in entries:
            found = next((p for p in part.candidates(root, listed) if p.is_file()), None)
            if found is None:
                missing.append(where)
            else:
                self._paths[listed] = os.fspath(found)
        if missing:
            raise MissingImagesError(
                f"{len(missing):,} of the {len(entries):,} listed images are not in "
                f"{root / part.folder} (layout {part.layout}): {_first(missing)}."
            )

    def read(self, listed: str) -> bytes:
        """The bytes of the listed image."""
        return epath.Path(self._paths[listed]).read_bytes()


def _first(items: Sequence[str]) -> str:
    """The first few of `items`, comma-separated, with how many more there are."""
    shown = ", ".join(items[:_SHOW_MISSING])
    more = len(items) - _SHOW_MISSING
    return f"{shown}, and {more:,} more" if more > 0 else shown


# --------------------------------------------------------------------------------------------
# Split lists.


def _read_split_list(path: epath.Path, num_classes: int, parts: Sequence[ImagePart]) -> _SplitList:
    """Reads one split list and checks that its paths lie under the parts' folders.

    Raises:
        split_lists.SplitListError: a malformed list, or a path under no part's folder.
    """
    paths, labels = split_lists.read_split_list(path, num_classes=num_classes)
    allowed = {part.folder for part in parts}
    unknown = sorted({p.split("/", 1)[0] for p in paths} - allowed)
    if unknown:
        raise split_lists.SplitListError(
            f"{path}: image paths must start with one of "
            f"{sorted(f'{a}/' for a in allowed)}; found paths under {unknown[:_SHOW_MISSING]}."
        )
    return _SplitList(filename=path.name, paths=paths, labels=labels, sha256=sha256_of_file(path))


def _class_names(lists: Mapping[str, _SplitList], num_classes: int) -> list[str]:
    """Class name of each label: the folder holding its images (WordNet id, category id).

    Raises:
        split_lists.SplitListError: a folder with two labels, a label in two folders, or a
            label with no image in any list.
    """
    paths = [p for split_list in lists.values() for p in split_list.paths]
    labels = np.concatenate([split_list.labels for split_list in lists.values()])
    names = [""] * num_classes
    for folder, label in split_lists.synset_labels(paths, labels).items():
        names[label] = folder
    unnamed = [str(c) for c, name in enumerate(names) if not name]
    if unnamed:
        files = ", ".join(split_list.filename for split_list in lists.values())
        raise split_lists.SplitListError(
            f"{len(unnamed)} of the {num_classes} labels have no image in {files}, so they "
            f"cannot be named: {_first(unnamed)}."
        )
    return names


# --------------------------------------------------------------------------------------------
# TFDS builders.


class _ImageListBuilder(cifar.LocalCodePath, tfds.core.ShardBasedBuilder, skip_registration=True):
    """Shared code: split lists + manual image download -> ArrayRecord in list order."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Original encoded images in split-list order; labels in the metadata.",
    }
    LISTS: ClassVar[dict[str, str]]  # split -> list file name
    LIST_SHA256: ClassVar[dict[str, str]]  # split -> published sha256 (splits without: none)
    LIST_SIZES: ClassVar[dict[str, int]]  # split -> expected number of images (warning only)
    LIST_SOURCE: ClassVar[str]  # where to get the lists, for messages
    PARTS: ClassVar[tuple[ImagePart, ...]]
    NUM_CLASSES: ClassVar[int]  # tests patch it to build small datasets
    TEST_SPLITS: ClassVar[dict[str, str]]  # config test_split -> split evaluated on
    DESCRIPTION: ClassVar[str]
    HOMEPAGE: ClassVar[str]
    CITATION: ClassVar[str]
    EXAMPLES_PER_SHARD: ClassVar[int] = 1024  # TFDS holds a shard's examples in memory
    REORDER_MEMORY_BYTES: ClassVar[int] = 1 << 30  # per archive; more waits on disk
    LOG_EVERY: ClassVar[int] = 5000

    def __init__(
        self,
        *,
        split_dir: epath.PathLike | None = None,
        allow_unverified_archive: bool = False,
        **kwargs: Any,
    ):
        """Builder; `kwargs` go to `tfds.core.ShardBasedBuilder` (`data_dir`, ...).

        Args:
                split_dir: folder of the split lists; None: the manual folder.
                allow_unverified_archive: build from lists whose sha256 is not the published one.
                **kwargs: passed on to TFDS.
        """
        self._split_dir = epath.Path(split_dir) if split_dir else None
        self._allow_unverified_archive = allow_unverified_archive
        self._cleanup: contextlib.ExitStack | None = None
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Scalar(
                        dtype=np.object_, doc="The original encoded image file, unchanged."
                    ),
                    "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
                    "index": tfds.features.Scalar(
                        dtype=np.int64, doc="Position in the split list."
                    ),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            metadata=tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager, download_config=None) -> None:
        # Archive readers opened while planning the shards are closed when writing ends.
        try:
            with contextlib.ExitStack() as self._cleanup:
                super()._download_and_prepare(dl_manager, download_config)
        finally:
            self._cleanup = None

    def _shard_iterators_per_split(
        self, dl_manager: tfds.download.DownloadManager
    ) -> dict[str, list[Callable[[], Iterator[tuple[int, dict[str, Any]]]]]]:
        manual = cifar.manual_folder(dl_manager)
        lists = self._read_lists(self._split_dir or manual)
        verified = self._check_lists(lists)
        self.info.features["label"].names = _class_names(lists, self.NUM_CLASSES)
        readers, forms = self._open_images(manual, lists)
        self.info.metadata.update(
            {
                "verified": verified,
                "lists": {split: self._list_record(split, sl) for split, sl in lists.items()},
                "image_sources": forms,
                "labels": {split: sl.labels.tolist() for split, sl in lists.items()},
            }
        )
        return {split: self._shards(split, sl, readers) for split, sl in lists.items()}

    def _read_lists(self, folder: epath.Path | None) -> dict[str, _SplitList]:
        if folder is None:
            raise DatasetNotFoundError(
                f"No folder given for the split lists {list(self.LISTS.values())}: pass "
                "--config.data.split_dir or --config.data.manual_dir."
            )
        lists = {}
        for split, filename in self.LISTS.items():
            if not (folder / filename).exists():
                raise DatasetNotFoundError(self._missing_list_message(folder, split))
            lists[split] = _read_split_list(folder / filename, self.NUM_CLASSES, self.PARTS)
            expected = self.LIST_SIZES.get(split)
            if expected is not None and len(lists[split].paths) != expected:
                logging.warning(
                    "%s lists %d images; the published list has %d.",
                    folder / filename,
                    len(lists[split].paths),
                    expected,
                )
        return lists

    def _missing_list_message(self, folder: epath.Path, split: str) -> str:
        filename = self.LISTS[split]
        published = self.LIST_SHA256.get(split)
        checksum = f"sha256 {published}, " if published else ""
        return (
            f"Split list {filename} not found in {folder}. Put {filename} ({checksum}"
            f"{self.LIST_SOURCE}) in {folder}, or pass --config.data.split_dir=<folder holding "
            "the split lists>."
        )

    def _check_lists(self, lists: Mapping[str, _SplitList]) -> bool:
        """True if every list with a published sha256 matches it; refuses a mismatch unless
        explicitly allowed."""
        wrong = [
            f"{sl.filename} has sha256 {sl.sha256}, the published one is {self.LIST_SHA256[split]}"
            for split, sl in lists.items()
            if split in self.LIST_SHA256 and sl.sha256 != self.LIST_SHA256[split]
        ]
        if not wrong:
            return True
        message = "; ".join(wrong)
        if not self._allow_unverified_archive:
            raise UnverifiedArchiveError(
                f"{message}. Refusing to build {self.name} from lists that are not the "
                "published ones. To build anyway (the prepared dataset will record "
                "verified=False), set --config.data.allow_unverified_archive=True."
            )
        logging.warning("Building %s from UNVERIFIED split lists: %s.", self.name, message)
        return False

    def _list_record(self, split: str, split_list: _SplitList) -> dict[str, Any]:
        return {
            "file": split_list.filename,
            "sha256": split_list.sha256,
            "published_sha256": self.LIST_SHA256.get(split),
            "images": len(split_list.paths),
        }

    def _open_images(
        self, manual: epath.Path | None, lists: Mapping[str, _SplitList]
    ) -> tuple[dict[str, _ArchiveImages | _FolderImages], dict[str, str]]:
        """A reader per part the lists use, and the form each came from (for the metadata)."""
        readers, forms = {}, {}
        for part in self.PARTS:
            entries = [
                (listed, f"{listed} ({sl.filename})")
                for sl in lists.values()
                for listed in sl.paths
                if listed.split("/", 1)[0] == part.folder
            ]
            if entries:
                readers[part.folder], forms[part.folder] = self._open_part(manual, part, entries)
        return readers, forms

    def _open_part(
        self, manual: epath.Path | None, part: ImagePart, entries: Sequence[tuple[str, str]]
    ) -> tuple[_ArchiveImages | _FolderImages, str]:
        """The reader of one part: its extracted folder if there, else its archive."""
        if manual is not None and (manual / part.folder).is_dir():
            logging.info("Reading %s images from the folder %s.", part.folder, manual / part.folder)
            return _FolderImages(part, manual, entries), f"folder {part.folder}/"
        if manual is not None and (manual / part.archive).is_file():
            logging.info("Streaming %s images from %s.", part.folder, manual / part.archive)
            reader = _ArchiveImages(
                part,
                manual / part.archive,
                entries,
                spill_dir=os.fspath(self.data_dir),
                memory_bytes=self.REORDER_MEMORY_BYTES,
                log_every=self.LOG_EVERY,
            )
            self._cleanup.callback(reader.close)
            return reader, f"archive {part.archive}"
        raise DatasetNotFoundError(
            f"No images for the {part.folder}/ entries of the split lists in {manual}: looked "
            f"for the archive {part.archive} and for the extracted folder {part.folder}/ "
            f"({part.layout}). Put either in {manual}, or pass "
            "--config.data.manual_dir=<folder holding it>."
        )

    def _shards(
        self,
        split: str,
        split_list: _SplitList,
        readers: Mapping[str, _ArchiveImages | _FolderImages],
    ) -> list[Callable[[], Iterator[tuple[int, dict[str, Any]]]]]:
        """One example generator per shard of `EXAMPLES_PER_SHARD` consecutive list entries."""
        size = len(split_list.paths)
        progress = _Progress(f"{self.name} {split}", "images written", size, self.LOG_EVERY)
        return [
            functools.partial(
                _examples,
                split_list,
                range(lo, min(lo + self.EXAMPLES_PER_SHARD, size)),
                readers,
                progress,
            )
            for lo in range(0, size, self.EXAMPLES_PER_SHARD)
        ]


def _examples(
    split_list: _SplitList,
    indices: range,
    readers: Mapping[str, _ArchiveImages | _FolderImages],
    progress: _Progress,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, example) for the given list entries, in list order."""
    for index in indices:
        listed = split_list.paths[index]
        image = readers[listed.split("/", 1)[0]].read(listed)
        progress.update(len(image))
        yield index, {"image": image, "label": int(split_list.labels[index]), "index": index}


_IMAGENET_PARTS = (
    ImagePart(
        folder="train",
        archive="ILSVRC2012_img_train.tar",
        layout="train/<wnid>/<wnid>_<n>.JPEG",
        nested=True,
    ),
    ImagePart(
        folder="val",
        archive="ILSVRC2012_img_val.tar",
        layout="val/<wnid>/ILSVRC2012_val_<n>.JPEG or val/ILSVRC2012_val_<n>.JPEG",
        flat=True,
    ),
)
_INATURALIST_PARTS = (
    ImagePart(
        folder="train_val2018",
        archive="train_val2018.tar.gz",
        layout="train_val2018/<supercategory>/<category id>/<hash>.jpg",
    ),
)


class LtrImagenetLt(_ImageListBuilder):
    """ImageNet-LT (1000 classes): the OLTR split lists over the ImageNet-2012 images."""

    LISTS: ClassVar[dict[str, str]] = {
        "train": "ImageNet_LT_train.txt",
        "val": "ImageNet_LT_val.txt",
        "test": "ImageNet_LT_test.txt",
    }
    LIST_SHA256: ClassVar[dict[str, str]] = IMAGENET_LT_LIST_SHA256
    LIST_SIZES: ClassVar[dict[str, int]] = split_lists.IMAGENET_LT_SIZES
    LIST_SOURCE = "linked from the README of github.com/zhmiao/OpenLongTailRecognition-OLTR"
    PARTS = _IMAGENET_PARTS
    NUM_CLASSES = split_lists.NUM_CLASSES
    TEST_SPLITS: ClassVar[dict[str, str]] = {"test": "test", "val": "val"}
    DESCRIPTION = (
        "ImageNet-LT (Liu et al. 2019): 115,846 long-tailed training images of ImageNet-2012 "
        "(1280 to 5 per class), a balanced val split (20 per class, official training images) "
        "and test split (50 per class, the official validation images). Original encoded "
        "files, in split-list order."
    )
    HOMEPAGE = "https://github.com/zhmiao/OpenLongTailRecognition-OLTR"
    CITATION = """@inproceedings{liu2019large,
  title={Large-Scale Long-Tailed Recognition in an Open World},
  author={Liu, Ziwei and Miao, Zhongqi and Zhan, Xiaohang and Wang, Jiayun and Gong, Boqing
          and Yu, Stella X.}, booktitle={CVPR}, year={2019}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the ImageNet-2012 images in the manual folder (--config.data.manual_dir; TFDS: "
        "--manual_dir), either as the official ILSVRC2012_img_train.tar and "
        "ILSVRC2012_img_val.tar (from image-net.org; not extracted) or as the extracted folders "
        "train/<wnid>/ and val/<wnid>/ (or a flat val/). Put the ImageNet-LT split lists "
        "ImageNet_LT_{train,val,test}.txt (" + LIST_SOURCE + ") in --config.data.split_dir "
        "(default: the manual folder)."
    )


class LtrInaturalist2018(_ImageListBuilder):
    """iNaturalist 2018 (8142 classes) with the decoupling code's lists; val list -> test."""

    LISTS: ClassVar[dict[str, str]] = {
        "train": "iNaturalist18_train.txt",
        "test": "iNaturalist18_val.txt",
    }
    LIST_SHA256: ClassVar[dict[str, str]] = {}  # none published; recorded, not checked
    LIST_SIZES: ClassVar[dict[str, int]] = INATURALIST2018_SIZES
    LIST_SOURCE = (
        "github.com/facebookresearch/classifier-balancing, data/iNaturalist18/, or made from the "
        "official train2018.json/val2018.json by its gen_lists.py"
    )
    PARTS = _INATURALIST_PARTS
    NUM_CLASSES = 8142
    TEST_SPLITS: ClassVar[dict[str, str]] = {"test": "test", "val": "test"}
    DESCRIPTION = (
        "iNaturalist 2018 (Van Horn et al. 2018): 437,513 training images of 8142 species "
        "(long-tailed), evaluated on the 24,426 official validation images (split 'test'). "
        "Original encoded files, in split-list order."
    )
    HOMEPAGE = "https://github.com/visipedia/inat_comp/tree/master/2018"
    CITATION = """@inproceedings{van2018inaturalist,
  title={The iNaturalist Species Classification and Detection Dataset},
  author={Van Horn, Grant and Mac Aodha, Oisin and Song, Yang and Cui, Yin and Sun, Chen and
          Shepard, Alex and Adam, Hartwig and Perona, Pietro and Belongie, Serge},
  booktitle={CVPR}, year={2018}}"""
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the official train_val2018.tar.gz (not extracted) or its extracted folder "
        "train_val2018/<supercategory>/<category id>/ in the manual folder "
        "(--config.data.manual_dir; TFDS: --manual_dir), and the split lists "
        "iNaturalist18_train.txt and iNaturalist18_val.txt (" + LIST_SOURCE + ") in "
        "--config.data.split_dir (default: the manual folder)."
    )


_BUILDERS: Mapping[str, type[_ImageListBuilder]] = {
    "imagenet_lt": LtrImagenetLt,
    "inaturalist2018": LtrInaturalist2018,
}


# --------------------------------------------------------------------------------------------
# Public API.


def load_image_list_dataset(data_config: Any) -> ImageListDataset:
    """Prepares the configured dataset if needed, then opens its train and evaluation splits.

    Args:
        data_config: read-only ConfigDict with `name` (one of `DATASETS`), `data_dir` (TFDS
            data dir, None for the TFDS default), `manual_dir` (folder of the image download,
            None for <data_dir>/downloads/manual), `split_dir` (folder of the split lists, None
            for the manual folder), `allow_unverified_archive`, and `test_split` ("test" or
            "val": the ImageNet-LT list evaluated on; iNaturalist always uses its val list).

    Returns:
        An `ImageListDataset` whose sources read the records in split-list order.

    Raises:
        ValueError: unknown dataset name or test split.
        DatasetNotFoundError: a split list or the images are not where they should be
            (`MissingImagesError` when only some listed images are absent).
        UnverifiedArchiveError: the lists, or those of an earlier preparation, do not match the
            published sha256 and `allow_unverified_archive` is False.
    """
    name = data_config.name
    if name not in _BUILDERS:
        raise ValueError(f"Unknown image-list dataset {name!r}; valid names: {DATASETS}.")
    builder_cls = _BUILDERS[name]
    if data_config.test_split not in builder_cls.TEST_SPLITS:
        raise ValueError(
            f"test_split={data_config.test_split!r}; valid: {sorted(builder_cls.TEST_SPLITS)}."
        )
    split_dir = data_config.split_dir or data_config.manual_dir
    builder = builder_cls(
        data_dir=data_config.data_dir,
        file_format="array_record",
        split_dir=split_dir,
        allow_unverified_archive=data_config.allow_unverified_archive,
    )
    cifar.prepare(builder, data_config.manual_dir)
    verified = _check_prepared(builder, data_config.allow_unverified_archive)
    if split_dir:
        _check_same_lists(builder, epath.Path(split_dir))
    label = builder.info.features["label"]
    return ImageListDataset(
        train=_image_split(builder, "train"),
        test=_image_split(builder, builder_cls.TEST_SPLITS[data_config.test_split]),
        num_classes=label.num_classes,
        class_names=tuple(label.names),
        verified=verified,
    )


def _check_prepared(builder: _ImageListBuilder, allow_unverified_archive: bool) -> bool:
    """Reads back whether the prepared data came from verified lists."""
    metadata = builder.info.metadata or {}
    if metadata.get("verified", False):
        return True
    lists = metadata.get("lists", {})
    shas = ", ".join(f"{entry['file']} sha256 {entry['sha256']}" for entry in lists.values())
    message = f"{builder.name} in {builder.data_dir} was prepared from UNVERIFIED lists ({shas})."
    if not allow_unverified_archive:
        raise UnverifiedArchiveError(
            f"{message} Set --config.data.allow_unverified_archive=True to use it, or delete "
            "that folder to prepare again from the published lists."
        )
    logging.warning("%s Using it because allow_unverified_archive=True.", message)
    return False


def _check_same_lists(builder: _ImageListBuilder, split_dir: epath.Path) -> None:
    """Refuses a prepared dataset made from other lists than those now in `split_dir`."""
    for entry in builder.info.metadata.get("lists", {}).values():
        path = split_dir / entry["file"]
        if path.exists() and (actual := sha256_of_file(path)) != entry["sha256"]:
            raise ValueError(
                f"{builder.name} in {builder.data_dir} was prepared from a {entry['file']} with "
                f"sha256 {entry['sha256']}, but {path} has sha256 {actual}. Delete that folder "
                "to prepare again from the new lists, or use another --config.data.data_dir."
            )


def _image_split(builder: _ImageListBuilder, split: str) -> ImageSplit:
    """A split's data source and its labels from the metadata."""
    source = builder.as_data_source(split=split)
    labels = np.asarray(builder.info.metadata["labels"][split], np.int32)
    if len(labels) != len(source):
        raise ValueError(
            f"{builder.data_dir}: {len(source)} {split} records but {len(labels)} labels in "
            "metadata.json; delete that folder to prepare it again."
        )
    return ImageSplit(source=source, labels=labels)
