"""Synthetic datasets, no download: CIFAR-like arrays in memory, and the same images as JPEGs.

``synthetic``: a small, deterministic, learnable CIFAR-like dataset (class templates plus
noise) for tests and ``:smoke`` runs of the CIFAR configs, in memory.

``synthetic_jpeg``: those images, each resized to a random size in
``data.synthetic.jpeg_sizes`` and JPEG-encoded, behind the same record interface as a prepared
ImageNet-LT split (``{"image": bytes, "label": int, "index": int}``): the streaming path
without any download, for the ``:smoke`` variants of the ImageNet-LT / iNaturalist configs
and the tests. The images are encoded when first read, so the long tail (`long_tail.apply`)
cuts the raw images first and each kept image gets the size it always had.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np
from PIL import Image

from ltr_jax.data.datasets.records import Dataset, Split, StreamedDataset


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


@dataclasses.dataclass(frozen=True)
class SyntheticJpegs:
    """Synthetic images as a streamed split, JPEG-encoded when first read (`encode_jpegs`)."""

    images: np.ndarray  # uint8 [N, 32, 32, 3], raw
    labels: np.ndarray  # int32 [N]
    sizes: tuple[int, int]  # bounds of the encoded sides
    seed: int  # of the sizes

    def take(self, positions: np.ndarray) -> SyntheticJpegs:
        return dataclasses.replace(
            self, images=self.images[positions], labels=self.labels[positions]
        )

    @functools.cached_property
    def source(self) -> EncodedSplit:
        """The encoded images, ``source[i] -> {"image": bytes, "label", "index"}``."""
        return EncodedSplit(encode_jpegs(self.images, self.sizes, self.seed), self.labels)


def load_synthetic(data_config) -> Dataset:
    """The ``synthetic`` dataset of ``data_config.synthetic`` (balanced; cut later)."""
    syn = data_config.synthetic
    return make_synthetic_dataset(
        syn.num_classes, syn.train_per_class, syn.test_per_class, syn.seed
    )


def load_synthetic_jpeg(data_config) -> StreamedDataset:
    """The ``synthetic_jpeg`` dataset: the ``synthetic`` images as JPEGs (balanced; cut later).

    Its ``identity`` (what the decoded store's fingerprint adds to the labels) is the
    generator's settings and the imbalance factor: the labels alone do not identify its images.
    """
    syn = data_config.synthetic
    ds = make_synthetic_dataset(syn.num_classes, syn.train_per_class, syn.test_per_class, syn.seed)
    sizes = tuple(syn.jpeg_sizes)
    labels = lambda split: split.labels.astype(np.int32)
    return StreamedDataset(
        train=SyntheticJpegs(ds.train.images, labels(ds.train), sizes, syn.seed + 1),
        test=SyntheticJpegs(ds.test.images, labels(ds.test), sizes, syn.seed + 2),
        num_classes=ds.num_classes,
        class_names=tuple(f"class_{c}" for c in range(ds.num_classes)),
        identity=dict(
            synthetic=data_config.synthetic.to_dict(),
            imbalance_factor=data_config.imbalance_factor,
        ),
    )


def make_synthetic_dataset(
    num_classes: int, train_per_class: int, test_per_class: int, seed: int
) -> Dataset:
    """Deterministic, learnable CIFAR-like data: a fixed template per class plus noise.

    Each class's template is a mean colour plus a class-specific oriented grating, so both
    colour and texture tell the classes apart. Images appear in a seeded shuffled order.

    Args:
        num_classes: number of classes.
        train_per_class: training images per class (balanced; long-tailing happens later).
        test_per_class: test images per class.
        seed: everything is a function of this.

    Returns:
        A `Dataset` with `verified=True`.
    """
    if num_classes < 1 or train_per_class < 1 or test_per_class < 1:
        raise ValueError("synthetic: num_classes and the per-class counts must be positive.")
    templates = _synthetic_templates(num_classes, np.random.default_rng([seed, 0]))
    return Dataset(
        train=_synthetic_split(templates, train_per_class, np.random.default_rng([seed, 1])),
        test=_synthetic_split(templates, test_per_class, np.random.default_rng([seed, 2])),
        num_classes=num_classes,
        class_names=tuple(f"class_{c}" for c in range(num_classes)),
        verified=True,
    )


def _synthetic_templates(num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Per-class templates, int16 [C, 32, 32, 3] in [10, 245]."""
    colour = rng.uniform(60.0, 195.0, size=(num_classes, 1, 1, 3))
    angle = rng.uniform(0.0, np.pi, size=(num_classes, 1, 1, 1))
    freq = rng.uniform(0.15, 0.6, size=(num_classes, 1, 1, 1))
    y, x = np.mgrid[0:32, 0:32].astype(np.float64)
    phase = freq * (x[..., None] * np.cos(angle) + y[..., None] * np.sin(angle))
    return np.rint(colour + 50.0 * np.sin(phase)).astype(np.int16)


def _synthetic_split(templates: np.ndarray, per_class: int, rng: np.random.Generator) -> Split:
    """`per_class` noisy copies of every template, in a seeded random order."""
    num_classes = len(templates)
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int32), per_class))
    # Uniform integer noise (std ~28): Gaussian noise would cost ~10x more to draw.
    images = templates[labels]  # [N, 32, 32, 3] int16
    images += rng.integers(-48, 49, size=images.shape, dtype=np.int16)
    images = np.clip(images, 0, 255, out=images).astype(np.uint8)
    return Split(images=images, labels=labels, index=np.arange(len(labels), dtype=np.int64))
