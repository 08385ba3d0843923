"""Synthetic long-tailed JPEG dataset: the streaming path without any download.

The images of `sources.make_synthetic_dataset` (class templates plus noise), each resized to
a random size in ``data.synthetic.jpeg_sizes`` and JPEG-encoded in memory, behind the same
record interface as a prepared ImageNet-LT split (``{"image": bytes, "label": int, "index":
int}``). The training split is cut to the LDAM long-tail profile of ``data.imbalance_factor``.
Used by the ``:smoke`` variants of the ImageNet-LT / iNaturalist configs and by the tests.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from ltr_jax.data import long_tail, sources


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """Encoded images with labels, as a random-access source."""

    images: tuple[bytes, ...]
    labels: np.ndarray  # int32 [N]

    @property
    def source(self) -> EncodedSplit:
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": int(self.labels[i]), "index": int(i)}


def encode_jpegs(images: np.ndarray, sizes: tuple[int, int], seed: int) -> tuple[bytes, ...]:
    """Each uint8 [H, W, 3] image resized to a random (height, width) in ``sizes`` (inclusive
    bounds, drawn independently) and encoded as JPEG (quality 90)."""
    rng = np.random.default_rng(seed)
    encoded = []
    for image in images:
        height, width = rng.integers(sizes[0], sizes[1] + 1, size=2)
        pil = Image.fromarray(image).resize((int(width), int(height)), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return tuple(encoded)


def make_splits(data_config) -> tuple[EncodedSplit, EncodedSplit, int]:
    """(long-tailed train split, balanced test split, number of classes) of ``data_config``."""
    syn = data_config.synthetic
    ds = sources.make_synthetic_dataset(
        syn.num_classes, syn.train_per_class, syn.test_per_class, syn.seed
    )
    pos = long_tail.ldam_subset(
        ds.train.labels, ds.train.index, ds.num_classes, data_config.imbalance_factor
    )
    sizes = tuple(syn.jpeg_sizes)
    train = EncodedSplit(
        encode_jpegs(ds.train.images[pos], sizes, seed=syn.seed + 1),
        ds.train.labels[pos].astype(np.int32),
    )
    test = EncodedSplit(
        encode_jpegs(ds.test.images, sizes, seed=syn.seed + 2), ds.test.labels.astype(np.int32)
    )
    return train, test, ds.num_classes
