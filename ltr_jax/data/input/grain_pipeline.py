"""Streaming input pipeline for image datasets that do not fit in device memory (issue 6).

A `grain.MapDataset` over the flat index of this process's examples, from the resume step on
(the stages reach it through `ltr_jax.data.input.streamed.StreamingInput`):

    local element j  ->  step = start + j // B_local, row = process_index * B_local + j % B_local
                     ->  position = plan.global_positions(step)[row]   (a `StepPlan`: uniform
                          epochs, class-balanced, a subset such as stage 2's draw, or an
                          evaluation pass in order)
                     ->  source[position]  ->  decode (PIL)  ->  random resized crop + flip
                     ->  to_iter_dataset(ReadOptions(num_threads=num_workers, prefetch))
                     ->  batch(B_local)  ->  {"images": uint8 [B_local, S, S, 3],
                                             "labels": int32 [B_local],
                                             "positions": int32 [B_local]}

Train mode crops ``num_views`` times per decoded image (stage 1's two views: [B_local, V, S, S,
3]); eval mode resizes the shorter side to S / 0.875 and centre-crops S x S.

- Data order is a pure function of (seed, step), like `sampler.uniform_batch` but in NumPy on
  the host: epoch e = step // steps_per_epoch shuffles the whole dataset with a permutation
  seeded by (seed, e), and the remainder of every epoch is dropped. Resuming at step s starts
  the index range at s: it yields exactly the batches the uninterrupted iterator yields from s.
- Process i loads rows i*B/P .. (i+1)*B/P of each global batch (the contiguous slice that
  `jax.make_array_from_process_local_data` expects for a batch sharded over ``data``).
- Per-example randomness comes from a NumPy generator seeded by (seed, step, global row), so a
  batch does not depend on the worker count, the thread schedule or the process count.
- Host augmentation is the ImageNet recipe: torchvision's `RandomResizedCrop` (area
  U(0.08, 1), log-uniform ratio in [3/4, 4/3], 10 tries, centre fallback; the same box
  arithmetic as `augment.sample_crop_box`), bilinear resize with PIL (antialiased, as
  torchvision does on PIL images), horizontal flip p=0.5. The SimCLR colour ops (jitter,
  grayscale, blur) are NOT done here: they stay on device, where `augment.py` already has them
  jitted with per-example keys (apply them after `augment.to_float`); the host CPU is the
  scarce resource when feeding a GPU, and NumPy colour ops would add to its per-image work.

Why Grain: grain 0.2 installs from PyPI on Python 3.11 without TensorFlow, reads any object
with `__len__`/`__getitem__` (``tfds.data_source(...)``, a list), and gives a deterministic
threaded map with prefetching (`ReadOptions`) whose output order is the index order whatever
the thread count. Its `DataLoader` + `IndexSampler` is not used: the sampler shards *records*
over processes and has its own shuffle, while this library's contract is a global batch order
as a NumPy function of (seed, step) with each process loading its rows of every global batch.
Worker threads by default because Pillow releases the GIL inside JPEG decoding and
resampling, the bulk of the per-image work, and threads share the source without pickling it.
Measured on a 16-core GPU host (bench/RESULTS.md section 10) threads scale only to about 4x one
core, far from feeding a ResNet-50 on an H200; ``num_processes`` decodes whole batches in Grain
worker processes instead (`mp_prefetch`, spawn; every plan and transform here is picklable;
batches identical to the threads'), handed over through ``/dev/shm`` (`check_shared_memory`).

    source = tfds.data_source("imagenet2012", split="train",
                              decoders={"image": tfds.decode.SkipDecoding()})
    spec = IteratorSpec(global_batch_size=256, start_step=step, num_workers=16,
                        process_index=jax.process_index(), process_count=jax.process_count())
    local = make_iterator(source, spec)
    for batch in global_batches(mesh, local): ...
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from PIL import Image

from ltr_jax import runtime
from ltr_jax.data import pixels
from ltr_jax.data.input import augment, sampler

# Distinct seed streams so the permutation and the augmentation draws never share a generator.
_PERMUTATION_STREAM = 0
_AUGMENT_STREAM = 1
_NUM_TRIES = 10
_NUM_UNIFORMS = 2 * _NUM_TRIES + 3  # T areas, T ratios, 2 offsets, 1 flip


def seed_entropy(seed: int | Sequence[int], *more: int) -> list[int]:
    """A flat list of non-negative ints for `np.random.default_rng`: the seed (an int or a
    sequence of ints, e.g. a JAX key's data) followed by ``more``. (NumPy 2 refuses nested
    sequences.)"""
    return [int(x) for x in np.atleast_1d(np.asarray(seed, dtype=np.uint64)).ravel()] + [
        int(x) for x in more
    ]


class StepPlan:
    """Which source positions each process loads at each step.

    The global batch at ``step`` is ``positions_fn(step)`` (a pure NumPy function of the step:
    the data order contract); process i loads its rows i*B/P .. (i+1)*B/P.

    Args:
        positions_fn: ``step -> int [global_batch_size]`` source positions.
        global_batch_size: examples per step over all processes.
        seed: augmentation seed (per-example generators are seeded by (seed, step, row)).
        process_index: this process, in 0..process_count-1.
        process_count: processes sharing every global batch.
    """

    def __init__(
        self,
        positions_fn: Callable[[int], np.ndarray],
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size {global_batch_size} is not divisible by "
                f"{process_count} processes."
            )
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in 0..{process_count - 1}.")
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // process_count
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self._positions_fn = positions_fn  # picklable (worker processes get a copy)
        self._cache: dict[int, np.ndarray] = {}

    def global_positions(self, step: int) -> np.ndarray:
        """int64 [global_batch_size] source positions of the global batch at ``step``."""
        # Worker threads share the plan; a step's positions are computed about once.
        positions = self._cache.get(step)
        if positions is None:
            positions = np.asarray(self._positions_fn(step), np.int64)
            if len(self._cache) >= 8:
                self._cache.clear()
            self._cache[step] = positions
        return positions

    def locate(self, element: int) -> tuple[int, int, int]:
        """Maps this process's flat element index to (step, global row, source position)."""
        step, local_row = divmod(element, self.local_batch_size)
        local = sampler.process_slice(
            self.global_positions(step), self.process_index, self.process_count
        )
        row = self.process_index * self.local_batch_size + local_row
        return step, row, int(local[local_row])


