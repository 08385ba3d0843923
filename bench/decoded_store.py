"""The decoded store against the JPEG path, side by side in one run, on this machine's CPU.

Synthetic ImageNet-size JPEGs (`bench/streaming.py`'s: 500x375, quality 90, about 105 KB) are
generated in memory, then timed back to back:

- ``prepare``: `decoded_store.prepare_store` at S = ``--store_size`` in 1 and ``--processes``
  worker processes: seconds per 1,000 images (the one-time cost);
- ``store``: the host side of training from the store, `decoded_store.make_iterator` with 1
  and 2 gathering threads (a memory-mapped row gather per image; the crops are made on the
  device, so the host work does not depend on the number of views);
- ``jpeg``: the JPEG-per-epoch host side, `streaming.make_iterator` with 1 and 2 threads and
  ``--processes`` worker processes (timed from their start, see `time_jpeg`), full-size and
  draft (``data.jpeg_draft``) decoding, 1 and 2 views (random resized crop + flip to
  ``--image_size`` on the host);
- ``device ops``: what the store moves to the accelerator, timed here on the CPU: the jitted
  SimCLR view (crop S -> ``--image_size`` + flip + colour) per image and view. On a GPU this is a
  few matmuls per image; on CPU it competes with the host work and is reported apart.

images/s per core = images/s / cores used (min(threads or processes, cores)). Host memory:
this process's resident set after each case (``VmRSS``; the store's pages are file-backed
page cache, counted there once touched) and the bytes per image of each form.

    python bench/decoded_store.py                  # about 2-3 minutes on 2 busy cores
    python bench/decoded_store.py --num_images 512 --batches 12
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import numpy as np
import streaming as jpeg_bench  # bench/streaming.py (bench/ is on sys.path)
from bench_lib import machine_info, markdown_table, write_json

from ltr_jax.data.input import augment, decoded_store, grain_pipeline


class _Split:
    """The in-memory JPEG records as a split (``source`` + ``labels``)."""

    def __init__(self, source: list[dict]):
        self.source, self.labels = source, np.array([r["label"] for r in source], np.int32)


def rss_mb() -> float:
    """This process's resident set size in MB (Linux)."""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def time_prepare(split: _Split, directory: str, args, processes: int) -> dict:
    start = time.perf_counter()
    decoded_store.prepare_store(
        directory, {"train": split}, size=args.store_size, num_processes=processes
    )
    seconds = time.perf_counter() - start
    cores = min(processes, os.cpu_count())
    return {
        "case": "prepare",
        "variant": f"{processes} process(es)",
        "cores_used": cores,
        "images_per_s": len(split.labels) / seconds,
        "s_per_1000_images": 1000 * seconds / len(split.labels),
    }


def _rate(batches, args, warm: int) -> float:
    """Best images/s over ``--repeats`` windows of ``args.batches`` batches after ``warm``."""
    return max(jpeg_bench.window_rates(batches, args, warm))


def time_store(store: decoded_store.DecodedSplit, args, threads: int) -> dict:
    plan = grain_pipeline.BatchPlan(len(store.labels), args.batch_size, seed=0)
    batches = decoded_store.make_iterator(store, plan=plan, num_threads=threads, prefetch_steps=2)
    rate = _rate(batches, args, warm=1)
    return {
        "case": "store",
        "variant": f"{threads} thread(s)",
        "views": "any",
        "cores_used": min(threads, os.cpu_count()),
        "images_per_s": rate,
    }


