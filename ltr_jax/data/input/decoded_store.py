"""A decoded low-resolution store: every image decoded once, kept as memory-mappable uint8.

Decoding full-size JPEGs every epoch cannot feed a large accelerator from a 16-core host
(bench/RESULTS.md section 10). A long-tailed set such as ImageNet-LT is small enough to decode
once: `prepare_store` writes each split as one ``<split>.npy`` file of uint8 [N, S, S, 3]
(115,846 ImageNet-LT training images at S = 256: 22.8 GB), read back with
``np.load(..., mmap_mode="r")`` so the operating system pages in only what is used; the
training loop gathers the rows of a step on the host and crops on the accelerator
(`ltr_jax.data.input.decoded.DecodedInput`).

What the store changes (the documented choice): each image is reduced to its centred square
(side = its shorter side) and resized to S x S with Pillow's antialiased bilinear filter,
after a JPEG DCT-domain reduction (`PIL.Image.Image.draft`) to no less than S on the shorter
side. Training crops (the random resized crop of the paper's augmentations, SPEC section 2)
are then taken from that square: the strips beyond the centred square (1/8 of each long side
of a 4:3 image) are never seen, and a crop is resampled from an S-pixel copy instead of the
full-resolution image. At S = 256 with 224-pixel crops the store's crops match crops of the
original within the tolerance stated in ``tests/test_decoded_store.py``. Evaluation's resize
to 256 + centre crop 224 is exact on the store (its centred 224 x 224 window at S = 256).

Preparation decodes in ``num_processes`` worker processes (spawned; each gets the encoded
bytes of a chunk of images and writes its rows into the memory-mapped file), logs progress, and
is resumable: finished chunks are recorded in ``<split>.chunks.npy`` after their rows are
flushed, so a rerun decodes only what is missing. ``metadata.json`` is written last and marks a
complete store; it records the parameters (S, the resize rule, counts, a fingerprint of the
source) that `open_store` checks. A lock file lets one process prepare while others wait.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import fcntl
import io
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from ltr_jax.data import pixels

FORMAT_VERSION = 1
RESIZE_RULE = "centre square, antialiased bilinear resize to S x S (JPEG draft to >= S first)"
_METADATA = "metadata.json"
_LOCK = ".prepare.lock"
CHUNK_SIZE = 256  # images per worker task (and per progress record)


@dataclasses.dataclass(frozen=True)
class DecodedSplit:
    """One split of a store: memory-mapped images and their labels.

    Attributes:
      source: uint8 [N, S, S, 3] images (a read-only memory map), row i = record i.
      labels: int32 [N].
    """

    source: np.ndarray
    labels: np.ndarray

    @property
    def size(self) -> int:
        """S, the side of every stored image."""
        return self.source.shape[1]


def decode_square(encoded: bytes | np.ndarray, size: int) -> np.ndarray:
    """One image as stored: its centred square resized to ``size`` x ``size``.

    Args:
      encoded: encoded image bytes (JPEG, PNG, ...) or a decoded uint8 [H, W, C] array.
      size: S.

    Returns:
      uint8 [S, S, 3].
    """
    if isinstance(encoded, bytes | np.bytes_):
        image = Image.open(io.BytesIO(encoded))
        image.draft("RGB", (size, size))  # DCT scaling; keeps both sides >= S (JPEG only)
    else:
        image = Image.fromarray(np.asarray(encoded))
    image = pixels.eight_bit(image).convert("RGB")  # a 16-bit PNG scaled, not clipped
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(image, dtype=np.uint8)


def _decode_chunk(path: str, start: int, encoded: Sequence[bytes], size: int) -> int:
    """Worker task: decodes ``encoded`` into rows ``start ..`` of the ``.npy`` at ``path``."""
    images = np.load(path, mmap_mode="r+")
    for j, value in enumerate(encoded):
        images[start + j] = decode_square(value, size)
    images.flush()
    return len(encoded)


def fingerprint(**facts: Any) -> str:
    """A short stable hash of what identifies a store's content (JSON-serialisable facts)."""
    import hashlib

    text = json.dumps(facts, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        import hashlib

        return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
    return str(value)


def is_complete(directory: str) -> bool:
    """Whether ``directory`` holds a finished store."""
    return os.path.exists(os.path.join(directory, _METADATA))


def prepare_store(
    directory: str,
    splits: Mapping[str, Any],
    *,
    size: int = 256,
    source_fingerprint: str = "",
    num_processes: int = 0,
    image_key: str = "image",
) -> dict:
    """Decodes every image of ``splits`` once into ``directory`` (resumable; see the module).

    Args:
      directory: the store's folder (created).
      splits: split name -> an object with ``source`` (random access to records holding
        encoded bytes under ``image_key``) and ``labels`` (int [N]).
      size: S, the side of the stored squares.
      source_fingerprint: identifies the source (checked by `open_store`).
      num_processes: decoding processes; 0: one per CPU core, 1: decode in this process.
      image_key: the record key of the encoded image.

    Returns:
      The store's metadata (also written to ``metadata.json``).
    """
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, _LOCK), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process preparing it: wait for it
        if is_complete(directory):
            return read_metadata(directory)
        start = time.perf_counter()
        counts = {}
        for name, split in splits.items():
            counts[name] = len(split.labels)
            np.save(
                os.path.join(directory, f"{name}_labels.npy"), np.asarray(split.labels, np.int32)
            )
            _prepare_split(directory, name, split.source, size, num_processes, image_key)
        metadata = {
            "format_version": FORMAT_VERSION,
            "size": size,
            "resize": RESIZE_RULE,
            "counts": counts,
            "fingerprint": source_fingerprint,
            "prepare_seconds": round(time.perf_counter() - start, 1),
        }
        _write_json(os.path.join(directory, _METADATA), metadata)
    return metadata


