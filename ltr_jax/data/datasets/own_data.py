"""Your own dataset: an image folder, NumPy arrays, or any prepared TFDS dataset, no TensorFlow.

Each loader turns ``config.data`` into a `records.Dataset` (both splits in memory, balanced or
not) or, for a large image folder, a `records.StreamedDataset` of image files that the
streaming inputs decode on the fly; the long tail of ``data.imbalance_factor`` /
``data.class_counts`` and the cap of ``data.max_per_class`` are applied afterwards to either,
as for CIFAR (`long_tail.apply`):

- ``image_folder``: ``train_path/<class>/<image>`` (any format Pillow reads, in nested folders
  too), classes in sorted folder-name order; ``test_path`` the same layout, or, when it is
  None, a seeded per-class ``test_fraction`` of the training folder. Up to
  ``data.stream_above`` images are decoded once, resized (shorter side) and centre-cropped to
  ``data.image_size``; more are streamed (random resized crops of ``data.image_size``).
- ``arrays``: ``.npz`` files (comma-separated for several, concatenated) each holding
  ``images`` uint8 [N, H, W] or [N, H, W, C] and integer ``labels`` [N], optionally
  ``class_names`` [C]; ``test_path`` or a held-out ``test_fraction`` as above. Images are
  kept at their own size.
- ``tfds:<name>``: a TFDS image-classification dataset already prepared in ``data.data_dir``
  (array_record format), read with ``as_data_source`` (no TensorFlow); its feature keys and
  splits are ``data.tfds``; class names from the label's ``ClassLabel`` metadata. Images whose
  size differs from ``data.image_size`` are resized and centre-cropped to it.

Channels are decided once, here: 1-channel (grayscale) images are replicated to 3 channels
and an alpha channel is dropped, so every encoder and the SimCLR colour augmentations take
the data unchanged (grayscale costs 3x its memory). Any other layout fails with its shape.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from typing import Any

import numpy as np
from PIL import Image

from ltr_jax.data import pixels
from ltr_jax.data.datasets import records
from ltr_jax.data.datasets.records import DatasetError, StreamedDataset


@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """Image files with labels, read as bytes on access (picklable for worker processes)."""

    paths: tuple[str, ...]
    labels: np.ndarray  # int32 [N]

    @property
    def source(self) -> ImageFiles:
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        with open(self.paths[i], "rb") as f:
            return {"image": f.read(), "label": int(self.labels[i]), "index": int(i)}

    def take(self, positions: np.ndarray) -> ImageFiles:
        """The files at ``positions``."""
        return ImageFiles(tuple(self.paths[i] for i in positions), self.labels[positions])


# --------------------------------------------------------------------------------------------
# Pixels.


def to_rgb(images: np.ndarray, what: str) -> np.ndarray:
    """uint8 [N, H, W, 3] from [N, H, W] or [N, H, W, C] with C in 1 (replicated), 3, 4 (RGBA:
    alpha dropped); anything else fails naming ``what`` and its shape."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DatasetError(f"{what}: images are {images.dtype}; ltr_jax takes uint8 (0..255).")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DatasetError(
            f"{what}: images of shape {images.shape}; ltr_jax takes [N, H, W] or [N, H, W, C] "
            "with C = 1 (grayscale, expanded to 3 channels), 3 (RGB) or 4 (RGBA, alpha dropped)."
        )
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    return images[..., :3]


def fit_image(image: Image.Image, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: RGB, shorter side resized to ``size``, centre-cropped."""
    image = pixels.eight_bit(image).convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _fit_array(image: np.ndarray, size: int) -> np.ndarray:
    """One decoded [H, W] or [H, W, C] image at ``size`` x ``size`` x 3."""
    image = to_rgb(image[None], "image")[0]
    if image.shape[:2] == (size, size):
        return image
    return fit_image(Image.fromarray(image), size)


# --------------------------------------------------------------------------------------------
# Splits.


def split_fraction(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """(train, test) positions: a seeded ``fraction`` of every class held out for testing
    (rounded, at least one image of a class with two or more), both sorted."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"data.test_fraction must be in (0, 1), got {fraction}.")
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_test = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        test.append(rng.permutation(idx)[:n_test])
    test = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), test), test


