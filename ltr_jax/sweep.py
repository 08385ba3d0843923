"""Seeds: run one config's pipeline for seeds 0..n-1, each into WORKDIR_ROOT/seed_<i>.

    python -m ltr_jax.sweep --config=configs/cifar10_lt.py:smoke --seeds=3 --workdir_root=wd/bns
    python -m ltr_jax.sweep --config=configs/baselines/ce_cifar10_lt.py --seeds=5 \\
        --workdir_root=workdirs/ce_c10 --config.ce.epochs=50 --stages=ce
    python -m ltr_jax.report wd/bns/seed_* --out=reports/bns

The only difference between the runs is ``config.seed`` (a ``--config.seed`` override is
replaced). Each seed is an ordinary run: rerunning the command resumes unfinished seeds and
skips finished ones. ``ltr_jax.report`` groups the ``seed_<i>`` folders under the root's name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from absl import flags
from ml_collections import FrozenConfigDict, config_flags

from ltr_jax import pipeline

USAGE_ERROR = pipeline.USAGE_ERROR  # exit code of a user error, as run.py's


def _fail(message: object) -> NoReturn:
    """Exits with one ``sweep:`` line on stderr and exit code 2 (a user error)."""
    pipeline.fail("sweep", message)


def seed_workdir(workdir_root: str, seed: int) -> str:
    """The workdir of one seed: WORKDIR_ROOT/seed_<seed>."""
    return os.path.join(workdir_root, f"seed_{seed}")


def run_sweep(
    config, seeds: int, workdir_root: str, stages: Sequence[str] | None = None
) -> dict[int, dict[str, dict]]:
    """Runs ``pipeline.run`` for seeds ``0..seeds-1``.

    Args:
      config: a ConfigDict or FrozenConfigDict (not modified).
      seeds: the number of seeds.
      workdir_root: parent folder of the per-seed workdirs.
      stages: stage names to run (default: ``config.pipeline``).

    Returns:
      The results of every seed, by seed then stage name.
    """
    base = FrozenConfigDict(config).as_configdict()
    results = {}
    for seed in range(seeds):
        base.seed = seed
        workdir = seed_workdir(workdir_root, seed)
        logging.info("sweep: seed %d of %d -> %s", seed + 1, seeds, workdir)
        results[seed] = pipeline.run(FrozenConfigDict(base), workdir, stages)
    return results


def _parse(argv: Sequence[str]) -> flags.FlagValues:
    """Parses the command line into its own FlagValues (no global flags are defined)."""
    fv, argv = flags.FlagValues(), list(argv)
    config_flags.DEFINE_config_file(
        "config", None, "Experiment config file.", flag_values=fv, lock_config=True, sys_argv=argv
    )
    flags.DEFINE_integer("seeds", 3, "Runs seeds 0..seeds-1.", lower_bound=1, flag_values=fv)
    flags.DEFINE_string("workdir_root", None, "Folder of the seed_<i> workdirs.", flag_values=fv)
    flags.DEFINE_list(
        "stages", None, "Only these stages (default: config.pipeline).", flag_values=fv
    )
    try:
        fv(argv)
    except (flags.Error, AttributeError, KeyError) as e:  # a misspelt --config.* override
        _fail(e)
    if fv.config is None or fv.workdir_root is None:
        _fail("--config and --workdir_root are required.")
    return fv


def _summary_line(seed: int, stage_results: dict[str, dict]) -> str:
    cells = [f"seed {seed}:"]
    cells += [
        f"{name} top1={res['top1']:.2f}"
        for name, res in stage_results.items()
        if res.get("top1") is not None
    ]
    return " ".join(cells)


def main(argv: Sequence[str] | None = None) -> dict[int, dict[str, dict]]:
    """The command line: ``argv`` as ``sys.argv`` (program name first)."""
    fv = _parse(sys.argv if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    run = lambda: run_sweep(fv.config, fv.seeds, fv.workdir_root, fv.stages)
    results = pipeline.run_or_exit("sweep", run)  # run.py's failure handling
    for seed, stage_results in results.items():
        print(_summary_line(seed, stage_results))
    print(f"Report: python -m ltr_jax.report {seed_workdir(fv.workdir_root, '*')}")
    return results


if __name__ == "__main__":
    main()