def _prepare_split(
    directory: str, name: str, source: Any, size: int, num_processes: int, image_key: str
) -> None:
    """Decodes the chunks of one split not yet recorded as done."""
    path = os.path.join(directory, f"{name}.npy")
    done_path = os.path.join(directory, f"{name}.chunks.npy")
    n = len(source)
    num_chunks = -(-n // CHUNK_SIZE)
    if os.path.exists(path) and os.path.exists(done_path):
        done = np.load(done_path)
    else:
        np.lib.format.open_memmap(path, "w+", np.uint8, (n, size, size, 3)).flush()
        done = np.zeros(num_chunks, bool)
    todo = np.flatnonzero(~done).tolist()
    progress = _Progress(name, n, done_images=n - _images_in(todo, n))
    read = lambda c: [
        source[i][image_key] for i in range(c * CHUNK_SIZE, min(n, (c + 1) * CHUNK_SIZE))
    ]
    for chunk, count in _run_chunks(path, todo, read, size, num_processes):
        done[chunk] = True
        _save_npy(done_path, done)  # after the worker flushed the chunk's rows
        progress.update(count)


def _images_in(chunks: Sequence[int], n: int) -> int:
    return sum(min(n, (c + 1) * CHUNK_SIZE) - c * CHUNK_SIZE for c in chunks)


def _run_chunks(path, todo, read, size, num_processes):
    """Yields (chunk, images decoded) as chunks finish, in this process or in a pool."""
    if num_processes == 0:
        num_processes = len(os.sched_getaffinity(0))
    if num_processes == 1 or len(todo) <= 1:
        for chunk in todo:
            yield chunk, _decode_chunk(path, chunk * CHUNK_SIZE, read(chunk), size)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process running JAX
    with concurrent.futures.ProcessPoolExecutor(num_processes, mp_context=context) as pool:
        pending, queue = {}, list(todo)
        while queue or pending:
            while queue and len(pending) < 2 * num_processes:  # bounded bytes in flight
                chunk = queue.pop(0)
                args = (path, chunk * CHUNK_SIZE, read(chunk), size)
                pending[pool.submit(_decode_chunk, *args)] = chunk
            finished, _ = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                yield pending.pop(future), future.result()


class _Progress:
    """Logs images decoded, rate and time left about every 10 seconds."""

    def __init__(self, name: str, total: int, done_images: int):
        self.name, self.total, self.done, self.new = name, total, done_images, 0
        self.start = self.last = time.perf_counter()
        if done_images:
            logging.info("Decoded store %s: resuming, %d/%d images done.", name, done_images, total)

    def update(self, count: int) -> None:
        self.done, self.new = self.done + count, self.new + count
        now = time.perf_counter()
        if now - self.last < 10.0 and self.done < self.total:
            return
        self.last, rate = now, self.new / max(now - self.start, 1e-9)
        logging.info(
            "Decoded store %s: %d/%d images (%.0f img/s, %.0f s left).",
            self.name,
            self.done,
            self.total,
            rate,
            (self.total - self.done) / max(rate, 1e-9),
        )


def _save_npy(path: str, array: np.ndarray) -> None:
    """Writes atomically (a kill leaves the old or the new file, never half of one)."""
    with open(path + ".tmp", "wb") as f:
        np.save(f, array)
    os.replace(path + ".tmp", path)


def _write_json(path: str, value: dict) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def read_metadata(directory: str) -> dict:
    """The ``metadata.json`` of a finished store."""
    with open(os.path.join(directory, _METADATA)) as f:
        return json.load(f)


def open_store(directory: str, size: int, source_fingerprint: str = "") -> dict[str, DecodedSplit]:
    """The splits of a finished store, memory-mapped read-only.

    Raises:
      ValueError: the store was made with another S, rule or source (says how to fix it).
    """
    metadata = read_metadata(directory)
    expected = (FORMAT_VERSION, size, RESIZE_RULE, source_fingerprint)
    found = tuple(metadata.get(k) for k in ("format_version", "size", "resize", "fingerprint"))
    if found != expected:
        raise ValueError(
            f"The decoded store in {directory} was made with (version, S, resize, source) = "
            f"{found}, not {expected}. Delete that folder to prepare it again, or set "
            "--config.data.decoded_dir to another folder."
        )
    return {
        name: DecodedSplit(
            source=np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r"),
            labels=np.load(os.path.join(directory, f"{name}_labels.npy")),
        )
        for name in metadata["counts"]
    }


class _GatherBatch:
    """Grain map transform: step -> this process's rows of the step's batch (picklable)."""

    def __init__(self, split: DecodedSplit, plan: Any):
        self.split, self.plan = split, plan

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        from ltr_jax.data.input import sampler  # imports JAX: not in the spawned preparers

        plan = self.plan
        local = sampler.process_slice(
            plan.global_positions(step), plan.process_index, plan.process_count
        )
        return {
            "images": np.asarray(np.take(self.split.source, local, axis=0)),  # [B_l, S, S, 3]
            "labels": self.split.labels[local].astype(np.int32),
            "positions": local.astype(np.int32),
        }


def make_iterator(
    split: DecodedSplit,
    *,
    plan: Any,
    start_step: int = 0,
    num_steps: int | None = None,
    num_threads: int = 2,
    prefetch_steps: int = 2,
):
    """This process's host batches of a store split, one per step from ``start_step`` on.

    Args:
      split: the store split.
      plan: a `streaming.StepPlan` (the positions of every step; the data order contract).
      start_step: first step (resume point).
      num_steps: stop after this many steps (default: never).
      num_threads: threads gathering batches ahead (0: in the consuming thread).
      prefetch_steps: how many batches they run ahead.

    Returns:
      An iterator over {"images": uint8 [B_local, S, S, 3], "labels": int32 [B_local],
      "positions": int32 [B_local]}.
    """
    import grain

    stop = 2**62 if num_steps is None else start_step + num_steps
    dataset = grain.MapDataset.range(start_step, stop).map(_GatherBatch(split, plan))
    buffer = prefetch_steps if num_threads else 0
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=buffer)
    return iter(dataset.to_iter_dataset(options))
