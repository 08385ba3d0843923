"""Stage 2 beyond the paper: balanced objectives and balanced subsets on the IP-DPP draw, over
seeds, against the paper's stage 2 and the single-stage baselines (CIFAR-10-LT, one CPU).

    python bench/stage2_study.py OUT --archive_dir=DIR --tfds_dir=DIR [--jobs=2]
    python bench/stage2_study.py /tmp/rehearse --smoke --seeds 0 1   # synthetic, minutes

ONE stage 1 (BNS, reference form) + linear probe in ``OUT/stage1``; every stage-2 variant
continues its own copy of it, ``OUT/<variant>/seed_<s>``, with ``stage2.seed=s``; the
single-stage baselines (``ce`` section) run from scratch with ``seed=s`` at the same total
number of backbone gradient steps (stage-1 steps + stage-2 steps, rounded to whole epochs; the
probe's head-only steps not counted). A stage-2 variant takes at most the paper's stage-2 steps
(``--e2`` epochs of the paper's subset; a larger subset gets the whole epochs that fit), with
two draws.

Resumable: SIGTERM stops every process at a step boundary with a checkpoint (a worker then
ends); the same command again skips finished runs (the pipeline skips finished stages and
resumes a cut one from its checkpoint; a copy is made under a temporary name, then renamed).
Plan order: the stage-2 runs seed by seed (all variants of seed 0 first), then the baselines
seed by seed, so a cut study still has whole seeds of the stage-2 comparison.
``--jobs`` worker processes share the runs: each loads the data once, claims the next run in
plan order (waiting while that is a stage-2 run and stage 1 is not done) and runs it in process
(``ltr_jax.pipeline.run``), logging to ``OUT/worker_<i>.log``.
At the end: ``python -m ltr_jax.report`` over every finished workdir (table of mean +- std,
per-class figure) into ``OUT/report``, and ``bench/results/stage2_study/summary.json`` with
the table and the budget when ``--results`` is given. Reproduction script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ltr_jax import config_lib  # noqa: E402
from ltr_jax.data.input import sampler  # noqa: E402
from ltr_jax.stages import rebalance  # noqa: E402

COUNTS = np.array([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50])  # CIFAR-10-LT IF100
CE_BATCH = 128  # the ce section's batch (configs/baselines/ce_cifar10_lt.py)

# name -> stage-2 overrides (besides the epochs); the first two are the paper's stage 2 and
# the released code's draw, the others beyond the paper.
VARIANTS = {
    "paper_ipdpp_ce": [],
    "sqrt_subset_balanced_softmax": ["stage2.subset=sqrt", "stage2.loss=balanced_softmax"],
    "balanced_subset_ce": ["stage2.subset=balanced"],
    "paper_subset_balanced_softmax": ["stage2.loss=balanced_softmax"],
    "uniform_ce": ["stage2.sampler=uniform"],
}
BASELINES = {
    "ce": "configs/baselines/ce_cifar10_lt.py",
    "cb_resample": "configs/baselines/cb_resample_cifar10_lt.py",
    "balanced_softmax": "configs/baselines/balanced_softmax_cifar10_lt.py",
}


def stage2_steps(overrides: list[str], batch_size: int) -> int:
    """Steps per epoch of a stage-2 variant on CIFAR-10-LT IF100 (its subset's size)."""
    cfg = config_lib.base_config().stage2
    for o in overrides:
        key, value = o.split("=")
        if key == "stage2.subset":
            cfg.subset = value
    size = int(rebalance.subset_counts(cfg, COUNTS).sum())
    return sampler.steps_per_epoch(size, batch_size, True)


def plan(args) -> tuple[list[tuple[str, list[str], str]], dict]:
    """Every run (workdir, run.py arguments, kind) in order, and the budget."""
    data = [
        f"--config.data.manual_dir={args.archive_dir}",
        "--config.data.download=False",
        "--config.data.allow_unverified_archive=True",
        f"--config.data.data_dir={args.tfds_dir}",
    ]
    common = data + [
        f"--config.model.encoder={args.encoder}",
        "--config.train.eval_every_epochs=0",
        "--config.train.checkpoint_every_steps=100",
    ]
    s1_steps = args.e1 * sampler.steps_per_epoch(int(COUNTS.sum()), 256, True)
    paper_steps = args.e2 * stage2_steps([], 64)
    stage1 = ["--config=configs/cifar10_lt.py", *common] + [
        "--config.seed=0",
        f"--config.stage1.epochs={args.e1}",
        "--config.stage1.batch_size=256",
        "--config.stage1.optim.warmup_epochs=0.5",
        f"--config.probe.epochs={args.probe_epochs}",
    ]
    runs = [("stage1", stage1 + ["--stages=stage1,probe"], "stage1")]
    ce_spe = sampler.steps_per_epoch(int(COUNTS.sum()), CE_BATCH, True)
    ce_epochs = max(1, round((s1_steps + paper_steps) / ce_spe))
    budget = {
        "encoder": args.encoder,
        "stage1_epochs": args.e1,
        "stage1_steps": s1_steps,
        "probe_epochs": args.probe_epochs,
        "stage2_steps_paper": paper_steps,
        "baseline_epochs": ce_epochs,
        "baseline_steps": ce_epochs * ce_spe,
        "variants": {},
    }
    for seed in args.seeds:  # every stage-2 run first (seed by seed), then the baselines
        for name, overrides in VARIANTS.items():
            if name not in args.variants:
                continue
            spe = stage2_steps(overrides, 64)
            epochs = max(2, paper_steps // spe)  # never more steps than the paper's
            budget["variants"][name] = {"epochs": epochs, "steps": epochs * spe}
            extra = [f"--config.{o}" for o in overrides] + [
                f"--config.stage2.epochs={epochs}",
                f"--config.stage2.redraw_every_epochs={(epochs + 1) // 2}",
                "--config.stage2.optim.warmup_epochs=0.5",
                f"--config.stage2.seed={seed}",
            ]
            runs.append((f"{name}/seed_{seed}", stage1 + extra + ["--stages=stage2"], "stage2"))
    for seed in args.seeds:
        for name, config in BASELINES.items():
            if name not in args.baselines:
                continue
            extra = [
                f"--config.seed={seed}",
                f"--config.ce.epochs={ce_epochs}",
                "--config.ce.optim.warmup_epochs=1",
            ]
            runs.append(
                (f"{name}/seed_{seed}", [f"--config={config}", *common, *extra], "baseline")
            )
    if args.smoke:  # the config files' :smoke sizes (synthetic data): a rehearsal in minutes
        runs = [(w, [_smoke(a) for a in argv if _smoke(a)], kind) for w, argv, kind in runs]
    return runs, budget


SMOKE_KEPT = ("--stages=", "--config.seed=", "--config.stage2.seed=", "--config.stage2.subset=")
SMOKE_KEPT += ("--config.stage2.loss=", "--config.stage2.sampler=")


def _smoke(arg: str) -> str | None:
    """A run's argument at smoke size: the config file's :smoke, only the seeds and variant
    keys kept (None: dropped)."""
    if arg.startswith("--config="):
        return arg + ":smoke"
    return arg if arg.startswith(SMOKE_KEPT) else None


def make_config(argv: list[str]):
    """The FrozenConfigDict of ``run.py`` arguments ``--config=FILE --config.a.b=V ...``."""
    import ast

    from ml_collections import FrozenConfigDict

    path = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    config = config_lib.load_config_file(os.path.join(REPO, path))
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted, text = arg[len("--config.") :].split("=", 1)
        *parents, key = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        node[key] = type(node[key])(value) if isinstance(node[key], float) else value
    return FrozenConfigDict(config)


def execute(out: str, workdir: str, argv: list[str], kind: str) -> str:
    """Runs one workdir to completion in this process (a no-op when finished)."""
    from ltr_jax import pipeline, stopping

    path = os.path.join(out, workdir)
    if finished(out, workdir, kind):
        return f"{workdir}: done"
    if kind == "stage2" and not os.path.exists(path):
        tmp = path + ".copying"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(os.path.join(out, "stage1"), tmp)
        os.rename(tmp, path)
    began = time.time()
    stages = next((a.split("=", 1)[1].split(",") for a in argv if a.startswith("--stages=")), None)
    try:
        pipeline.run(make_config(argv), path, stages)
    except stopping.Stopped:  # SIGTERM / deadline: checkpointed; this worker stops here
        raise
    except Exception as e:
        return f"{workdir}: FAILED after {time.time() - began:.0f} s: {type(e).__name__}: {e}"
    return f"{workdir}: done in {time.time() - began:.0f} s"


FINAL = {"stage1": "probe", "stage2": "stage2", "baseline": "ce"}  # kind -> last stage


def finished(out: str, workdir: str, kind: str) -> bool:
    return os.path.exists(os.path.join(out, workdir, FINAL[kind], "results.json"))


def claim(out: str, workdir: str) -> bool:
    """Takes a run for this worker (an exclusive ``OUT/<workdir>.claim`` file)."""
    path = os.path.join(out, workdir + ".claim")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def worker(args, runs) -> int:
    """Takes the first unclaimed run in plan order, again and again, loading the data once (every
    run shares one data config); a stage-2 run waits for stage 1 and the probe."""
    from absl import logging

    from ltr_jax.data.input import make

    logging.set_verbosity(logging.INFO)  # the pipeline's progress lines, into the worker's log
    load, loaded = make.load_input, {}

    def load_once(config, mesh):
        key = config.to_json()
        if key not in loaded:
            loaded[key] = load(config, mesh)
        return loaded[key]

    make.load_input = load_once  # the pipeline's one entry to the data
    while True:
        ready = finished(args.out, *runs[0][::2])
        taken, waiting = None, False
        for run in runs[1:]:  # strictly in plan order: a stage-2 run waits for stage 1
            if finished(args.out, run[0], run[2]):
                continue
            if run[2] == "stage2" and not ready:
                waiting = True
                break
            if claim(args.out, run[0]):
                taken = run
                break
        if taken is not None:
            print(time.strftime("%H:%M:%S"), execute(args.out, *taken), flush=True)
        elif waiting:
            time.sleep(15)
        else:
            return 0  # every run finished or taken by another worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--archive_dir", default="", help="folder of cifar-10-binary.tar.gz")
    parser.add_argument("--tfds_dir", default="", help="TFDS data folder (prepared once)")
    parser.add_argument("--encoder", default="cifar_resnet8")
    parser.add_argument("--e1", type=int, default=4, help="stage-1 epochs (B 256)")
    parser.add_argument("--probe_epochs", type=int, default=30)
    parser.add_argument("--e2", type=int, default=6, help="stage-2 epochs of the paper subset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--baselines", nargs="+", default=list(BASELINES))
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--results", default="", help="also write summary.json here")
    parser.add_argument("--dry_run", action="store_true", help="print the plan only")
    parser.add_argument("--smoke", action="store_true", help="synthetic data, smoke sizes")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)  # i/N: internal
    args = parser.parse_args()
    if not args.smoke and not (args.archive_dir and args.tfds_dir):
        parser.error("--archive_dir and --tfds_dir are required (or --smoke)")
    os.makedirs(args.out, exist_ok=True)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.out, "jax_cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ["PYTHONPATH"] = REPO
    runs, budget = plan(args)
    print(json.dumps(budget, indent=1))
    if args.dry_run:
        for workdir, argv, _ in runs:
            print(workdir, " ".join(argv))
        return 0
    if args.worker:
        return worker(args, runs)
    for root, _, files in os.walk(args.out):  # claims of an earlier, cut study
        for name in files:
            if name.endswith(".claim"):
                os.remove(os.path.join(root, name))
    me = [sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    procs = []
    for i in range(args.jobs):  # they take the baselines while stage 1 runs here
        log = open(os.path.join(args.out, f"worker_{i}.log"), "a")
        procs.append(subprocess.Popen([*me, f"--worker={i}"], stdout=log, stderr=log))
    from absl import logging

    logging.set_verbosity(logging.INFO)
    if not finished(args.out, *runs[0][::2]):
        print(execute(args.out, *runs[0]), flush=True)  # stage 1 + probe, once
    for proc in procs:
        proc.wait()
    done = [os.path.join(args.out, w) for w, _, kind in runs[1:] if finished(args.out, w, kind)]
    report = os.path.join(args.out, "report")
    subprocess.call([sys.executable, "-m", "ltr_jax.report", *done, f"--out={report}"])
    if args.results:
        os.makedirs(args.results, exist_ok=True)
        with open(os.path.join(report, "report.json")) as f:
            table = json.load(f)
        summary = {"machine": "CPU-2", "budget": budget, "report": table}
        with open(os.path.join(args.results, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        for name in ("report.md", "per_class_accuracy.png"):
            if os.path.exists(os.path.join(report, name)):
                shutil.copy(os.path.join(report, name), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
