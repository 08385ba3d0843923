"""Host throughput of the streaming input pipeline: JPEG decode + random resized crop + flip.

Synthetic JPEGs at ImageNet sizes (default 500x375, quality 90) are generated in memory: a
smooth random colour field plus pixel noise (``--noise`` 25: about 105 KB a file, printed),
close to the ImageNet-2012 training set's mean of about 110 KB (its 138 GB over 1.28 M files),
where pure noise would compress badly and decode slowly. They are fed through
`grain_pipeline.make_iterator` (Grain, worker threads, prefetch) exactly as training would read
them, for each worker count in ``--workers``; a ``serial`` row times `grain_pipeline.augment_image`
in a plain loop on one core (no pipeline) as the per-core cost floor.

images/s per core = images/s / min(workers, cores), the cores the case can actually use.
Cores to feed one H100 = ceil(model images/s / per-core images/s), where the model speed is an
ASSUMPTION, not a measurement (no GPU here): ``--model_images_per_s`` defaults to 3000 img/s,
a ballpark for ResNet-50 bf16 training on one H100 from published vendor benchmarks. Pass a
measured number (e.g. from ``bench/throughput.py``) when there is one.

    python bench/grain_pipeline.py                            # ~10 s on 2 idle cores
    python bench/grain_pipeline.py --workers 1,2,4,8 --batches 20 --num_images 512
    python bench/grain_pipeline.py --num_views 2 --out bench/results/streaming_cpu_2views.json

Rates count images (decoded once), each giving ``--num_views`` crops (stage 1's two views).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import statistics
import time

import numpy as np
from bench_lib import csv_list, machine_info, markdown_table, write_json
from PIL import Image

from ltr_jax.data.input import grain_pipeline

ASSUMED_RESNET50_H100_IMAGES_PER_S = 3000.0  # an assumption (see the module docstring)


def window_rates(batches, args, warm: int) -> list[float]:
    """Images/s of ``args.repeats`` windows of ``args.batches`` batches, each after ``warm``."""
    rates = []
    for _ in range(args.repeats):
        for _ in range(warm):
            next(batches)
        start = time.perf_counter()
        for _ in range(args.batches):
            next(batches)
        rates.append(args.batches * args.batch_size / (time.perf_counter() - start))
    return rates


def synthetic_jpeg(
    rng: np.random.Generator, width: int, height: int, quality: int, noise: float
) -> bytes:
    """A photo-like JPEG: a bicubic-upsampled 8x6 colour field plus Gaussian pixel noise."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.normal(0.0, noise, smooth.shape)
    pixels = np.clip(smooth + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def make_source(args: argparse.Namespace) -> list[dict]:
    """``--num_images`` in-memory records {"image": JPEG bytes, "label": int}."""
    rng = np.random.default_rng(0)
    return [
        {
            "image": synthetic_jpeg(rng, args.width, args.height, args.quality, args.noise),
            "label": i % 1000,
        }
        for i in range(args.num_images)
    ]


def time_serial(source: list[dict], args: argparse.Namespace) -> dict:
    """Decode + augment one image after another in this thread (one core, no pipeline)."""
    count = min(len(source), args.batches * args.batch_size)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(count):
            rng = np.random.default_rng([0, i])
            grain_pipeline.augment_image(source[i]["image"], rng, args.image_size, args.num_views)
        times.append(time.perf_counter() - start)
    return {"case": "serial", "workers": 0, "cores_used": 1, "images_per_s": count / min(times)}


def time_pipeline(
    source: list[dict], workers: int, args: argparse.Namespace, processes: int = 0
) -> dict:
    """Images/s of `make_iterator` with ``workers`` threads, or ``processes`` worker processes
    (best of ``--repeats`` windows)."""
    # The first batches of a window are warm-up: they fill the prefetch buffers (threads: one
    # batch; processes: the per-worker buffers of 2 batches each, ready at once).
    warm = 1 + 2 * processes
    per_window = args.batches + warm
    spec = grain_pipeline.IteratorSpec(
        seed=0,
        global_batch_size=args.batch_size,
        image_size=args.image_size,
        num_workers=workers,
        num_steps=args.repeats * per_window,
        num_views=args.num_views,
        num_processes=processes,
        prefetch_steps=2,
    )
    batches = grain_pipeline.make_iterator(source, spec)
    rates = window_rates(batches, args, warm)
    batches.close()
    cores = min(processes or workers, os.cpu_count() or 1)
    case = "processes" if processes else "threads"
    return {
        "case": case,
        "workers": processes or workers,
        "cores_used": cores,
        "images_per_s": max(rates),
    }


def add_derived(row: dict, model_images_per_s: float) -> dict:
    """Per-core rate and the cores that rate needs to feed the (assumed) model speed."""
    row["images_per_s_per_core"] = row["images_per_s"] / row["cores_used"]
    row["cores_for_h100"] = math.ceil(model_images_per_s / row["images_per_s_per_core"])
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=csv_list(int), default=[1, 2], help="threads")
    parser.add_argument("--processes", type=csv_list(int), default=[], help="worker processes")
    parser.add_argument("--num_images", type=int, default=256)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--noise", type=float, default=25.0, help="pixel noise std (file size)")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument(
        "--num_views", type=int, default=1, help="random crops per decoded image (stage 1: 2)"
    )
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per window")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--model_images_per_s", type=float, default=ASSUMED_RESNET50_H100_IMAGES_PER_S
    )
    parser.add_argument("--out", default="bench/results/streaming_cpu.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    source = make_source(args)
    mean_kb = statistics.fmean(len(r["image"]) for r in source) / 1024
    print(
        f"{len(source)} synthetic JPEGs {args.width}x{args.height} q{args.quality}, "
        f"mean {mean_kb:.0f} KB; output {args.num_views} x {args.image_size}x{args.image_size}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    rows = [time_serial(source, args)] + [time_pipeline(source, w, args) for w in args.workers]
    rows += [time_pipeline(source, 0, args, processes=p) for p in args.processes]
    rows = [add_derived(r, args.model_images_per_s) for r in rows]
    columns = [
        ("case", "case", "s"),
        ("workers", "workers", "d"),
        ("cores used", "cores_used", "d"),
        ("images/s", "images_per_s", ".0f"),
        ("images/s/core", "images_per_s_per_core", ".0f"),
        ("cores for H100 (est.)", "cores_for_h100", "d"),
    ]
    print(markdown_table(rows, columns))
    print(
        f"Cores for one H100 assume ResNet-50 trains at {args.model_images_per_s:.0f} img/s "
        "(an ESTIMATE, not measured here)."
    )
    payload = {
        "machine": machine_info(),
        "args": vars(args),
        "mean_jpeg_kb": mean_kb,
        "model_images_per_s": args.model_images_per_s,
        "model_images_per_s_is_estimate": True,
        "rows": rows,
    }
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
