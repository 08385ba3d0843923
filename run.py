r"""Command line: run an ltr_jax experiment.

    python run.py --config=configs/cifar10_lt.py --workdir=workdirs/c10
    python run.py --config=configs/cifar10_lt.py:smoke          # whole pipeline in < 1 min on CPU
    python run.py --config=configs/cifar10_lt.py --config.data.imbalance_factor=50
    python run.py --config=configs/imagenet_lt.py --prepare_data    # only prepare the dataset

Rerunning the same command resumes the run in its workdir. SIGTERM / SIGINT, a deadline in
``$LTR_DEADLINE_UNIX`` (seconds since the epoch) or a TPU/Cloud preemption notice stop the run
at the next step boundary with a checkpoint and exit code 75 (``ltr_jax.stopping``).
Multi-process (one process per host; on TPU pods and SLURM the three launch flags are
auto-detected and may be left out):

    python run.py --config=... --workdir=<shared folder> --multihost \
        --coordinator_address=host0:1234 --num_processes=2 --process_id=<0 or 1>

Every config key (--config.<section>.<key>=...), its default and its valid values: README.md,
section "Configuration reference"; what a run refuses before training, and why: section
"Errors before training".
"""

from __future__ import annotations

import os
import shlex
from typing import NoReturn

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from ltr_jax import config_lib, pipeline, runtime
from ltr_jax.data.input import make

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file, e.g. configs/cifar10_lt.py or configs/cifar10_lt.py:smoke; "
    'every key: README "Configuration reference".',
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run folder (default: workdirs/<config name>[_<arg>])."
)
_STAGES = flags.DEFINE_list("stages", None, "Run only these stages (default: config.pipeline).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Initialise jax.distributed (multi-process).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "--multihost: host:port of process 0 (default: auto-detect)."
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "--multihost: number of processes (default: auto-detect)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "--multihost: this process's id, 0..num_processes-1 (default: auto)."
)
_PREPARE_DATA = flags.DEFINE_bool(
    "prepare_data",
    False,
    "Only prepare (or check) the dataset of config.data, then exit: run it "
    "once, in one process, before a multi-host launch.",
)
_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the traceback of a user error (also: environment LTR_DEBUG=1)."
)
flags.mark_flags_as_required(["config"])
USAGE_ERROR = pipeline.USAGE_ERROR  # exit code of every user error
USAGE = (
    "usage: python run.py --config=<config file>[:smoke] [--workdir=<folder>] "
    "[--config.<section>.<key>=<value> ...], e.g. python run.py "
    "--config=configs/cifar10_lt.py:smoke (python run.py --help: every flag)"
)


def default_workdir(config_arg: str) -> str:
    path, _, arg = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("workdirs", f"{name}_{arg}" if arg else name)


class _QuietLibraries:
    """Drops INFO chatter of Orbax (which logs every save through absl) from the console."""

    def filter(self, record) -> bool:
        return record.levelno >= 30 or "orbax" not in record.pathname  # 30: stdlib WARNING


def fail(message: object) -> NoReturn:
    """Exits with one ``run.py:`` line on stderr and exit code 2 (a user error)."""
    pipeline.fail("run.py", message)


def _debug() -> bool:
    return os.environ.get("LTR_DEBUG", "") not in ("", "0") or (
        flags.FLAGS.is_parsed() and _DEBUG.value
    )


def main(argv):
    pipeline.run_or_exit("run.py", lambda: _main(argv), debug=_debug)


def _main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    import logging as std_logging

    std_logging.getLogger("absl").addFilter(_QuietLibraries())  # Orbax logs through absl
    launch = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if not _MULTIHOST.value and any(v is not None for v in launch):
        fail("--coordinator_address/--num_processes/--process_id need --multihost.")
    runtime.init_distributed(
        _MULTIHOST.value,
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value,
    )
    from ml_collections import FrozenConfigDict

    config = FrozenConfigDict(_CONFIG.value)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    if _PREPARE_DATA.value:
        return prepare_data(config)
    results = pipeline.run(config, workdir, _STAGES.value)
    for name, res in results.items():
        groups = " ".join(
            f"{g}={res[g]:.2f}" for g in ("many", "medium", "few") if res.get(g) is not None
        )
        if "top1" in res:
            logging.info("%s: top1=%.2f %s (%s)", name, res["top1"], groups, workdir)
    if hint := report_hint(flags.FLAGS["config"].config_filename, workdir):
        logging.info("Next, the report of this run: %s", hint)


def report_hint(config_arg: str, workdir: str) -> str | None:
    """The report command to try after a ``:smoke`` run; None after any other run."""
    if not config_arg.endswith(":smoke"):
        return None
    return f"python -m ltr_jax.report {shlex.quote(workdir)}  # writes reports/report.md"


def prepare_data(config) -> None:
    """Prepares the configured dataset (if needed) and logs what a run would train on."""
    pipeline.validate(config, config.pipeline, jax.device_count())  # e.g. misspelt keys
    data = make.load_input(config.data, runtime.make_mesh())
    counts = data.class_counts
    logging.info(
        "%s ready: %d classes, %d training images (%d..%d per class), %d test images.",
        config.data.name,
        data.num_classes,
        counts.sum(),
        counts.min(),
        counts.max(),
        len(data.test_labels),
    )


def check_overrides(argv: list[str]) -> str | None:
    """Returns an error for a missing config file, an unknown ``:variant``, or the first
    unknown ``--config.a.b`` override (naming the valid keys)."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    overrides = [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    if config_arg is None:
        return None
    try:
        config = config_lib.load_config_file(config_arg)
    except (FileNotFoundError, ValueError) as e:
        return f"--config={config_arg}: {e}"
    for dotted in overrides:
        node, walked = config, []
        for part in dotted.split("."):
            if not hasattr(node, "keys") or part not in node:
                valid = ", ".join(sorted(node.keys())) if hasattr(node, "keys") else "(none)"
                where = ".".join(["config", *walked])
                return (
                    f"Unknown config key {where}.{part} in --config.{dotted}. "
                    f"Valid keys of {where}: {valid}."
                )
            node, walked = node[part], walked + [part]
    return None


def _parse_flags(argv: list[str]) -> list[str]:
    error = check_overrides(argv)
    if error:
        fail(error)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(USAGE if "--config must have a value" in str(e) else e)  # e.g. no argument at all


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
