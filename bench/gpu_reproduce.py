"""The paper's CIFAR-10-LT recipe on a fresh GPU machine without network: a thin, resumable driver.

Standard library only (it installs what the rest needs). The same command, issued again on
the same machine, resumes where the last one stopped:

1. install the wheels brought along (``bench/fetch_gpu_wheels.sh`` fills ``.whl/``) into
   ``/tmp/site``, unless the packages already import (a second call finds them there);
2. build ``cifar-10-binary.tar.gz`` in the official layout from ``cifar10_jpeg_bytes.npz`` with
   ``make_cifar10_archive.py`` (both copied into ``--data``, default ``$LTR_DATA`` or
   ``.data/``), unless it exists: CIFAR-10 (JPEG copy), not the official pixels, read with
   ``allow_unverified_archive=True``; ``run.py`` prepares the TFDS dataset from it the first
   time (and finds it prepared afterwards);
3. only with ``--bench``: the stage-1 step benchmark (``bench/throughput.py``, ResNet-18,
   batch 1024) and the PyTorch reference on the same GPU (``bench/torch_reference.py``);
4. ONE ``run.py`` process for all stages of ``configs/cifar10_lt.py`` (BNS stage 1 -> linear
   probe -> IP-DPP stage 2, ResNet-18, ``model.dtype=bfloat16`` on a GPU), with
   ``LTR_DEADLINE_UNIX`` = start + ``--deadline_s`` (default 560: 40 s before a 600 s limit):
   at the deadline it stops at a step boundary, saves a checkpoint and exits 75; the JAX
   persistent compilation cache (``$JAX_COMPILATION_CACHE_DIR``, default ``WORK/jax_cache``,
   every compile kept) spares a resume the compiles; checkpoints by time
   (``train.checkpoint_every_minutes``), TensorBoard off;
5. the output folder is written as the run goes: ``log.txt`` flushed per line (the run's INFO
   progress lines: stage, step/total, loss, images/s, ETA), each stage's results copied as
   ``<stage>_results.json`` when it finishes, ``metrics.jsonl``, ``draws.jsonl`` and
   ``config.json`` (every 30 s and at the end), ``summary.json`` rewritten after every phase
   and on SIGTERM: at most 8 files.

``--stage2_uniform`` then runs stage 2 again with ``stage2.sampler=uniform`` (uniform
under-sampling, the reference code's draw) on a copy of the same stage 1 and probe
(``WORK/run_uniform``), its results in ``summary.json``: IP-DPP against uniform is the paper's
central claim. Nothing is deleted unless ``--fresh`` (the run folders only).

``--beyond`` then runs, seed by seed (``--beyond_seeds``, default 3), the stage-2 variants of
README "Beyond the paper" on copies of the same stage 1 and probe (``WORK/beyond/<variant>/
seed_<s>``, ``stage2.seed=s``: the paper's stage 2, the uniform draw, balanced softmax on the
paper subset, cross-entropy on the balanced subset, balanced softmax on the sqrt subset; each
at the paper's stage-2 steps) and the single-stage baselines (ce, class-balanced re-sampling,
balanced softmax; ResNet-18, the two-stage run's total backbone steps), their results and a
mean +- std table in ``summary.json`` (``beyond``, ``beyond_table``). Finished runs are skipped:
the same command again continues after a cut (exit 75).

``--quick`` keeps the real data path but shrinks the rest (ResNet-8, 1 stage-1 epoch, a tiny
probe and stage 2); ``--smoke`` runs ``configs/cifar10_lt.py:smoke`` on synthetic data (no
data needed; the CPU rehearsal of ``tests/test_stopping.py``). Arguments after ``--`` go to
``run.py`` (e.g. ``--config.*``).

    bash bench/fetch_gpu_wheels.sh                        # with network, once: fills .whl/
    mkdir -p .data && cp ../shared/data/{cifar10_jpeg_bytes.npz,make_cifar10_archive.py} .data/
    python3 bench/gpu_reproduce.py /tmp/out --smoke --wheels=   # rehearse (CPU: minutes)
    python3 bench/gpu_reproduce.py "$OUT"                 # the full 1000 + 100 + 100 epochs
    python3 bench/gpu_reproduce.py "$OUT"                 # again: resumes (exit 75 = cut)
    python3 bench/gpu_reproduce.py "$OUT" --stage2_uniform   # done: + uniform stage 2
    python3 bench/gpu_reproduce.py "$OUT" --beyond   # + stage-2 variants and baselines, 3 seeds

With this project's device tool: ``carry=[".whl", ".data"]``, the output folder ``$OUT``,
``timeout_s=600``. Exit code: 0 done, 75 stopped at the deadline (issue it again), else failed.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_IMAGES = 12406  # CIFAR-10-LT IF100
PAPER = {"top1": 76.4, "probe_top1": 68.2, "many": None, "medium": None, "few": None}
STAGES = ("stage1", "probe", "stage2")
DATA = "CIFAR-10 (JPEG copy)-LT IF100"
STOPPED = 75  # ltr_jax.stopping.EXIT_CODE (this script imports nothing of the library)
QUICK_OVERRIDES = [
    "model.encoder=cifar_resnet8",
    "model.proj_hidden=64",
    "model.proj_dim=32",
    "stage1.epochs=1",
    "stage1.batch_size=1024",
    "probe.epochs=2",
    "probe.per_class=20",
    "probe.batch_size=64",
    "stage2.epochs=2",
    "stage2.batch_size=128",
    "stage2.k_per_class=50",
    "stage2.redraw_every_epochs=1",
    "train.eval_every_epochs=0",
    "train.log_every_steps=5",
]
QUICK_BENCH = [
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
]
FULL_BENCH = [
    "--backbones",
    "cifar_resnet18",
    "--batch_sizes",
    "1024",
    "--steps",
    "20",
    "--warmup",
    "3",
]
IMPORTS = "import flax, grain, jax, ml_collections, optax, orbax.checkpoint, tensorflow_datasets"
COPIED = {  # OUT name -> path in the run folder
    **{f"{s}_results.json": os.path.join(s, "results.json") for s in STAGES},
    "metrics.jsonl": "metrics.jsonl",
    "draws.jsonl": os.path.join("stage2", "draws.jsonl"),
    "config.json": "config.json",
}


class Driver:
    """The output folder: log.txt (flushed per line), summary.json, copies of the run's files."""

    def __init__(self, out_dir: str, work: str, env: dict):
        self.out_dir, self.work, self.env = out_dir, work, env
        self.log = open(os.path.join(out_dir, "log.txt"), "a")
        self.summary: dict = {"started": time.ctime(), "phases_s": {}}
        self.child: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)
            self.log.write(text + "\n")
            self.log.flush()

    def write_summary(self) -> None:
        with self._lock:
            path = os.path.join(self.out_dir, "summary.json")
            with open(path + ".tmp", "w") as f:
                json.dump(self.summary, f, indent=2, default=str)
            os.replace(path + ".tmp", path)

    def phase(self, name: str, seconds: float) -> None:
        self.summary["phases_s"][name] = round(seconds, 2)
        self.write_summary()

    def run(self, name: str, cmd: list[str], *, cwd: str = REPO) -> tuple[int, str]:
        """Runs ``cmd``, its output to the console and log.txt; returns (exit code, output)."""
        self.say(f"=== {name}: {' '.join(cmd)}")
        start = time.perf_counter()
        self.child = subprocess.Popen(
            cmd, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        for line in self.child.stdout:
            for part in line.replace("\r", "\n").splitlines():  # a bar's \r updates, if any
                if part.strip():
                    lines.append(part)
                    self.say(part)
        code = self.child.wait()
        self.child = None
        self.phase(name, time.perf_counter() - start)
        self.say(f"=== {name}: exit {code} after {self.summary['phases_s'][name]:.1f} s")
        return code, "\n".join(lines)

    def copy_outputs(self, run_dir: str) -> list[str]:
        """Copies the run's files that exist into the output folder; returns their names."""
        copied = []
        for name, rel in COPIED.items():
            src = os.path.join(run_dir, rel)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(self.out_dir, name))
                copied.append(name)
        return copied

    def on_sigterm(self, signum, frame) -> None:
        """Forwards SIGTERM to run.py (it stops cleanly) and records that in summary.json."""
        self.summary["sigterm_at"] = time.ctime()
        self.write_summary()
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