class BatchPlan(StepPlan):
    """Epoch-wise shuffling without replacement of ``num_examples`` items, remainder dropped.

    Epoch e = step // steps_per_epoch uses the permutation seeded by (seed, e).
    """

    def __init__(
        self,
        num_examples: int,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.steps_per_epoch = num_examples // global_batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"global_batch_size {global_batch_size} exceeds the {num_examples} examples."
            )
        self.num_examples = num_examples
        self._permutations: dict[int, np.ndarray] = {}
        super().__init__(self._positions, global_batch_size, seed, process_index, process_count)

    def _permutation(self, epoch: int) -> np.ndarray:
        permutation = self._permutations.get(epoch)
        if permutation is None:
            rng = np.random.default_rng(seed_entropy(self.seed, _PERMUTATION_STREAM, epoch))
            permutation = rng.permutation(self.num_examples)  # [N]
            self._permutations = {epoch: permutation}  # one epoch at a time
        return permutation

    def _positions(self, step: int) -> np.ndarray:
        epoch, offset = divmod(step, self.steps_per_epoch)
        start = offset * self.global_batch_size
        return self._permutation(epoch)[start : start + self.global_batch_size]


def class_balanced_plan(
    labels: np.ndarray,
    num_classes: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> StepPlan:
    """Class-balanced sampling (class uniform, then image uniform), the host twin of
    `sampler.class_balanced_batch`: the batch at a step is drawn from a generator seeded by
    (seed, step)."""
    positions = _ClassBalancedPositions(labels, num_classes, global_batch_size, seed)
    return StepPlan(positions, global_batch_size, seed, process_index, process_count)


class _ClassBalancedPositions:
    """``step -> positions`` of `class_balanced_plan` (a picklable callable)."""

    def __init__(self, labels: np.ndarray, num_classes: int, batch_size: int, seed):
        labels = np.asarray(labels)
        self.by_class = np.argsort(labels, kind="stable")
        self.counts = np.bincount(labels, minlength=num_classes)
        if (self.counts == 0).any():
            raise ValueError("class_balanced sampling needs at least one image per class.")
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        self.num_classes, self.batch_size, self.seed = num_classes, batch_size, seed

    def __call__(self, step: int) -> np.ndarray:
        rng = np.random.default_rng(seed_entropy(self.seed, _PERMUTATION_STREAM, step))
        cls = rng.integers(0, self.num_classes, self.batch_size)
        within = (rng.random(self.batch_size) * self.counts[cls]).astype(np.int64)
        return self.by_class[self.starts[cls] + within]


class SlicePositions:
    """``step -> positions[step * B : (step + 1) * B]`` (a picklable callable)."""

    def __init__(self, positions: np.ndarray, batch_size: int):
        self.positions, self.batch_size = positions, batch_size

    def __call__(self, step: int) -> np.ndarray:
        return self.positions[step * self.batch_size : (step + 1) * self.batch_size]


class SubsetPositions:
    """``step -> population[plan.global_positions(step)]``: a plan over a subset (picklable)."""

    def __init__(self, population: np.ndarray, plan: StepPlan):
        self.population, self.plan = population, plan

    def __call__(self, step: int) -> np.ndarray:
        return self.population[self.plan.global_positions(step)]


def eval_plan(
    positions: np.ndarray, batch_size: int, process_index: int = 0, process_count: int = 1
) -> tuple[StepPlan, int]:
    """Batches covering ``positions`` in order, the last padded by repeating its last position.

    Returns:
        (plan, number of batches).
    """
    rows, _ = sampler.pad_to_batches(len(positions), batch_size)
    padded = np.asarray(positions, np.int64)[rows]
    num_batches = len(rows) // batch_size
    plan = StepPlan(
        SlicePositions(padded, batch_size),
        batch_size,
        seed=0,
        process_index=process_index,
        process_count=process_count,
    )
    return plan, num_batches


def crop_box_from_uniforms(
    u: np.ndarray,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's `RandomResizedCrop` box from [2 T + 2] uniforms (T areas, T ratios, 2 offsets).

    The NumPy twin of `augment._crop_box_from_uniforms`: the first of the T candidates that
    fits, else the largest centred box with its ratio inside ``ratio``.

    Returns:
        (top, left, height, width) in whole pixels.
    """
    num_tries = (len(u) - 2) // 2
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:num_tries])  # [T]
    log_ratio = np.log(ratio[0]) + (np.log(ratio[1]) - np.log(ratio[0])) * u[num_tries:-2]
    box_w = np.round(np.sqrt(area * np.exp(log_ratio)))  # [T]
    box_h = np.round(np.sqrt(area / np.exp(log_ratio)))  # [T]
    valid = (box_w > 0) & (box_w <= width) & (box_h > 0) & (box_h <= height)
    if valid.any():
        first = int(np.argmax(valid))
        h, w = int(box_h[first]), int(box_w[first])
        top = min(math.floor(u[-2] * (height - h + 1)), height - h)
        left = min(math.floor(u[-1] * (width - w + 1)), width - w)
        return top, left, h, w
    h, w = augment.center_box_size(height, width, ratio)
    return (height - h) // 2, (width - w) // 2, h, w


def _open_image(value: Any) -> Image.Image:
    """A PIL image from encoded bytes (JPEG, PNG, ...) or an already decoded [H, W, C] array."""
    if isinstance(value, bytes | np.bytes_):  # 16-bit PNGs scaled to 8 bits, not clipped
        return pixels.eight_bit(Image.open(io.BytesIO(value)))
    return Image.fromarray(np.asarray(value))


def _crop_flip(
    image: Image.Image, box: tuple[float, ...], flip_u: float, image_size: int
) -> np.ndarray:
    """Resizes ``box`` (top, left, height, width) of a decoded image to S x S, flips it if
    ``flip_u < 0.5``."""
    top, left, h, w = box
    image = image.resize(
        (image_size, image_size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
    )
    if flip_u < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image, dtype=np.uint8)


def draft_scale(boxes: Sequence[tuple[int, int, int, int]], image_size: int) -> int:
    """The JPEG DCT reduction (1, 2, 4 or 8) that keeps every crop box at least S pixels on
    each side, so the crops are still downsampled, never upsampled, after it."""
    smallest = min(min(h, w) for _, _, h, w in boxes)
    return next((r for r in (8, 4, 2) if smallest >= r * image_size), 1)


def _decode_for_boxes(
    image: Image.Image, boxes: list[tuple[int, int, int, int]], image_size: int
) -> tuple[Image.Image, list[tuple[float, ...]]]:
    """Decodes at the reduced size `draft_scale` allows (Pillow `Image.draft`, JPEG only) and
    maps the boxes to the decoded image."""
    width, height = image.size
    reduction = draft_scale(boxes, image_size)
    if reduction > 1:
        image.draft("RGB", (width // reduction, height // reduction))  # Pillow: floor
    sx, sy = image.size[0] / width, image.size[1] / height
    image = image.convert("RGB")
    return image, [(top * sy, left * sx, h * sy, w * sx) for top, left, h, w in boxes]


def augment_image(
    value: Any, rng: np.random.Generator, image_size: int, num_views: int = 1, draft: bool = False
) -> np.ndarray:
    """Decodes one image and applies random resized crop + horizontal flip.

    Args:
        value: encoded image bytes or a decoded uint8 [H, W, C] array.
        rng: this example's generator (seeded by (seed, step, row)).
        image_size: output side S.
        num_views: independent crops of the one decoded image (SimCLR's two views).
        draft: decode a JPEG at 1/2, 1/4 or 1/8 size (DCT scaling, much cheaper) when every
            crop box keeps at least S pixels a side at that size (`draft_scale`); the crops
            then differ from full-size ones by that reduction's filtering.

    Returns:
        uint8 [S, S, 3] image, or [V, S, S, 3] views when ``num_views`` > 1.
    """
    image = _open_image(value)
    width, height = image.size
    uniforms = [rng.random(_NUM_UNIFORMS) for _ in range(num_views)]  # [V, 23]
    boxes = [crop_box_from_uniforms(u[:-1], height, width) for u in uniforms]
    if draft:
        image, boxes = _decode_for_boxes(image, boxes, image_size)
    else:  # ImageNet has some grayscale and CMYK JPEGs; convert() also decodes.
        image = image.convert("RGB")
    views = [_crop_flip(image, b, u[-1], image_size) for b, u in zip(boxes, uniforms)]
    return views[0] if num_views == 1 else np.stack(views)


def eval_resize(image_size: int) -> int:
    """Shorter side before the centre crop: 256 for 224 (the standard ImageNet ratio 0.875)."""
    return round(image_size / 0.875)


def center_crop_image(value: Any, image_size: int) -> np.ndarray:
    """The evaluation transform: resize the shorter side to `eval_resize`, centre crop S x S.

    Returns:
        uint8 [S, S, 3] image.
    """
    image = _open_image(value).convert("RGB")
    width, height = image.size
    short = eval_resize(image_size)
    scale = short / min(width, height)
    new_w, new_h = max(short, round(width * scale)), max(short, round(height * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    image = image.crop((left, top, left + image_size, top + image_size))
    return np.asarray(image, dtype=np.uint8)


class _LoadBatch:
    """Grain map transform: local step index -> the whole local batch of that step (picklable).

    Used with worker processes: a worker decodes a batch, one array crosses the process
    boundary per step.
    """

    def __init__(self, load: _LoadExample, local_batch_size: int):
        self.load, self.local_batch_size = load, local_batch_size

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        first = step * self.local_batch_size
        examples = [self.load(first + j) for j in range(self.local_batch_size)]
        return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class _LoadExample:
    """Grain map transform: flat element index -> one transformed example (picklable).

    ``mode`` "train": ``num_views`` random resized crops + flips; "eval": the centre crop.
    """

    def __init__(self, source: Any, plan: StepPlan, spec: IteratorSpec):
        if spec.mode not in ("train", "eval"):
            raise ValueError(f"Unknown mode {spec.mode!r}; valid: train, eval.")
        self.source, self.plan, self.image_size = source, plan, spec.image_size
        self.image_key, self.label_key = spec.image_key, spec.label_key
        self.mode, self.num_views, self.draft = spec.mode, spec.num_views, spec.draft

    def __call__(self, element: int) -> dict[str, np.ndarray]:
        step, row, position = self.plan.locate(element)
        record = self.source[position]
        if self.mode == "eval":
            image = center_crop_image(record[self.image_key], self.image_size)
        else:
            rng = np.random.default_rng(seed_entropy(self.plan.seed, _AUGMENT_STREAM, step, row))
            image = augment_image(
                record[self.image_key], rng, self.image_size, self.num_views, self.draft
            )
        return {
            "images": image,
            "labels": np.int32(record[self.label_key]),
            "positions": np.int32(position),
        }


@dataclasses.dataclass(frozen=True)
class IteratorSpec:
    """What `make_iterator` yields (which steps, whose rows, which crops) and how it decodes.

    Attributes:
        global_batch_size: examples per step over all processes (B); B_local = B / P.
        seed: data-order and augmentation seed.
        start_step: first step to yield (resume point).
        num_steps: stop after this many steps (None: never).
        process_index: this process (i); it loads rows i*B/P .. (i+1)*B/P of each batch.
        process_count: number of processes (P).
        plan: the positions of every step (None: uniform epochs over the source, a
            `BatchPlan`); built with the same batch size, seed and process split as here.
        image_size: output side S.
        mode: "train" (random resized crop + flip) or "eval" (centre crop).
        num_views: random crops per image in train mode.
        draft: decode JPEGs at a reduced size where the crops allow (`augment_image`).
        image_key: record key of the encoded image.
        label_key: record key of the label.
        num_workers: decoding threads (0: decode in the consuming thread, no prefetch).
        prefetch_steps: how many local batches of examples the workers run ahead.
        num_processes: decode in this many worker processes instead of threads (each decodes
            whole batches, one after another; ``num_workers`` is then unused). Threads share
            the GIL for the Python and NumPy parts of the work: measured on a 16-core GPU
            host, 16 threads decoded only about 4x what one did.
    """

    global_batch_size: int
    seed: int = 0
    start_step: int = 0
    num_steps: int | None = None
    process_index: int = 0
    process_count: int = 1
    plan: StepPlan | None = None
    image_size: int = 224
    mode: str = "train"
    num_views: int = 1
    draft: bool = False
    image_key: str = "image"
    label_key: str = "label"
    num_workers: int = 8
    prefetch_steps: int = 2
    num_processes: int = 0


def make_dataset(source: Any, spec: IteratorSpec) -> grain.MapDataset:
    """The per-example `grain.MapDataset` of this process, from ``spec.start_step`` on
    (unbatched; the worker settings of ``spec`` are unused).

    Element j is local row j % B_local of step start_step + j // B_local. Without
    ``num_steps`` the dataset is (practically) infinite.
    """
    load = _make_loader(source, spec)
    local = load.plan.local_batch_size
    first = spec.start_step * local
    stop = sys.maxsize if spec.num_steps is None else first + spec.num_steps * local
    return grain.MapDataset.range(first, stop).map(load)


def _make_loader(source: Any, spec: IteratorSpec) -> _LoadExample:
    """The per-element transform, with the default `BatchPlan` or a checked ``spec.plan``."""
    plan, batch, processes = spec.plan, spec.global_batch_size, spec.process_count
    if plan is None:
        plan = BatchPlan(len(source), batch, spec.seed, spec.process_index, processes)
    elif (plan.global_batch_size, plan.process_index) != (batch, spec.process_index) or (
        plan.local_batch_size * processes != batch
    ):
        raise ValueError("plan was built for another batch size or process split.")
    return _LoadExample(source, plan, spec)


def make_iterator(source: Any, spec: IteratorSpec) -> Iterator[dict[str, np.ndarray]]:
    """This process's host batches, one per step from ``spec.start_step`` on.

    Args:
        source: random-access source (`__len__`, `__getitem__` -> dict with encoded image bytes
            under ``spec.image_key`` and an integer label under ``spec.label_key``), e.g.
            ``tfds.data_source(..., decoders={"image": tfds.decode.SkipDecoding()})``.
        spec: the steps, rows, crops and workers (`IteratorSpec`).

    Returns:
        An iterator over {"images": uint8 [B_local, S, S, 3] (or [B_local, V, S, S, 3] with
        V > 1 views), "labels": int32 [B_local], "positions": int32 [B_local]}.
    """
    if spec.num_processes:
        return _process_iterator(source, spec)
    local_batch_size = spec.global_batch_size // spec.process_count
    buffer = spec.prefetch_steps * local_batch_size if spec.num_workers else 0
    options = grain.ReadOptions(num_threads=spec.num_workers, prefetch_buffer_size=buffer)
    dataset = make_dataset(source, spec).to_iter_dataset(options)
    return iter(dataset.batch(local_batch_size, drop_remainder=True))


def check_shared_memory(needed: int, path: str = "/dev/shm") -> None:
    """Refuses to start worker processes whose batches cannot fit in shared memory.

    Grain's worker processes hand batches over through ``/dev/shm``; containers often mount a
    small one (Docker's default is 64 MB), where workers fail or stall instead of erroring.
    """
    if not os.path.isdir(path):
        return
    free = shutil.disk_usage(path).free
    if free < needed:
        raise ValueError(
            f"data.worker_processes needs about {needed / 2**30:.2f} GiB of shared memory for "
            f"its buffered batches, but {path} has {free / 2**30:.2f} GiB free. Give the "
            "container more (e.g. docker run --shm-size=8g), lower data.worker_processes or "
            "data.prefetch_steps, or decode in threads (data.worker_processes=0)."
        )


def _process_iterator(source: Any, spec: IteratorSpec) -> Iterator[dict[str, np.ndarray]]:
    """`make_iterator` with worker processes: a dataset of whole local batches, one per step."""
    # Grain's multiprocessing reads absl flags: parse them (defaults) if the program did not.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    loader = _make_loader(source, spec)
    local = loader.plan.local_batch_size
    prefetch = max(spec.prefetch_steps, 1)
    batch_bytes = local * loader.num_views * loader.image_size**2 * 3
    check_shared_memory(spec.num_processes * (prefetch + 1) * batch_bytes)
    start = spec.start_step
    stop = sys.maxsize // local if spec.num_steps is None else start + spec.num_steps
    steps = grain.MapDataset.range(start, stop).map(_LoadBatch(loader, local))
    options = grain.MultiprocessingOptions(
        num_workers=spec.num_processes, per_worker_buffer_size=prefetch
    )
    return iter(steps.to_iter_dataset().mp_prefetch(options))


def make_global_batch(mesh: jax.sharding.Mesh, local: dict[str, np.ndarray]) -> dict[str, Any]:
    """Global jax.Arrays (batch axis over ``data``) from every process's local batch."""
    sharding = runtime.batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def global_batches(
    mesh: jax.sharding.Mesh, local_batches: Iterator[dict[str, np.ndarray]]
) -> Iterator[dict[str, Any]]:
    """Maps `make_global_batch` over an iterator of local batches (e.g. `make_iterator`)."""
    for local in local_batches:
        yield make_global_batch(mesh, local)