def time_jpeg(source, args, views: int, draft: bool, threads: int = 0, processes: int = 0):
    """Threads: best window after a warm-up batch. Processes: Grain's worker processes decode
    far ahead of the consumer while they start, so a window after warm-up would time their
    buffers; they are timed from the iterator's creation to the last of 3 x ``--batches``
    batches instead (their start-up included: a lower bound), start-up also given apart."""
    num_steps = args.repeats * (args.batches + 1) if threads else 3 * args.batches
    start = time.perf_counter()
    spec = grain_pipeline.IteratorSpec(
        seed=0,
        global_batch_size=args.batch_size,
        image_size=args.image_size,
        num_workers=threads,
        num_steps=num_steps,
        num_views=views,
        num_processes=processes,
        prefetch_steps=2,
        draft=draft,
    )
    batches = grain_pipeline.make_iterator(source, spec)
    row = {"case": "jpeg" + (" draft" if draft else ""), "views": views}
    if threads:
        row.update(variant=f"{threads} thread(s)", images_per_s=_rate(batches, args, warm=1))
    else:
        next(batches)
        first = time.perf_counter() - start
        for _ in range(num_steps - 1):
            next(batches)
        rate = num_steps * args.batch_size / (time.perf_counter() - start)
        row.update(variant=f"{processes} processes", images_per_s=rate, first_batch_s=first)
    batches.close()
    row["cores_used"] = min(processes or threads, os.cpu_count())
    return row


def time_device_ops(args, views: int) -> dict:
    """The store's on-device work (SimCLR views cropped from S), jitted, on this CPU."""
    size, out = args.store_size, args.image_size
    fn = jax.jit(
        lambda key, x: [
            augment.simclr(jax.random.fold_in(key, v), augment.to_float(x), size=out)
            for v in range(views)
        ]
    )
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, size, size, 3), np.uint8)
    images = jax.device_put(images)
    jax.block_until_ready(fn(jax.random.key(0), images))
    times = []
    for i in range(args.repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(jax.random.key(i), images))
        times.append(time.perf_counter() - start)
    return {
        "case": "device ops on CPU",
        "variant": "jit, all cores",
        "views": views,
        "cores_used": os.cpu_count(),
        "images_per_s": args.batch_size / min(times),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--noise", type=float, default=25.0)
    parser.add_argument("--store_size", type=int, default=256)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default="bench/results/decoded_store_cpu.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    source = jpeg_bench.make_source(args)
    split = _Split(source)
    jpeg_kb = statistics.fmean(len(r["image"]) for r in source) / 1024
    print(
        f"{len(source)} JPEGs {args.width}x{args.height}, mean {jpeg_kb:.0f} KB; store "
        f"S={args.store_size}; crops {args.image_size}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, args.processes):
            rows.append(time_prepare(split, os.path.join(tmp, f"p{processes}"), args, processes))
        store = decoded_store.open_store(os.path.join(tmp, "p1"), args.store_size)["train"]
        for threads in (1, 2):
            rows.append(time_store(store, args, threads) | {"rss_mb": rss_mb()})
        for views in (1, 2):
            for draft in (False, True):
                for threads in (1, 2):
                    row = time_jpeg(source, args, views, draft, threads=threads)
                    rows.append(row | {"rss_mb": rss_mb()})
            row = time_jpeg(source, args, views, True, processes=args.processes)
            rows.append(row | {"rss_mb": rss_mb()})
        for views in (1, 2):
            rows.append(time_device_ops(args, views) | {"rss_mb": rss_mb()})
    for row in rows:
        row["images_per_s_per_core"] = row["images_per_s"] / row["cores_used"]
    columns = [
        ("case", "case", "s"),
        ("workers", "variant", "s"),
        ("views", "views", "s"),
        ("images/s", "images_per_s", ".0f"),
        ("per core", "images_per_s_per_core", ".0f"),
        ("RSS MB", "rss_mb", ".0f"),
        ("first batch s", "first_batch_s", ".1f"),
    ]
    for row in rows:
        row.setdefault("views", "-")
        row["views"] = str(row["views"])
        row.setdefault("rss_mb", float("nan"))
        row.setdefault("first_batch_s", float("nan"))
    print(markdown_table(rows, columns))
    bytes_per_image = {"jpeg": jpeg_kb * 1024, "store": args.store_size**2 * 3}
    print(f"Bytes per image: JPEG {bytes_per_image['jpeg']:.0f}, store {bytes_per_image['store']}")
    write_json(
        args.out,
        {
            "machine": machine_info(),
            "args": vars(args),
            "rows": rows,
            "bytes_per_image": bytes_per_image,
            "load_average_start": os.getloadavg(),
        },
    )


if __name__ == "__main__":
    main()