def imports_ok(driver: Driver) -> bool:
    return (
        subprocess.run(
            [sys.executable, "-c", IMPORTS], env=driver.env, cwd=REPO, capture_output=True
        ).returncode
        == 0
    )


def packages_found(paths: list[str]) -> bool:
    """Whether every package of ``IMPORTS`` is found on ``paths`` + this interpreter's path
    (without importing them: a second call must not pay for the imports)."""
    names = [n.split(".")[0] for n in IMPORTS.removeprefix("import ").split(", ")]
    saved = sys.path[:]
    sys.path[:0] = paths
    try:
        return all(importlib.util.find_spec(n) is not None for n in names)
    finally:
        sys.path[:] = saved


def install_wheels(driver: Driver, wheels: str, site: str) -> None:
    """Makes the packages importable: as installed, or from ``site`` (installed and checked
    once; ``site/.ltr_imports_ok`` marks a checked install)."""
    marker = os.path.join(site, ".ltr_imports_ok")
    if os.path.exists(marker):
        driver.env["PYTHONPATH"] = open(marker).read().strip()
        driver.say(f"wheels already installed in {site}")
        return
    driver.env["PYTHONPATH"] = REPO
    if packages_found([]):
        driver.say("packages found: no wheels installed")
        return
    found = sorted(glob.glob(os.path.join(wheels, "*.whl"))) if wheels else []
    if not found:
        raise RuntimeError(f"packages missing and no wheels in {wheels!r}: see the docstring")
    pip = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--upgrade",
        "--target",
    ]
    driver.run("install_wheels", pip + [site] + found)
    driver.env["PYTHONPATH"] = os.pathsep.join([site, REPO])
    fallback = sorted(glob.glob(os.path.join(wheels, "fallback", "*.whl")))
    if fallback and not imports_ok(driver):
        driver.run("install_fallback_wheels", pip + [site + "_fallback"] + fallback)
        driver.env["PYTHONPATH"] = os.pathsep.join([site + "_fallback", site, REPO])
    if not imports_ok(driver):
        raise RuntimeError(f"the packages do not import (wheels in {wheels!r}): see log.txt")
    with open(marker, "w") as f:
        f.write(driver.env["PYTHONPATH"])


