"""One prepared run of the paper's CIFAR-10-LT recipe on a fresh GPU machine without network.

Standard library only (it installs what the rest needs). Steps, each timed:

1. install the wheels brought along (``bench/fetch_gpu_wheels.sh`` fills ``.whl/``) with
   ``pip install --no-index --no-deps --target /tmp/site`` and check the imports (the wheels in
   ``.whl/fallback/``, protobuf and etils, are used only if the machine's own fail);
2. build ``cifar-10-binary.tar.gz`` in the official layout from ``cifar10_jpeg_bytes.npz`` with
   ``make_cifar10_archive.py`` (both copied into ``--data``, default ``$LTR_DATA`` or ``.data/``)
   and prepare the TFDS dataset from it with ``allow_unverified_archive=True``: CIFAR-10 (JPEG
   copy), not the official pixels;
3. benchmark the stage-1 step (``bench/throughput.py``, ResNet-18, batch 1024, bf16) and the
   PyTorch reference on the same GPU (``bench/torch_reference.py``, where torch is installed);
4. run ``configs/cifar10_lt.py`` (BNS stage 1 -> linear probe -> IP-DPP stage 2, ResNet-18) with
   ``model.dtype=bfloat16`` on a GPU, one ``run.py`` call per stage, each timed;
5. write OUTPUT_DIR/summary.json (device, nvidia-smi, timings, every stage's results.json, what
   was cut), throughput.json, torch_reference.json, metrics.jsonl and log.txt: at most 6 files.

``--budget_minutes M`` cuts ONLY the number of stage-1 epochs (the paper's 1000, warm-up and
cosine then span the shorter run): N = (M - reserve) x 60 x measured stage-1 images/s / 12,406,
so stage 1 + probe + stage 2 fit in about M minutes; ``--stage1_epochs N`` sets N directly.
``--quick`` keeps the real data path but shrinks everything else (ResNet-8, 1 stage-1 epoch, a
tiny probe and stage 2), about a minute on a GPU and a few minutes on a 2-core CPU; on a machine
without a GPU it runs in float32 unless ``--dtype`` says otherwise.

    bash bench/fetch_gpu_wheels.sh                        # with network, once: fills .whl/
    mkdir -p .data && cp ../shared/data/{cifar10_jpeg_bytes.npz,make_cifar10_archive.py} .data/
    python3 bench/gpu_reproduce.py /tmp/out --quick       # try it (CPU is fine)
    python3 bench/gpu_reproduce.py "$OUT" --budget_minutes 6    # on the GPU machine
    python3 bench/gpu_reproduce.py "$OUT"                 # the full 1000 + 100 + 100 epochs

With this project's device tool: ``carry=[".whl", ".data"]`` and the output folder ``$OUT``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_IMAGES = 12406  # CIFAR-10-LT IF100
PAPER = {"top1": 76.4, "probe_top1": 68.2}
STAGES = ("stage1", "probe", "stage2")
QUICK_OVERRIDES = [
    "model.encoder=cifar_resnet8", "model.proj_hidden=64", "model.proj_dim=32",
    "stage1.epochs=1", "stage1.batch_size=1024",
    "probe.epochs=2", "probe.per_class=20", "probe.batch_size=64",
    "stage2.epochs=2", "stage2.batch_size=128", "stage2.k_per_class=50",
    "stage2.redraw_every_epochs=1",
    "train.eval_every_epochs=0", "train.log_every_steps=5", "train.checkpoint_every_steps=1000",
]  # fmt: skip
QUICK_BENCH = ["--backbones", "cifar_resnet8", "--batch_sizes", "64", "--steps", "2",
               "--warmup", "1", "--num_images", "1024"]  # fmt: skip
FULL_BENCH = ["--backbones", "cifar_resnet18", "--batch_sizes", "1024", "--steps", "20",
              "--warmup", "3"]  # fmt: skip
IMPORT_CHECK = """
import json, flax, grain, jax, ml_collections, optax, orbax.checkpoint, tensorboardX
import tensorflow_datasets as tfds
import ltr_jax.pipeline, ltr_jax.data.inputs
print(json.dumps({m.__name__: getattr(m, "__version__", "?") for m in
                  (jax, flax, optax, tfds, ml_collections, tensorboardX, grain)}))
"""
DEVICE_INFO = """
import json, jax
d = jax.devices()[0]
print(json.dumps(dict(platform=d.platform, device_kind=d.device_kind,
                      device_count=jax.device_count(), jax=jax.__version__)))
