"""Command line: run an ltr_jax experiment.

    python run.py --config=configs/cifar10_lt.py --workdir=workdirs/c10
    python run.py --config=configs/cifar10_lt.py:smoke          # whole pipeline in < 1 min on CPU
    python run.py --config=configs/cifar10_lt.py --config.data.imbalance_factor=50

Rerunning the same command resumes the run in its workdir.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from ltr_jax import pipeline, runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run folder (default: workdirs/<config name>[_<arg>])."
)
_STAGES = flags.DEFINE_list("stages", None, "Run only these stages (default: config.pipeline).")
_MULTIHOST = flags.DEFINE_bool("multihost", False, "Initialise jax.distributed (multi-process).")
flags.mark_flags_as_required(["config"])


def default_workdir(config_arg: str) -> str:
    path, _, arg = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("workdirs", f"{name}_{arg}" if arg else name)


class _QuietLibraries:
    """Drops INFO chatter of Orbax (which logs every save through absl) from the console."""

    def filter(self, record) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


def main(argv):
    del argv
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_QuietLibraries())
    runtime.init_distributed(_MULTIHOST.value)
    from ml_collections import FrozenConfigDict

    config = FrozenConfigDict(_CONFIG.value)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS["config"].config_filename)
    results = pipeline.run(config, workdir, _STAGES.value)
    for name, res in results.items():
        groups = " ".join(
            f"{g}={res[g]:.2f}" for g in ("many", "medium", "few") if res.get(g) is not None
        )
        logging.info("%s: top1=%.2f %s (%s)", name, res["top1"], groups, workdir)


if __name__ == "__main__":
    app.run(main)