def build_archive(driver: Driver, data_dir: str) -> str:
    """The official-layout CIFAR-10 archive in WORK/manual (built once); returns the folder."""
    manual = os.path.join(driver.work, "manual")
    if os.path.exists(os.path.join(manual, "cifar-10-binary.tar.gz")):
        driver.say(f"archive already built in {manual}")
        return manual
    npz = os.path.join(data_dir, "cifar10_jpeg_bytes.npz")
    maker = os.path.join(data_dir, "make_cifar10_archive.py")
    for path in (npz, maker):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path} is missing: copy it from ../shared/data/ into "
                f"{data_dir}/ (see the module docstring)"
            )
    code, _ = driver.run("build_archive", [sys.executable, maker, manual])
    if code:
        raise RuntimeError(f"make_cifar10_archive.py failed with exit code {code}")
    return manual


def run_benchmarks(driver: Driver, args) -> dict:
    """The JAX stage-1 step benchmark and, where torch is installed, the PyTorch reference."""
    bench = QUICK_BENCH if args.quick or args.smoke else FULL_BENCH
    jax_out = os.path.join(driver.work, "throughput.json")
    cmd = [
        sys.executable,
        "bench/throughput.py",
        "--stages",
        "stage1",
        "--dtypes",
        args.dtype,
        *bench,
        "--out",
        jax_out,
    ]
    if args.quick or args.smoke:
        cmd += ["--peak_size", "256"]
    driver.run("bench_jax", cmd)
    results = {"throughput": read_json(jax_out)}
    if importlib.util.find_spec("torch") is None:
        driver.say("PyTorch reference skipped: torch is not installed")
        return results
    torch_out = os.path.join(driver.work, "torch_reference.json")
    backbone = "cifar_resnet32" if args.quick or args.smoke else "cifar_resnet18"
    cmd = [
        sys.executable,
        "bench/torch_reference.py",
        "--backbones",
        backbone,
        "--dtypes",
        args.dtype,
        *bench[2:],
        "--out",
        torch_out,
    ]
    code, _ = driver.run("bench_torch", cmd)
    results["torch_reference"] = read_json(torch_out) if code == 0 else None
    return results


