"""Stage 2's IP-DPP re-draw at ImageNet-LT and iNaturalist 2018 scale: grouped on-device draws.

One whole re-draw (`rebalance.draw_subset`: the class table, the grouped exact draws of
`dpp.sample_ip_dpp_grouped`, the sorted subset) for class-count profiles of each dataset's
size, with confidences p ~ U(0.01, 1). The counts are SYNTHETIC (the real ImageNet-LT train
list is not on this machine): they fall from exactly the real largest to the real smallest
class (`profile_counts`), shaped so that the total matches the real training-set size:

- ImageNet-LT: 1000 classes, 1280..5, 115,846 images, k = 10 x 5 = 50.
- iNaturalist 2018: 8142 classes, 1000..2, 437,513 images, k = 10 x 2 = 20.

Reports the first call (compiles one program per size group) and the best of the later calls,
and the number of distinct compiled shapes.

    python bench/dpp_many_classes.py
    python bench/dpp_many_classes.py --datasets imagenet_lt --repeats 3
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from bench_lib import csv_list, machine_info, markdown_table, write_json
from ml_collections import ConfigDict

from ltr_jax import dpp
from ltr_jax.stages import rebalance

PROFILES = {  # classes, largest, smallest, real training-set size
    "imagenet_lt": (1000, 1280, 5, 115_846),
    "inaturalist2018": (8142, 1000, 2, 437_513),
}


def profile_counts(num_classes: int, n_max: int, n_min: int, total: int) -> np.ndarray:
    """Decreasing counts from exactly n_max to n_min whose sum is closest to ``total``.

    n_c = n_min (n_max / n_min)^((1 - c / (C - 1))^b): b = 1 is the exponential (LDAM) profile;
    b > 1 makes the head steeper, so the total shrinks; b is found by bisection.
    """
    t = 1.0 - np.arange(num_classes) / (num_classes - 1)
    counts = lambda b: np.round(n_min * (n_max / n_min) ** (t**b)).astype(np.int64)
    lo, hi = 0.05, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if counts(mid).sum() > total else (lo, mid)
    return counts(hi)


def time_draw(name: str, args: argparse.Namespace) -> dict:
    num_classes, n_max, n_min, total = PROFILES[name]
    counts = profile_counts(num_classes, n_max, n_min, total)
    labels = np.repeat(np.arange(num_classes), counts).astype(np.int32)
    p = np.random.default_rng(0).uniform(0.01, 1.0, len(labels)).astype(np.float32)
    k = 10 * n_min
    cfg = ConfigDict(dict(kernel_scale="paper", sampler=args.method))
    table, valid = rebalance.class_table(labels, num_classes)
    groups = dpp.size_groups(counts[counts > k])
    times = []
    for r in range(args.repeats + 1):
        start = time.perf_counter()
        positions, _ = rebalance.draw_subset(jax.random.key(r), p, table, valid, k, cfg)
        times.append(time.perf_counter() - start)
    return {
        "dataset": name,
        "classes": num_classes,
        "images": int(counts.sum()),
        "k": k,
        "classes_drawn": int((counts > k).sum()),
        "subset": len(positions),
        "compiled_shapes": len({(w, len(rows)) for w, rows in groups}),
        "first_s": times[0],
        "best_s": min(times[1:]),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=csv_list(str), default=list(PROFILES))
    parser.add_argument("--method", default="structured", choices=dpp.METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/dpp_many_classes_cpu.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rows = [time_draw(name, args) for name in args.datasets]
    columns = [
        ("dataset", "dataset", "s"),
        ("classes", "classes", "d"),
        ("images", "images", "d"),
        ("k", "k", "d"),
        ("classes drawn", "classes_drawn", "d"),
        ("subset", "subset", "d"),
        ("compiled shapes", "compiled_shapes", "d"),
        ("first call s", "first_s", ".2f"),
        ("re-draw s", "best_s", ".3f"),
    ]
    print(f"IP-DPP re-draw, method {args.method}, on {jax.devices()[0].device_kind}")
    print(markdown_table(rows, columns))
    write_json(args.out, {"machine": machine_info(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
