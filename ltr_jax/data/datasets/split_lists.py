"""ImageNet-LT split lists (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World",
CVPR 2019, the OLTR code's ``ImageNet_LT_{train,val,test}.txt``).

One image per line: a path relative to the ImageNet-2012 root, a space, its integer label::

    train/n01440764/n01440764_10026.JPEG 0

Train: 115,846 images, 1280..5 per class; val: 20,000 (20 per class, drawn from the official
train split); test: 50,000 (50 per class, the official validation split). The class of an
image is also the WordNet id of its folder, one id per label. iNaturalist 2018's lists from the
same code use the same format. Only the standard library and NumPy: no TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np
from etils import epath

from ltr_jax.errors import UserError

IMAGENET_LT_SIZES = {"train": 115_846, "val": 20_000, "test": 50_000}
NUM_CLASSES = 1000


class SplitListError(UserError, ValueError):
    """A split list is malformed; the message names the file and the line."""


def _parse_line(line: str, where: str) -> tuple[str, int]:
    """(relative path, label) of one ``<path> <label>`` line; ``where`` is ``file:line``."""
    fields = line.split()
    if len(fields) != 2:
        raise SplitListError(
            f"{where}: expected '<relative image path> <integer label>', got {line.strip()!r}."
        )
    path, label = fields
    if not (label.isascii() and label.isdigit()):
        raise SplitListError(f"{where}: label {label!r} is not a non-negative integer.")
    if path.startswith("/") or ".." in path.split("/"):
        raise SplitListError(f"{where}: path {path!r} must be relative to the dataset root.")
    return path, int(label)


def read_split_list(
    path: str | os.PathLike, num_classes: int | None = None
) -> tuple[list[str], np.ndarray]:
    """Reads a split list.

    Args:
      path: the list file (a local path, or any location ``etils.epath`` can read).
      num_classes: when given, every label must be below it.

    Returns:
      (relative image paths in file order, int32 labels [N]). Blank lines are skipped.

    Raises:
      SplitListError: a malformed line, a label out of range, a path listed twice, or no
        images at all; the message names the file and the line.
    """
    paths, labels, first_seen = [], [], {}
    for number, line in enumerate(epath.Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        image, label = _parse_line(line, where)
        if num_classes is not None and label >= num_classes:
            raise SplitListError(f"{where}: label {label} is not below num_classes={num_classes}.")
        if image in first_seen:
            raise SplitListError(f"{where}: {image} is already listed at line {first_seen[image]}.")
        first_seen[image] = number
        paths.append(image)
        labels.append(label)
    if not paths:
        raise SplitListError(f"{path}: no images listed.")
    return paths, np.asarray(labels, np.int32)


def class_counts(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Images per class, int64 [C] (C = ``num_classes``, or the largest label + 1)."""
    labels = np.asarray(labels)
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(f"Label {labels.max()} is not below num_classes={num_classes}.")
    return np.bincount(labels, minlength=num_classes or 0)


def synset_labels(paths: list[str], labels: np.ndarray) -> dict[str, int]:
    """WordNet id (the image's folder) -> label, checking that they correspond one to one.

    Raises:
      SplitListError: a folder holds images of two labels, or a label spans two folders.
    """
    by_synset: dict[str, int] = {}
    by_label: dict[int, str] = {}
    for image, label in zip(paths, labels.tolist()):
        synset = image.split("/")[-2] if "/" in image else ""
        if by_synset.setdefault(synset, label) != label:
            raise SplitListError(
                f"{image}: folder {synset!r} has labels {by_synset[synset]} and {label}."
            )
        if by_label.setdefault(label, synset) != synset:
            raise SplitListError(
                f"{image}: label {label} is in folders {by_label[label]!r} and {synset!r}."
            )
    return by_synset
