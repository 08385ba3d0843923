"""JAX vs PyTorch on the same machine, side by side: the stage-1 step, interleaved in rounds.

One process holds the ``ltr_jax`` stage-1 step (``throughput.JaxRunner``: data on device,
augmentation inside the jitted step) and the PyTorch step of ``torch_reference.py`` (variant A:
torchvision transforms + DataLoader workers; variant B: batched augmentation on the device),
same network, loss, optimizer, batch and dtype. After compiling and warming up each, it runs
``--rounds`` rounds; in each round every contender runs ``--steps_per_round`` timed steps
(order rotated round by round), so a change of machine load hits all of them alike. Before each
variant-A block the batches its workers prefetched while the others ran are consumed untimed,
so its timed steps only use batches produced inside its own block.

Images/s = images of all timed steps / their summed wall time. The ratio is JAX images/s over
the contender's; per-round ratios show how stable it is.

    python bench/compare_cpu.py                               # ResNet-32, batch 64, fp32, CPU
    python bench/compare_cpu.py --backbones cifar_resnet18 --batch_sizes 64 --rounds 3

Named for its main use (this project's CPU machines); it runs on a GPU too (JAX's memory
preallocation is turned off so that both frameworks fit).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # before JAX starts
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts: torch_reference.py

import argparse
import statistics

import bench_lib
import jax
import throughput
import torch_reference

from ltr_jax import runtime


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", type=bench_lib.csv_list(), default=["cifar_resnet32"])
    parser.add_argument("--batch_sizes", type=bench_lib.csv_list(int), default=[64])
    parser.add_argument("--dtypes", type=bench_lib.csv_list(), default=["float32"])
    parser.add_argument("--variants", type=bench_lib.csv_list(), default=["A", "B"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps_per_round", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num_workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--num_images", type=int, default=bench_lib.CIFAR10_LT_IF100_SIZE)
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def make_contenders(backbone: str, dtype: str, batch_size: int, args, data) -> dict:
    """{name: runner} for JAX and each torch variant, compiled / started and warmed up.

    ``data`` is the `throughput.synthetic_input`; torch gets the same images and labels.
    """
    contenders = {
        "jax": throughput.JaxRunner(
            "stage1", backbone, dtype, batch_size, args.num_images, data.mesh, data
        )
    }
    device = torch_reference.default_device()
    torch_data = dict(images=data.long_tail.train.images, labels=data.train_labels.astype("int64"))
    for variant in args.variants:
        contenders[f"torch_{variant}"] = torch_reference.TorchRunner(
            backbone, dtype, batch_size, variant, torch_data, args.num_workers, device
        )
    for runner in contenders.values():
        runner.run(args.warmup)
    return contenders


def interleave(contenders: dict, rounds: int, steps: int) -> dict:
    """Runs every contender ``steps`` steps per round, rotating the order; {name: [runs]}."""
    names, runs = list(contenders), {name: [] for name in contenders}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runner = contenders[name]
            if hasattr(runner, "drain"):
                runner.drain()
            runs[name].append(runner.run(steps))
            print(f"round {r}: {name} {steps} steps in {runs[name][-1]['wall']:.2f} s", flush=True)
    return runs


def summarize(runs: dict, batch_size: int) -> list[dict]:
    """Images/s per contender over all its rounds, and the JAX / contender ratios."""
    rows = []
    for name, blocks in runs.items():
        times = [t for b in blocks for t in b["times"]]
        wall = sum(b["wall"] for b in blocks)
        rows.append(
            dict(
                contender=name,
                images_per_s=batch_size * len(times) / wall,
                step_s_median=statistics.median(times),
                steps=len(times),
                round_images_per_s=[batch_size * len(b["times"]) / b["wall"] for b in blocks],
            )
        )
    jax_row = rows[0]
    for row in rows:
        row["jax_over_this"] = jax_row["images_per_s"] / row["images_per_s"]
        pairs = zip(jax_row["round_images_per_s"], row["round_images_per_s"], strict=True)
        row["round_ratios"] = [j / t for j, t in pairs]
    return rows


def run_case(backbone: str, dtype: str, batch_size: int, args, data: dict) -> list[dict]:
    contenders = make_contenders(backbone, dtype, batch_size, args, data)
    try:
        runs = interleave(contenders, args.rounds, args.steps_per_round)
    finally:
        for runner in contenders.values():
            if hasattr(runner, "close"):
                runner.close()
    rows = summarize(runs, batch_size)
    for row in rows:
        row.update(backbone=backbone, dtype=dtype, batch_size=batch_size)
    return rows


COLUMNS = bench_lib.columns(
    first=[("contender", "contender", "")],
    measured=[
        ("timed steps", "steps", "d"),
        ("JAX / this", "jax_over_this", ".2f"),
        ("per-round JAX / this", "rounds", ""),
    ],
)


def table_row(row: dict) -> dict:
    shown = bench_lib.shown(row)
    if "round_ratios" in row:
        shown["rounds"] = " ".join(f"{r:.2f}" for r in row["round_ratios"])
    return shown


def main(argv=None) -> dict:
    args = parse_args(argv)
    data = throughput.synthetic_input(args.num_images, runtime.make_mesh())
    cases = bench_lib.grid(backbone=args.backbones, dtype=args.dtypes, batch_size=args.batch_sizes)
    measure = lambda **case: run_case(**case, args=args, data=data)
    rows = bench_lib.run_cases(cases, measure, COLUMNS, table_row)
    platform = jax.devices()[0].platform
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(here, "results", f"compare_{platform}.json")
    payload = dict(
        benchmark="compare_jax_torch",
        device=throughput.device_info(),
        torch=torch_reference.torch_info(torch_reference.default_device()),
        args=vars(args),
    )
    return bench_lib.report(rows, COLUMNS, out, payload, table_row)


if __name__ == "__main__":
    main()