def _split(images: np.ndarray, labels: np.ndarray, positions: np.ndarray) -> records.Split:
    return records.Split(
        images=images[positions],
        labels=labels[positions].astype(np.int32),
        index=np.arange(len(positions), dtype=np.int64),
    )


def _dataset(train: records.Split, test: records.Split, class_names) -> records.Dataset:
    num_classes = len(class_names)
    for name, split in (("train", train), ("test", test)):
        if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
            raise DatasetError(
                f"{name} labels span {split.labels.min()}..{split.labels.max()}, outside the "
                f"{num_classes} classes 0..{num_classes - 1}: number the labels 0..C-1 (C: "
                "the number of classes, also the length of class_names)."
            )
    empty = np.flatnonzero(np.bincount(train.labels, minlength=num_classes) == 0)
    if len(empty):  # before any long tail: the data itself lacks these classes
        shown = ", ".join(f"{c} ({class_names[c]})" for c in empty[:5])
        raise DatasetError(
            f"{len(empty)} of {num_classes} classes have no training image in your data: "
            f"{shown}. Labels are class indices 0..C-1: renumber them without gaps, or drop "
            "those classes from class_names."
        )
    return records.Dataset(
        train=train,
        test=test,
        num_classes=num_classes,
        class_names=tuple(class_names),
        verified=True,
    )


def _held_out(images, labels, class_names, data_config) -> records.Dataset:
    train, test = split_fraction(labels, data_config.test_fraction, data_config.split_seed)
    return _dataset(_split(images, labels, train), _split(images, labels, test), class_names)


def _require(value: str | None, key: str, source: str) -> str:
    if not value:
        raise DatasetError(f"data.name={source} needs --config.data.{key}=<path>.")
    return value


# --------------------------------------------------------------------------------------------
# image_folder.


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in Image.registered_extensions()


def list_image_folder(root: str, class_names: tuple[str, ...] | None = None):
    """(paths, int32 labels, class names) of ``root/<class>/...``, sorted by class then path.

    Args:
      root: the folder; each sub-folder is a class.
      class_names: the classes to expect (a test folder uses the training folder's); a
        sub-folder outside them is an error.
    """
    if not os.path.isdir(root):
        raise records.DatasetNotFoundError(
            f"Image folder {root} does not exist (root/<class>/<image>)."
        )
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    names = tuple(found) if class_names is None else tuple(class_names)
    unknown = sorted(set(found) - set(names))
    if unknown or not names:
        raise DatasetError(
            f"{root}: class folders {unknown or found} do not match the training "
            f"classes {list(names)}; use the root/<class>/<image> layout."
        )
    paths, labels = [], []
    for label, name in enumerate(names):
        for folder, _, files in sorted(os.walk(os.path.join(root, name))):
            chosen = sorted(f for f in files if _is_image(f))
            paths += [os.path.join(folder, f) for f in chosen]
            labels += [label] * len(chosen)
    empty = [n for c, n in enumerate(names) if c not in set(labels)]
    if paths and empty and class_names is None:
        raise DatasetError(
            f"{root}: class folder(s) {', '.join(empty[:5])} hold no image file (extensions "
            "Pillow reads): put that class's images in it, or move the folder out of "
            f"{root} to train without the class."
        )
    if not paths:
        raise DatasetError(
            f"{root}: no image files (extensions Pillow reads) in its class folders."
        )
    return paths, np.asarray(labels, np.int32), names


