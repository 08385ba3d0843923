"""One prepared GPU check of the large-data path (issue 6) on a fresh machine without network.

Standard library only (it installs what the rest needs, as ``bench/gpu_reproduce.py`` does,
from ``.whl/``). Steps, each timed, each skipped once ``--deadline_s`` has passed:

1. install the wheels, record the device;
1b. ``bench/streamed_train.py --format decoded`` (issue 16): the same ResNet-50 steps fed from a
   decoded store of ImageNet-LT's size (115,846 synthetic 256 x 256 rows, 22.8 GB, crops on
   device) against the pre-made batch; ``--only decoded_train`` runs just this (about 2 min);
2. ``bench/streamed_train.py``: ResNet-50 at 224, bfloat16, stage 1 (two host crops per image)
   and the supervised step, fed pre-made batches (the model's speed) and fed by the Grain
   pipeline on this machine's cores (is the GPU fed?);
3. ``bench/streaming.py``: host decode + crop rate by worker count, 1 and 2 views;
4. ``run.py --config=configs/imagenet_lt.py:smoke``: the streamed pipeline end to end on GPU;
5. ``bench/dpp_many_classes.py``: stage 2's grouped IP-DPP re-draws at 1000 / 8142 classes;
6. ``bench/throughput.py``: the CIFAR stage-1 step (ResNet-18, B 1024, bf16), if time is left.

Everything lands in OUT_DIR (JSON per bench, log.txt, summary.json).

    python3 bench/gpu_scale.py /tmp/out --quick     # CPU try: small sizes, every step
    python3 bench/gpu_scale.py "$OUT"               # device tool, carry=[".whl"]
    python3 bench/gpu_scale.py "$OUT" --only decoded_train,streamed_train   # issue 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import gpu_reproduce as gr  # bench/ is on sys.path when run as ``python3 bench/gpu_scale.py``

PY = sys.executable
DEVICE_INFO = """
import json, jax
d = jax.devices()[0]
print(json.dumps(dict(platform=d.platform, device_kind=d.device_kind,
                      device_count=jax.device_count(), jax=jax.__version__)))
"""


def steps(out: str, quick: bool) -> list[tuple[str, list[str]]]:
    """(name, command) of every step after the installation."""
    j = lambda name: os.path.join(out, name)
    if quick:
        streamed = [
            "--encoder",
            "cifar_resnet8",
            "--image_size",
            "64",
            "--batch_size",
            "16",
            "--dtype",
            "float32",
            "--steps",
            "3",
            "--num_images",
            "64",
        ]
        stream = ["--workers", "1,2", "--batches", "2", "--num_images", "64"]
        stream_p = ["--workers", "", "--processes", "2", "--batches", "8", "--num_images", "64"]
        cifar = [
            "--backbones",
            "cifar_resnet8",
            "--batch_sizes",
            "64",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--num_images",
            "1024",
            "--peak_size",
            "256",
        ]
        dpp = ["--datasets", "imagenet_lt", "--repeats", "1"]
    else:
        streamed = [
            "--encoder",
            "resnet50",
            "--image_size",
            "224",
            "--batch_size",
            "128",
            "--dtype",
            "bfloat16",
            "--steps",
            "15",
            "--warmup",
            "3",
        ]
        stream = [
            "--workers",
            "4,8,16",
            "--batches",
            "6",
            "--num_images",
            "512",
            "--batch_size",
            "64",
        ]
        stream_p = [
            "--workers",
            "",
            "--processes",
            "4,8,15",
            "--batches",
            "100",
            "--num_images",
            "512",
            "--batch_size",
            "64",
            "--repeats",
            "2",
        ]
        cifar = [
            "--backbones",
            "cifar_resnet18",
            "--batch_sizes",
            "1024",
            "--steps",
            "10",
            "--warmup",
            "3",
        ]
        dpp = []
    store = ["--store_rows", "256", "--store_size", "80"] if quick else []
    return [
        (
            "decoded_train",
            [
                PY,
                "bench/streamed_train.py",
                *streamed,
                "--format",
                "decoded",
                *store,
                "--out",
                j("decoded_train.json"),
            ],
        ),
        (
            "streamed_train",
            [PY, "bench/streamed_train.py", *streamed, "--out", j("streamed_train.json")],
        ),
        (
            "streaming_1view",
            [PY, "bench/streaming.py", *stream, "--out", j("streaming_1view.json")],
        ),
        (
            "streaming_2views",
            [
                PY,
                "bench/streaming.py",
                *stream,
                "--num_views",
                "2",
                "--out",
                j("streaming_2views.json"),
            ],
        ),
        (
            "streamed_train_processes",
            [
                PY,
                "bench/streamed_train.py",
                *streamed,
                "--processes",
                "2" if quick else "15",
                "--prefetch",
                "2",
                "--out",
                j("streamed_train_processes.json"),
            ],
        ),
        (
            "streaming_processes",
            [PY, "bench/streaming.py", *stream_p, "--out", j("streaming_processes.json")],
        ),
        (
            "imagenet_lt_smoke",
            [
                PY,
                "run.py",
                "--config=configs/imagenet_lt.py:smoke",
                "--workdir=/tmp/ltr_gpu_scale_smoke",
                "--config.data.num_workers=8",
            ],
        ),
        (
            "dpp_many_classes",
            [PY, "bench/dpp_many_classes.py", *dpp, "--out", j("dpp_many_classes.json")],
        ),
        (
            "cifar_stage1",
            [
                PY,
                "bench/throughput.py",
                "--stages",
                "stage1",
                "--dtypes",
                "float32" if quick else "bfloat16",
                *cifar,
                "--out",
                j("throughput_cifar.json"),
            ],
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deadline_s", type=float, default=450.0)
    parser.add_argument("--wheels", default=os.path.join(gr.REPO, ".whl"))
    parser.add_argument("--only", default="", help="comma-separated step names (default: all)")
    args = parser.parse_args()
    out = os.path.abspath(args.out_dir)
    os.makedirs(out, exist_ok=True)
    start = time.perf_counter()
    runner = gr.Driver(out, "/tmp/ltr_gpu_scale", dict(os.environ, PYTHONUNBUFFERED="1"))
    summary = runner.summary  # rewritten after every step
    summary["steps"] = {}
    try:
        gr.install_wheels(runner, args.wheels, "/tmp/site")
        _, text = runner.run("device_info", [PY, "-c", DEVICE_INFO])
        summary["device"] = json.loads(text.strip().splitlines()[-1])
        for name, cmd in steps(out, args.quick):
            if args.only and name not in args.only.split(","):
                continue
            if time.perf_counter() - start > args.deadline_s:
                runner.say(f"=== {name}: skipped (past --deadline_s {args.deadline_s:.0f} s)")
                summary["steps"][name] = "skipped"
                continue
            code, _ = runner.run(name, cmd)
            summary["steps"][name] = code
    except Exception as e:
        summary["error"] = f"{type(e).__name__}: {e}"
        runner.say(f"FAILED: {summary['error']}")
    runner.phase("total", time.perf_counter() - start)
    runner.say(json.dumps(summary, default=str))
    runner.log.close()
    return 1 if "error" in summary else 0


if __name__ == "__main__":
    sys.exit(main())