"""
PREPARE = """
import json, sys, time
from ltr_jax import config_lib
from ltr_jax.data import sources
data = config_lib.base_config().data
data.update(name="cifar10", manual_dir=sys.argv[1], data_dir=sys.argv[2], download=False,
            allow_unverified_archive=True)
ds = sources.load_dataset(data)
print(json.dumps(dict(train=len(ds.train.labels), test=len(ds.test.labels), verified=ds.verified)))
"""


class Runner:
    """Runs commands with output to the console and OUTPUT_DIR/log.txt; records their times."""

    def __init__(self, out_dir: str, env: dict):
        self.log = open(os.path.join(out_dir, "log.txt"), "a")  # noqa: SIM115 - closed in main
        self.env, self.timings = env, {}

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def run(self, name: str, cmd: list[str], check: bool = True) -> tuple[int, str]:
        """Runs ``cmd`` in the repository root; returns (exit code, its stdout + stderr)."""
        self.say(f"\n=== {name}: {' '.join(cmd)}")
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        lines = []
        for line in proc.stdout:
            lines.append(line)
            sys.stdout.write(line)
            self.log.write(line)
        code = proc.wait()
        self.timings[name] = round(time.perf_counter() - start, 2)
        self.say(f"=== {name}: exit {code} after {self.timings[name]:.1f} s")
        if check and code:
            raise RuntimeError(f"step {name!r} failed with exit code {code}")
        return code, "".join(lines)


def last_json_line(text: str) -> dict:
    """The last line of ``text`` that parses as a JSON object."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON line in the output")


def install_wheels(runner: Runner, wheels: str, site: str) -> dict:
    """Installs .whl/*.whl into ``site`` unless the packages already import; adds
    .whl/fallback/ only if the imports need it."""
    python = sys.executable
    pythonpath = [REPO]
    runner.env["PYTHONPATH"] = REPO
    code, text = runner.run("import_check_installed", [python, "-c", IMPORT_CHECK], check=False)
    if not code:  # e.g. a development machine: its own (maybe other-Python) wheels not needed
        runner.say("every package already imports: the wheels are not installed")
        return last_json_line(text)
    found = sorted(glob.glob(os.path.join(wheels, "*.whl"))) if wheels else []
    if found:
        pip = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target"]  # fmt: skip
        runner.run("install_wheels", pip + [site] + found)
        pythonpath.insert(0, site)
        fallback = sorted(glob.glob(os.path.join(wheels, "fallback", "*.whl")))
        if fallback:
            runner.run("install_fallback_wheels", pip + [site + "_fallback"] + fallback)
    else:
        runner.say(f"no wheels in {wheels}: using the installed packages")
    runner.env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    code, text = runner.run("import_check", [python, "-c", IMPORT_CHECK], check=False)
    if code and found and os.path.isdir(site + "_fallback"):
        runner.env["PYTHONPATH"] = os.pathsep.join([site + "_fallback"] + pythonpath)
        code, text = runner.run("import_check_with_fallback", [python, "-c", IMPORT_CHECK])
    if code:
        raise RuntimeError("the imports failed: see log.txt")
    return last_json_line(text)


def prepare_data(runner: Runner, data_dir: str, work: str) -> dict:
    """Builds the official-layout archive from the .npz and prepares the TFDS dataset."""
    npz = os.path.join(data_dir, "cifar10_jpeg_bytes.npz")
    maker = os.path.join(data_dir, "make_cifar10_archive.py")
    for path in (npz, maker):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: copy it from ../shared/data/ into "
                                    f"{data_dir}/ (see the module docstring)")  # fmt: skip
    manual = os.path.join(work, "manual")
    runner.run("build_archive", [sys.executable, maker, manual])
    tfds_dir = os.path.join(work, "tensorflow_datasets")
    _, text = runner.run("prepare_dataset", [sys.executable, "-c", PREPARE, manual, tfds_dir])
    return dict(last_json_line(text), manual_dir=manual, data_dir=tfds_dir)