def gpu_name() -> str | None:
    """The first card's name from ``nvidia-smi`` (e.g. "NVIDIA H200"), None without one."""
    nvidia = shutil.which("nvidia-smi")
    if nvidia is None:
        return None
    out = subprocess.run(
        [nvidia, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout
    return out.strip().splitlines()[0] if out.strip() else None


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


def training_speed(run_dir: str) -> dict:
    """Median logged images/s per stage (the first log interval, with the compile, excluded)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    speed = {}
    for stage in STAGES:
        values = [
            r["images_per_s"] for r in records if r.get("stage") == stage and "images_per_s" in r
        ][1:]
        if values:
            speed[stage] = statistics.median(values)
    return speed


def stage1_estimates(summary: dict) -> dict:
    """Stage-1 TFLOP/s and fraction of the bf16 peak in the real run (with ``--bench``, whose
    step gives the FLOPs per image), and the time of 1000 stage-1 epochs at the run's speed."""
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


def headline(results: dict) -> dict:
    """Final top-1 / Many / Medium / Few of stage 2 and the probe, each stage's wall time,
    next to the paper's."""
    pick = lambda r: {k: (r or {}).get(k) for k in ("top1", "many", "medium", "few")}
    wall = {s: ((results.get(s) or {}).get("timing") or {}).get("wall_s") for s in STAGES}
    return {
        "stage2": pick(results.get("stage2")),
        "probe": pick(results.get("probe")),
        "stage_wall_s": wall,
        "paper": PAPER,
        "data": DATA,
    }


def run_flags(
    args, manual: str | None, workdir: str | None = None, config: str = "configs/cifar10_lt.py"
) -> list[str]:
    """The ``run.py`` command line (without the interpreter)."""
    config = config + ":smoke" if args.smoke else config
    flags = ["train.tensorboard=False"]  # its exit handler delays a stop by about 25 s
    if manual is not None:
        flags += [
            f"data.manual_dir={manual}",
            "data.download=False",
            "data.allow_unverified_archive=True",
            f"data.data_dir={os.path.join(args.work, 'tensorflow_datasets')}",
        ]
    if not args.smoke:
        flags.append(f"model.dtype={args.dtype}")
    if args.quick:
        flags += QUICK_OVERRIDES
    if args.stage1_epochs:
        flags.append(f"stage1.epochs={args.stage1_epochs}")
    workdir = workdir or os.path.join(args.work, "run")
    return [
        "run.py",
        f"--config={config}",
        f"--workdir={workdir}",
        *[f"--config.{f}" for f in flags],
        *args.run_args,
    ]


def run_pipeline(driver: Driver, args, manual: str | None) -> int:
    """The one ``run.py`` process, its outputs copied to OUT as they appear; its exit code.

    A watchdog kills it ``--grace_s`` after the deadline if it has not stopped by then (e.g.
    stuck in a compile): the last checkpoint then stays, as after any kill."""
    run_dir = os.path.join(args.work, "run")
    kill_at = float(driver.env.get("LTR_DEADLINE_UNIX", "inf")) + args.grace_s
    stop = threading.Event()

    def watch() -> None:
        last_copy = time.monotonic()
        while not stop.wait(1.0):
            if time.monotonic() - last_copy >= args.copy_every_s:
                driver.copy_outputs(run_dir)
                last_copy = time.monotonic()
            child = driver.child
            if time.time() > kill_at and child is not None and child.poll() is None:
                driver.say(
                    f"watchdog: run.py still running {args.grace_s:.0f} s after the "
                    "deadline: killed (it resumes from its last checkpoint)"
                )
                child.kill()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        code, _ = driver.run("pipeline", [sys.executable, *run_flags(args, manual)])
    finally:
        stop.set()
        watcher.join()
    driver.summary["copied"] = driver.copy_outputs(run_dir)
    return code


def copy_pretrained(src: str, dst: str) -> None:
    """Copies stage 1, the probe and config.json of run folder ``src`` into ``dst`` (what is
    not there yet): a stage-2 variant continues its own copy."""
    for part in ("stage1", "probe", "config.json"):
        if not os.path.exists(os.path.join(dst, part)):
            copy = shutil.copytree if os.path.isdir(os.path.join(src, part)) else shutil.copy
            os.makedirs(dst, exist_ok=True)
            copy(os.path.join(src, part), os.path.join(dst, part))


def run_uniform_stage2(driver: Driver, args, manual: str | None) -> dict | None:
    """Stage 2 with ``stage2.sampler=uniform`` (the reference code's under-sampling) on the
    same stage 1 and probe, in WORK/run_uniform (a copy of them); its results.json."""
    src, dst = os.path.join(args.work, "run"), os.path.join(args.work, "run_uniform")
    copy_pretrained(src, dst)
    flags = run_flags(args, manual, dst) + ["--stages=stage2", "--config.stage2.sampler=uniform"]
    code, _ = driver.run("stage2_uniform", [sys.executable, *flags])
    driver.summary["stage2_uniform_exit_code"] = code
    return read_json(os.path.join(dst, "stage2", "results.json"))


# --beyond (README "Beyond the paper"): stage-2 variants on copies of WORK/run's stage 1 and
# probe, each with its own stage2.seed, then the single-stage baselines from scratch. At the
# paper's budget every variant takes the paper's stage-2 steps (100 epochs x 52 steps of 64 on
# the paper subset of 3391 images): the balanced subset (5000 images, 78 steps per epoch) 67
# epochs, the sqrt subset (3907 images, 61 steps) 85 epochs, each with 10 draws
# (tests/test_stages.py checks these numbers against ltr_jax.stages.rebalance).
BEYOND_VARIANTS = {  # name -> (stage-2 overrides, epochs, redraw_every_epochs) at full budget
    "paper_ipdpp_ce": ([], 100, 10),
    "uniform_ce": (["stage2.sampler=uniform"], 100, 10),
    "paper_subset_balanced_softmax": (["stage2.loss=balanced_softmax"], 100, 10),
    "balanced_subset_ce": (["stage2.subset=balanced"], 67, 7),
    "sqrt_subset_balanced_softmax": (
        ["stage2.subset=sqrt", "stage2.loss=balanced_softmax"],
        85,
        9,
    ),
}
# The baselines at the two-stage run's total backbone steps: 1000 stage-1 epochs x 12 steps of
# 1024 + 5200 stage-2 steps = 17,200 steps of 128 (96 per epoch): 179 epochs, on the same
# ResNet-18 as the reproduction.
BEYOND_BASELINES = {
    "ce": "configs/baselines/ce_cifar10_lt.py",
    "cb_resample": "configs/baselines/cb_resample_cifar10_lt.py",
    "balanced_softmax": "configs/baselines/balanced_softmax_cifar10_lt.py",
}
BEYOND_BASELINE_EPOCHS = 179


def beyond_runs(args) -> list[tuple[str, str | None, list[str]]]:
    """``--beyond``'s runs in order, seed by seed: (name, config file or None for a stage-2
    variant on a copy of WORK/run, ``--config.*`` overrides)."""
    full = not (args.smoke or args.quick)
    names = set(args.beyond_names.split(",")) if args.beyond_names else None
    runs = []
    for seed in range(args.beyond_seeds):
        for name, (overrides, epochs, every) in BEYOND_VARIANTS.items():
            sizes = [f"stage2.epochs={epochs}", f"stage2.redraw_every_epochs={every}"]
            keys = overrides + (sizes if full else []) + [f"stage2.seed={seed}"]
            runs.append((f"{name}/seed_{seed}", None, keys))
        for name, config in BEYOND_BASELINES.items():
            sizes = [f"ce.epochs={BEYOND_BASELINE_EPOCHS}", "model.encoder=cifar_resnet18"]
            keys = (sizes if full else ["ce.epochs=1"] if args.quick else []) + [f"seed={seed}"]
            runs.append((f"{name}/seed_{seed}", config, keys))
    return [r for r in runs if names is None or r[0].split("/")[0] in names]


def _mean_std(values: list[float]) -> dict:
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.mean(values), "std": std, "n": len(values)}


def run_beyond(driver: Driver, args, manual: str | None) -> int:
    """Every ``--beyond`` run not finished yet (a cut one resumes), in WORK/beyond/NAME/seed_S;
    the results and a mean +- std table in summary.json (``beyond``, ``beyond_table``).
    Returns the first non-zero exit code (75: cut at the deadline, issue the command again)."""
    src = os.path.join(args.work, "run")
    rows: dict[str, dict] = {}
    code = 0
    for name, config, keys in beyond_runs(args):
        dst = os.path.join(args.work, "beyond", name)
        result = os.path.join(dst, "ce" if config else "stage2", "results.json")
        if not os.path.exists(result) and code == 0:
            if config is None:  # stage 1 and the probe of the reproduction, copied once
                copy_pretrained(src, dst)
                flags = run_flags(args, manual, dst) + ["--stages=stage2"]
            else:
                flags = run_flags(args, manual, dst, config)
            flags += [f"--config.{k}" for k in keys]
            code, _ = driver.run(f"beyond_{name}", [sys.executable, *flags])
        res = read_json(result)
        if res is not None:
            rows[name] = {k: res.get(k) for k in ("top1", "many", "medium", "few")}
            rows[name]["per_class_acc"] = res.get("per_class_acc")
    table: dict[str, dict] = {}
    for name, row in rows.items():
        method = name.split("/")[0]
        for k in ("top1", "many", "medium", "few"):
            table.setdefault(method, {}).setdefault(k, []).append(row[k])
    driver.summary["beyond"] = rows
    driver.summary["beyond_table"] = {
        m: {k: _mean_std(v) for k, v in cols.items()} for m, cols in table.items()
    }
    driver.summary["beyond_exit_code"] = code
    driver.write_summary()
    return code


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for log.txt, summary.json, ... (created)")
    parser.add_argument("--fresh", action="store_true", help="delete the run folders first")
    parser.add_argument("--bench", action="store_true", help="benchmark JAX and PyTorch first")
    parser.add_argument(
        "--deadline_s",
        type=float,
        default=560.0,
        help="stop the run cleanly this long after the start (0: never)",
    )
    parser.add_argument(
        "--stage2_uniform",
        action="store_true",
        help="then stage 2 with sampler=uniform on the same stage 1 and probe",
    )
    parser.add_argument(
        "--beyond",
        action="store_true",
        help="then the stage-2 variants and baselines of README 'Beyond the paper', seeded",
    )
    parser.add_argument("--beyond_seeds", type=int, default=3, help="seeds 0..N-1 of --beyond")
    parser.add_argument(
        "--beyond_names",
        default="",
        help="comma-separated variant / baseline names of --beyond (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke sizes, real data path")
    parser.add_argument("--smoke", action="store_true", help="configs/cifar10_lt.py:smoke")
    parser.add_argument("--stage1_epochs", type=int, default=None)
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on GPU, else float32")
    parser.add_argument(
        "--data",
        default=os.environ.get("LTR_DATA", os.path.join(REPO, ".data")),
        help="folder with the .npz and make_cifar10_archive.py ($LTR_DATA)",
    )
    parser.add_argument(
        "--wheels",
        default=os.path.join(REPO, ".whl"),
        help="wheel folder; --wheels= uses the installed packages",
    )
    parser.add_argument(
        "--work",
        default="/tmp/ltr_gpu_reproduce",
        help="archive, TFDS data, compilation cache, the run",
    )
    parser.add_argument(
        "--grace_s",
        type=float,
        default=30.0,
        help="kill run.py this long after the deadline if it still runs",
    )
    parser.add_argument("--copy_every_s", type=float, default=30.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.run_args = argv[split + 1 :]  # more run.py flags, e.g. --config.*
    return args


def reproduce(args, driver: Driver) -> int:
    """Phases 1-4, recording each in summary.json; returns run.py's exit code."""
    start = time.perf_counter()
    install_wheels(driver, args.wheels, "/tmp/site")
    card = gpu_name()  # run.py logs the devices JAX sees
    driver.summary["device"] = {"card": card}
    args.dtype = args.dtype or ("bfloat16" if card else "float32")
    manual = None if args.smoke else build_archive(driver, os.path.abspath(args.data))
    driver.phase("setup", time.perf_counter() - start)
    if args.bench:
        driver.summary["bench"] = run_benchmarks(driver, args)
        driver.summary["stage1_bench"] = stage1_bench_row(driver.summary["bench"])
    driver.summary["run_command"] = run_flags(args, manual)
    code = run_pipeline(driver, args, manual)
    run_dir = os.path.join(args.work, "run")
    results = {s: read_json(os.path.join(run_dir, s, "results.json")) for s in STAGES}
    driver.summary.update(
        run_exit_code=code,
        results=results,
        training_images_per_s=training_speed(run_dir),
        status={
            0: "done",
            STOPPED: "stopped at the deadline: issue the same command again to resume",
        }.get(code, f"run.py failed (exit {code})"),
    )
    driver.summary["stage1_estimates"] = stage1_estimates(driver.summary)
    driver.summary["headline"] = headline(results)
    driver.summary["headline"]["data"] = "synthetic (smoke)" if args.smoke else DATA
    driver.write_summary()
    if code == 0 and args.stage2_uniform:
        uniform = run_uniform_stage2(driver, args, manual)
        driver.summary["stage2_uniform"] = uniform
        driver.summary["headline"]["stage2_uniform"] = {
            k: (uniform or {}).get(k) for k in ("top1", "many", "medium", "few")
        }
        code = driver.summary["stage2_uniform_exit_code"]
    if code == 0 and args.beyond:
        code = run_beyond(driver, args, manual)
    return code


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out_dir, args.work = os.path.abspath(args.out_dir), os.path.abspath(args.work)
    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        TQDM_DISABLE="1",
        JAX_LOG_COMPILES="1",
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.work, "jax_cache"))
    if args.deadline_s > 0:
        env["LTR_DEADLINE_UNIX"] = str(time.time() + args.deadline_s)
    driver = Driver(args.out_dir, args.work, env)
    signal.signal(signal.SIGTERM, driver.on_sigterm)
    nvidia = shutil.which("nvidia-smi")
    smi = subprocess.run([nvidia], capture_output=True, text=True).stdout if nvidia else None
    driver.summary.update(args=vars(args), nvidia_smi=smi)
    if args.fresh:
        for name in ("run", "run_uniform"):
            shutil.rmtree(os.path.join(args.work, name), ignore_errors=True)
        driver.say(f"--fresh: deleted {args.work}/run and run_uniform")
    start, status = time.perf_counter(), 1
    try:
        status = reproduce(args, driver)
    except Exception as e:
        driver.summary["error"] = f"{type(e).__name__}: {e}"
        driver.say(f"FAILED: {driver.summary['error']}")
    driver.phase("total", time.perf_counter() - start)
    driver.say(
        json.dumps(
            {
                k: driver.summary.get(k)
                for k in (
                    "device",
                    "status",
                    "headline",
                    "training_images_per_s",
                    "stage1_estimates",
                    "phases_s",
                    "error",
                )
            },
            indent=1,
            default=str,
        )
    )
    driver.log.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