def _decode(paths, size: int) -> np.ndarray:
    """uint8 [N, size, size, 3] of image files.

    Raises:
      DatasetError: files that cannot be decoded (truncated, not an image, 32-bit), named.
    """
    out = np.empty((len(paths), size, size, 3), np.uint8)
    bad = []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                out[i] = fit_image(image, size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            bad.append(f"{path} ({type(e).__name__}: {' '.join(str(e).split())})")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DatasetError(
            f"{len(bad)} image file(s) cannot be read: {'; '.join(bad[:3])}{more}. Re-save "
            "them (e.g. from a good copy), or move them out of the class folders to train "
            "without them; then rerun."
        )
    return out


def load_image_folder(data_config) -> records.Dataset | StreamedDataset:
    """The ``image_folder`` source of ``data_config`` (see the module docstring)."""
    train_dir = _require(data_config.train_path, "train_path", "image_folder")
    paths, labels, names = list_image_folder(train_dir)
    if data_config.test_path:
        test_paths, test_labels, _ = list_image_folder(data_config.test_path, names)
    else:
        train, test = split_fraction(labels, data_config.test_fraction, data_config.split_seed)
        test_paths, test_labels = [paths[i] for i in test], labels[test]
        paths, labels = [paths[i] for i in train], labels[train]
    if len(paths) + len(test_paths) > data_config.stream_above:
        return _streamed_folder(paths, labels, test_paths, test_labels, names, data_config)
    size = data_config.image_size
    logging.info(
        "image_folder %s: decoding %d + %d images at %d x %d.",
        train_dir,
        len(paths),
        len(test_paths),
        size,
        size,
    )
    decoded = _decode([*paths, *test_paths], size)  # one pass: every unreadable file named
    train = records.Split(decoded[: len(paths)], labels, np.arange(len(labels), dtype=np.int64))
    test = records.Split(
        decoded[len(paths) :], test_labels, np.arange(len(test_labels), dtype=np.int64)
    )
    return _dataset(train, test, names)


def _streamed_folder(paths, labels, test_paths, test_labels, names, data_config):
    """A large folder: its file lists, streamed (cut by `long_tail.apply` like any other)."""
    logging.info(
        "image_folder %s: streaming from %d + %d images.",
        data_config.train_path,
        len(paths),
        len(test_paths),
    )
    return StreamedDataset(
        train=ImageFiles(tuple(paths), np.asarray(labels, np.int32)),
        test=ImageFiles(tuple(test_paths), np.asarray(test_labels, np.int32)),
        num_classes=len(names),
        class_names=tuple(names),
    )


# --------------------------------------------------------------------------------------------
# arrays.


def read_arrays(paths: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """(uint8 [N, H, W, 3] images, int32 labels, class names or None) of comma-separated
    ``.npz`` files, concatenated."""
    images, labels, names = [], [], None
    for path in [p.strip() for p in paths.split(",") if p.strip()]:
        if not os.path.exists(path):
            raise records.DatasetNotFoundError(f"data.train_path/test_path: {path} does not exist.")
        with np.load(path, allow_pickle=False) as f:
            missing = {"images", "labels"} - set(f.files)
            if missing:
                raise DatasetError(
                    f"{path} lacks {sorted(missing)} (has {f.files}); an arrays "
                    "file holds images [N, H, W(, C)] uint8 and labels [N]."
                )
            images.append(to_rgb(f["images"], path))
            labels.append(_int_labels(f["labels"], len(images[-1]), path))
            if "class_names" in f.files:
                names = tuple(str(n) for n in f["class_names"])
    shapes = {x.shape[1:] for x in images}
    if len(shapes) > 1:
        raise DatasetError(f"{paths}: images of different shapes {sorted(shapes)} across files.")
    return np.concatenate(images), np.concatenate(labels), names


def _int_labels(labels: np.ndarray, n: int, path: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"{path}: labels must be integers of shape ({n},), got {labels.dtype} {labels.shape}."
        )
    return labels.astype(np.int32)


def load_arrays(data_config) -> records.Dataset:
    """The ``arrays`` source of ``data_config`` (see the module docstring)."""
    images, labels, names = read_arrays(_require(data_config.train_path, "train_path", "arrays"))
    if not data_config.test_path:
        return _held_out(images, labels, names or _index_names(labels), data_config)
    test_images, test_labels, test_names = read_arrays(data_config.test_path)
    if test_images.shape[1:] != images.shape[1:]:
        raise DatasetError(
            f"Test images {test_images.shape[1:]} differ in shape from train "
            f"images {images.shape[1:]}."
        )
    names = names or test_names or _index_names(np.concatenate([labels, test_labels]))
    return _dataset(_whole(images, labels), _whole(test_images, test_labels), names)


def _index_names(labels: np.ndarray) -> tuple[str, ...]:
    """Class names "0".."C-1" for a source without names."""
    return tuple(str(c) for c in range(int(labels.max()) + 1))


def _whole(images: np.ndarray, labels: np.ndarray) -> records.Split:
    return _split(images, labels, np.arange(len(labels)))


# --------------------------------------------------------------------------------------------
# tfds:<name>.


def load_tfds(name: str, data_config) -> records.Dataset:
    """A prepared TFDS dataset ``name`` in ``data.data_dir`` (see the module docstring)."""
    import tensorflow_datasets as tfds

    keys = data_config.tfds
    hint = (
        f"Prepare it as ArrayRecord first (e.g. tfds build {name} --data_dir=DIR "
        "--file_format=array_record; preparing a stock TFDS dataset may need TensorFlow, "
        "reading it here does not), then set --config.data.data_dir=DIR."
    )
    try:
        builder = tfds.builder(name, data_dir=data_config.data_dir)
    except Exception as e:  # TFDS raises several types for "not there"
        raise records.DatasetNotFoundError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_config.data_dir} ({e}). "
            + hint
        ) from e
    if not builder.is_prepared() or builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise records.DatasetNotFoundError(
            f"TFDS dataset {name!r} is not prepared as ArrayRecord in {builder.data_dir}. " + hint
        )
    features = builder.info.features
    for what, key in (("image_key", keys.image_key), ("label_key", keys.label_key)):
        if key not in features:
            raise DatasetError(
                f"TFDS {name} has no feature {key!r} (has {sorted(features)}): "
                f"set --config.data.tfds.{what}."
            )
    label = features[keys.label_key]
    names = tuple(str(n) for n in (getattr(label, "names", None) or range(label.num_classes)))
    read = lambda split: _read_tfds_split(builder, split, keys, data_config.image_size)
    images, labels = read(keys.train_split)
    if keys.test_split:
        test_images, test_labels = read(keys.test_split)
        return _dataset(_whole(images, labels), _whole(test_images, test_labels), names)
    return _held_out(images, labels, names, data_config)


def _read_tfds_split(builder, split: str, keys, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every record of one split: uint8 [N, size, size, 3] images and int32 labels."""
    source = builder.as_data_source(split=split)
    images = np.empty((len(source), size, size, 3), np.uint8)
    labels = np.empty(len(source), np.int32)
    for lo in range(0, len(source), 1024):
        records = source.__getitems__(range(lo, min(lo + 1024, len(source))))
        for i, record in enumerate(records, start=lo):
            missing = {keys.image_key, keys.label_key} - set(record)
            if missing:
                raise DatasetError(
                    f"TFDS {builder.name} records lack {sorted(missing)} (have "
                    f"{sorted(record)}): set data.tfds.image_key/label_key."
                )
            images[i] = _fit_array(_decoded(record[keys.image_key]), size)
            labels[i] = int(record[keys.label_key])
    return images, labels


def _decoded(value: Any) -> np.ndarray:
    """A record's image as an array (decoded by TFDS, or still encoded bytes)."""
    if isinstance(value, bytes | np.bytes_):
        with Image.open(io.BytesIO(value)) as image:
            return np.asarray(pixels.eight_bit(image).convert("RGB"))
    return np.asarray(value)