def run_benchmarks(runner: Runner, args, out_dir: str) -> dict:
    """The JAX stage-1 throughput and, where torch is installed, the PyTorch reference."""
    bench = QUICK_BENCH if args.quick else FULL_BENCH
    jax_out = os.path.join(out_dir, "throughput.json")
    cmd = [sys.executable, "bench/throughput.py", "--stages", "stage1", "--dtypes", args.dtype,
           *bench, "--out", jax_out]  # fmt: skip
    if args.quick:
        cmd += ["--peak_size", "256"]
    runner.run("bench_jax", cmd, check=False)
    results = {"throughput": read_json(jax_out)}
    if args.skip_torch or importlib.util.find_spec("torch") is None:
        runner.say("PyTorch reference skipped (--skip_torch, or torch is not installed)")
        return results
    torch_out = os.path.join(out_dir, "torch_reference.json")
    backbone = "cifar_resnet32" if args.quick else "cifar_resnet18"  # torch has no ResNet-8
    cmd = [sys.executable, "bench/torch_reference.py", "--backbones", backbone,
           "--dtypes", args.dtype, *bench[2:], "--out", torch_out]  # fmt: skip
    code, _ = runner.run("bench_torch", cmd, check=False)
    results["torch_reference"] = read_json(torch_out) if code == 0 else None
    return results


def read_json(path: str):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def stage1_bench_row(bench: dict | None) -> dict | None:
    """The benchmark's first successful stage-1 row, with the matmul peaks it measured."""
    payload = (bench or {}).get("throughput") or {}
    for row in payload.get("results", []):
        if row.get("stage") == "stage1" and "images_per_s" in row:
            return dict(row, matmul_peak_tflops=payload.get("matmul_peak_tflops"))
    return None


def stage1_images_per_s(bench: dict | None) -> float | None:
    """Measured stage-1 images/s of the benchmark (None without one)."""
    row = stage1_bench_row(bench)
    return row["images_per_s"] if row else None


def stage1_estimates(summary: dict) -> dict:
    """Stage-1 TFLOP/s and fraction of the bf16 peak in the real run, and the full-recipe time.

    The FLOPs per image come from the benchmark's step (same backbone; a different batch size
    changes them only through the [2B, 2B] loss matrices, which are negligible).
    """
    speed = summary.get("training_images_per_s", {}).get("stage1")
    if not speed:
        return {}
    estimates = {"full_1000_epochs_stage1_s": 1000 * TRAIN_IMAGES / speed}
    bench = summary.get("stage1_bench")
    if bench and "model_flops" in bench:
        tflops = speed * bench["model_flops"] / bench["batch_size"] / 1e12
        estimates["pipeline_stage1_tflops_per_s"] = tflops
        peaks = bench.get("matmul_peak_tflops") or {}
        if "bfloat16" in peaks:
            estimates["pipeline_stage1_frac_bf16_peak"] = tflops / peaks["bfloat16"]
    return estimates


def choose_stage1_epochs(args, bench: dict) -> tuple[int | None, str | None]:
    """(stage-1 epochs or None for the config's 1000, a note saying what was cut)."""
    if args.stage1_epochs:
        return args.stage1_epochs, f"stage1.epochs cut to {args.stage1_epochs} (of 1000)"
    if args.budget_minutes is None:
        return None, None
    speed = stage1_images_per_s(bench)
    if speed is None:
        raise RuntimeError("--budget_minutes needs the stage-1 benchmark; it failed or was off")
    seconds = max(args.budget_minutes - args.reserve_minutes, 0.5) * 60
    epochs = max(1, min(1000, math.floor(seconds * speed / TRAIN_IMAGES)))
    note = (f"stage1.epochs cut to {epochs} (of 1000) to fit --budget_minutes="
            f"{args.budget_minutes} ({args.reserve_minutes} min reserved for probe, stage 2 and "
            f"compiles) at the measured {speed:.0f} stage-1 images/s; warm-up (20 epochs) and "
            "cosine span the shorter run; probe and stage 2 are the full recipe")  # fmt: skip
    return epochs, note


def overrides(args, data: dict, stage1_epochs: int | None) -> list[str]:
    """``--config.*`` flags of the pipeline run."""
    flags = [f"data.manual_dir={data['manual_dir']}", f"data.data_dir={data['data_dir']}",
             "data.download=False", "data.allow_unverified_archive=True",
             f"model.dtype={args.dtype}"]  # fmt: skip
    if args.quick:
        flags += QUICK_OVERRIDES
    if stage1_epochs is not None and not args.quick:
        flags.append(f"stage1.epochs={stage1_epochs}")
    return [f"--config.{f}" for f in flags]


def run_pipeline(runner: Runner, flags: list[str], workdir: str) -> dict:
    """One ``run.py`` call per stage (each timed); returns every stage's results.json."""
    results = {}
    for stage in STAGES:
        cmd = [sys.executable, "run.py", "--config=configs/cifar10_lt.py",
               f"--workdir={workdir}", f"--stages={stage}", *flags]  # fmt: skip
        runner.run(f"pipeline_{stage}", cmd)
        results[stage] = read_json(os.path.join(workdir, stage, "results.json"))
    return results


