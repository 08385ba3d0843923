"""Does the streaming pipeline keep the accelerator fed? Streamed vs pre-made batches, same step.

For each stage the real training step is built from the library's pieces exactly as the stages
build it on streamed data (each stage module's ``make_setup``, built by ``train_lib.build`` as
``train_lib.fit`` builds it, over `streamed.StreamingInput.train_feed`), then timed twice, back
to back:

- ``model``: the step fed one pre-made global batch again and again (no input pipeline): the
  model's own speed, device-side augmentation included;
- ``streamed``: the step fed by ``feed.data(step, state)``, i.e. Grain worker threads decoding
  JPEGs, random-resized-cropping and flipping on the host, then the global batch assembled with
  `jax.make_array_from_process_local_data`; with ``--format decoded``, the same feed of a
  decoded store (`decoded.DecodedInput`: uint8 256 x 256 rows gathered on the host, every crop
  on device) of ``--store_rows`` synthetic images (default: ImageNet-LT's 115,846, 22.8 GB,
  written to ``--store_dir`` first and then in the page cache, as a prepared store would be).

fed = streamed / model images/s: 1.0 means the pipeline keeps up. Stages: ``stage1`` (BNS, two
host crops per image, SimCLR colour ops on device) and ``supervised`` (one crop + flip, linear
head, cross-entropy: the ``ce`` stage and stage 2's step). Data: ``--num_images`` synthetic
photo-like JPEGs at ImageNet size (``bench/streaming.py``'s generator, about 105 KB each),
held in memory, so disk speed is not measured.

    python bench/streamed_train.py --encoder resnet50 --image_size 224 --dtype bfloat16  # GPU
    python bench/streamed_train.py --format decoded --batch_size 256 --steps 30          # GPU
    python bench/streamed_train.py --encoder cifar_resnet8 --image_size 64 --batch_size 32 \\
        --dtype float32 --steps 5 --num_images 128 --workers 2                          # CPU try
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import bench_lib
import jax
import numpy as np
import streaming as streaming_bench  # bench/streaming.py: the synthetic JPEG generator
import throughput  # bench/throughput.py: stage_loop

from ltr_jax import config_lib, runtime
from ltr_jax.data.datasets import long_tail, synthetic
from ltr_jax.data.input import decoded, decoded_store, streamed

STAGES = ("stage1", "supervised")


def make_input(args, mesh) -> streamed.StreamingInput:
    """``--num_images`` in-memory synthetic JPEGs behind the streamed input."""
    rng = np.random.default_rng(0)
    images = tuple(
        streaming_bench.synthetic_jpeg(rng, args.width, args.height, 90, 25.0)
        for _ in range(args.num_images)
    )
    labels = (np.arange(args.num_images) % args.num_classes).astype(np.int32)
    split = synthetic.EncodedSplit(images, labels)
    counts = np.bincount(labels, minlength=args.num_classes)
    options = streamed.StreamOptions(
        args.image_size, args.workers, prefetch_steps=args.prefetch, num_processes=args.processes
    )
    return streamed.StreamingInput(
        split, split, args.num_classes, long_tail.shot_groups(counts, 100, 20), mesh, options
    )


def make_store_input(args, mesh) -> decoded.DecodedInput:
    """A decoded store of ``--store_rows`` synthetic S x S images behind `decoded.DecodedInput`.

    The rows are a repeated block of random images (written at memory speed, not decoded: the
    store's read side is what is timed here).
    """
    size, rows = args.store_size, args.store_rows
    path = os.path.join(args.store_dir or tempfile.mkdtemp(), "train.npy")
    images = np.lib.format.open_memmap(path, "w+", np.uint8, (rows, size, size, 3))
    block = np.random.default_rng(0).integers(0, 256, (min(rows, 1024), size, size, 3), np.uint8)
    for start in range(0, rows, len(block)):
        images[start : start + len(block)] = block[: rows - start]
    images.flush()
    labels = (np.arange(rows) % args.num_classes).astype(np.int32)
    split = decoded_store.DecodedSplit(np.load(path, mmap_mode="r"), labels)
    counts = np.bincount(labels, minlength=args.num_classes)
    options = streamed.StreamOptions(args.image_size, args.workers, prefetch_steps=args.prefetch)
    return decoded.DecodedInput(
        split, split, args.num_classes, long_tail.shot_groups(counts, 100, 20), mesh, options
    )


def make_step(stage: str, args, data: streamed.StreamingInput, mesh):
    """(jitted step, initial state, feed) of one stage on streamed data: the stage module's
    ``make_setup`` built by ``train_lib.build`` (`throughput.stage_loop`)."""
    config = config_lib.base_config()
    config.model.update(encoder=args.encoder, dtype=args.dtype)
    name = "ce" if stage == "supervised" else stage
    config[name].update(batch_size=args.batch_size, augment_strength=1.0)
    if name == "ce":
        config.ce.augment = "crop_flip"
    loop = throughput.stage_loop(name, config, data, mesh)
    return loop.train_step, loop.state, loop.feed


def time_steps(step, state, get_batch, key, warmup: int, steps: int) -> tuple[float, object]:
    """Seconds for ``steps`` steps after ``warmup``; blocks on the last state only (the host
    prepares batch t + 1 while the device runs step t, as in ``train_lib.run_loop``)."""
    for t in range(warmup):
        state, _ = step(state, get_batch(t, state), key)
    jax.block_until_ready(state)
    start = time.perf_counter()
    for t in range(warmup, warmup + steps):
        state, _ = step(state, get_batch(t, state), key)
    jax.block_until_ready(state)
    return time.perf_counter() - start, state


def bench_stage(stage: str, args, data, mesh) -> dict:
    step, state, feed = make_step(stage, args, data, mesh)
    key = jax.random.key(2)
    fixed = feed.data(0, state)
    start = time.perf_counter()
    state, _ = step(state, fixed, key)  # compile
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    model_s, state = time_steps(step, state, lambda t, s: fixed, key, args.warmup, args.steps)
    # Worker processes fill a buffer of processes x prefetch batches: skip that many (and time
    # twice as many) so that the timed steps run at the pipeline's steady rate. The feed
    # restarts at step 0 with empty buffers.
    warmup = max(args.warmup, args.processes * args.prefetch + args.warmup)
    timed = max(args.steps, 2 * warmup)
    streamed_s, state = time_steps(step, state, feed.data, key, warmup, timed)
    images = args.steps * args.batch_size
    row = {
        "stage": stage,
        "encoder": args.encoder,
        "dtype": args.dtype,
        "batch": args.batch_size,
        "image_size": args.image_size,
        "format": args.format,
        "workers": args.workers,
        "processes": args.processes,
        "compile_s": compile_s,
        "model_images_per_s": images / model_s,
        "streamed_images_per_s": timed * args.batch_size / streamed_s,
        "streamed_timed_steps": timed,
    }
    row["fed"] = row["streamed_images_per_s"] / row["model_images_per_s"]
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=bench_lib.csv_list(), default=list(STAGES))
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=streamed.default_num_workers())
    parser.add_argument("--processes", type=int, default=0, help="decode in worker processes")
    parser.add_argument("--prefetch", type=int, default=2, help="batches decoded ahead")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--num_images", type=int, default=1024)
    parser.add_argument("--num_classes", type=int, default=1000)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--format", default="jpeg", choices=decoded.FORMATS)
    parser.add_argument("--store_rows", type=int, default=115_846, help="--format decoded")
    parser.add_argument("--store_size", type=int, default=256, help="--format decoded: S")
    parser.add_argument("--store_dir", default=None, help="--format decoded (default: a tmp dir)")
    parser.add_argument("--out", default=None, help="JSON path (default by device)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    mesh = runtime.make_mesh()
    device = jax.devices()[0].device_kind
    data = make_store_input(args, mesh) if args.format == "decoded" else make_input(args, mesh)
    columns = [
        ("stage", "stage", "s"),
        ("encoder", "encoder", "s"),
        ("dtype", "dtype", "s"),
        ("batch", "batch", "d"),
        ("size", "image_size", "d"),
        ("format", "format", "s"),
        ("workers", "workers", "d"),
        ("processes", "processes", "d"),
        ("model img/s", "model_images_per_s", ".0f"),
        ("streamed img/s", "streamed_images_per_s", ".0f"),
        ("fed", "fed", ".2f"),
        ("compile s", "compile_s", ".1f"),
        bench_lib.ERROR_COLUMN,
    ]
    print(f"{device} x {len(jax.devices())}, {os.cpu_count()} host cores")
    measure = lambda stage: bench_stage(stage, args, data, mesh)
    rows = bench_lib.run_cases(bench_lib.grid(stage=args.stages), measure, columns, dict)
    slug = device.lower().replace(" ", "_")
    out = args.out or f"bench/results/streamed_train_{slug}.json"
    bench_lib.report(rows, columns, out, {"device": device, "args": vars(args)}, dict)


if __name__ == "__main__":
    main()