def training_speed(workdir: str) -> dict:
    """Median logged images/s per stage (the first log interval, with the compile, excluded)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    speed = {}
    for stage in STAGES:
        values = [r["images_per_s"] for r in records if r.get("stage") == stage
                  and "images_per_s" in r][1:]  # fmt: skip
        if values:
            speed[stage] = statistics.median(values)
    return speed


def headline(results: dict) -> dict:
    """Final top-1 / Many / Medium / Few of stage 2 and the probe, next to the paper's."""
    pick = lambda r: {k: (r or {}).get(k) for k in ("top1", "many", "medium", "few")}
    return {"stage2": pick(results.get("stage2")), "probe": pick(results.get("probe")),
            "paper": PAPER, "data": "CIFAR-10 (JPEG copy)-LT IF100"}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for summary.json, log.txt, ... (created)")
    parser.add_argument("--quick", action="store_true", help="smoke sizes, real data path")
    parser.add_argument("--budget_minutes", type=float, default=None)
    parser.add_argument("--reserve_minutes", type=float, default=4.0)
    parser.add_argument("--stage1_epochs", type=int, default=None)
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, else float32")
    parser.add_argument(
        "--data",
        default=os.environ.get("LTR_DATA", os.path.join(REPO, ".data")),
        help="folder with the .npz and make_cifar10_archive.py ($LTR_DATA)",
    )
    parser.add_argument("--wheels", default=os.path.join(REPO, ".whl"),
                        help="wheel folder; --wheels= uses the installed packages")  # fmt: skip
    parser.add_argument("--work", default="/tmp/ltr_gpu_reproduce", help="archive, TFDS, runs")
    parser.add_argument("--skip_torch", action="store_true", help="no PyTorch reference")
    parser.add_argument("--skip_bench", action="store_true",
                        help="no benchmarks (--budget_minutes then cannot be used)")  # fmt: skip
    return parser.parse_args(argv)


def write_summary(out_dir: str, summary: dict) -> None:
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)


def reproduce(args, runner: Runner, summary: dict) -> None:
    """Steps 1-4, filling ``summary`` as they finish."""
    summary["versions"] = install_wheels(runner, args.wheels, "/tmp/site")
    _, text = runner.run("device_info", [sys.executable, "-c", DEVICE_INFO])
    summary["device"] = last_json_line(text)
    if args.dtype is None:
        args.dtype = "bfloat16" if summary["device"]["platform"] == "gpu" else "float32"
    summary["dtype"] = args.dtype
    shutil.rmtree(os.path.join(args.work, "run"), ignore_errors=True)
    summary["data"] = prepare_data(runner, os.path.abspath(args.data), args.work)
    bench = {} if args.skip_bench else run_benchmarks(runner, args, args.out_dir)
    summary["stage1_bench"] = stage1_bench_row(bench)
    epochs, summary["cut"] = choose_stage1_epochs(args, bench)
    if args.quick:
        summary["cut"] = "--quick: " + " ".join(QUICK_OVERRIDES)
    flags = overrides(args, summary["data"], epochs)
    summary["pipeline_flags"] = flags
    workdir = os.path.join(args.work, "run")
    summary["results"] = run_pipeline(runner, flags, workdir)
    summary["training_images_per_s"] = training_speed(workdir)
    summary["stage1_estimates"] = stage1_estimates(summary)
    summary["headline"] = headline(summary["results"])
    if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
        shutil.copy(os.path.join(workdir, "metrics.jsonl"), args.out_dir)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out_dir = os.path.abspath(args.out_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    runner = Runner(args.out_dir, env)
    nvidia = shutil.which("nvidia-smi")
    smi = subprocess.run([nvidia], capture_output=True, text=True).stdout if nvidia else None
    summary = {"args": vars(args), "nvidia_smi": smi, "started": time.ctime()}
    start, status = time.perf_counter(), 0
    try:
        reproduce(args, runner, summary)
    except Exception as e:  # noqa: BLE001 - the summary records how far it got
        summary["error"] = f"{type(e).__name__}: {e}"
        runner.say(f"FAILED: {summary['error']}")
        status = 1
    summary["timings_s"] = dict(runner.timings, total=round(time.perf_counter() - start, 2))
    write_summary(args.out_dir, summary)
    runner.say(json.dumps({k: summary.get(k) for k in
                           ("device", "cut", "headline", "training_images_per_s",
                            "stage1_estimates", "timings_s", "error")}, indent=1,
                           default=str))  # fmt: skip
    runner.log.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
