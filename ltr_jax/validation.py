"""Validates a whole run before anything trains: tables of per-key checks.

A check table maps a config key to the check of its value: a function returning the valid
choices of a string switch (a registry: its keys), or a ``(predicate, requirement)`` pair for
a number. `CHECKS` covers ``data``, ``model`` and ``train``; each stage module declares the
table of its own section and a ``validate(config)`` that adds its invariants, and
`ltr_jax.pipeline.validate` runs them all for the requested stages. A key is checked only
when the config has it (so a key added by another feature is checked once it exists). Every
error is one line naming the key, the bad value and the valid ones.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence

import numpy as np

from ltr_jax import config_lib, train_lib
from ltr_jax.data.datasets import registry as datasets_registry
from ltr_jax.data.input import decoded
from ltr_jax.errors import UserError
from ltr_jax.models import registry


class ConfigError(UserError, ValueError):
    """A user error in the config, the stages or the workdir: one line saying what to fix."""


def _optim_names():
    return tuple(train_lib.OPTIMIZERS)


def _encoders():
    return tuple(sorted(registry.ENCODERS))


def _dtypes():
    return tuple(registry.DTYPES)


def _formats():
    return decoded.FORMATS


def choices(*values):
    """The check of a switch whose valid values are ``values``."""
    return lambda: values


def _positive(x) -> bool:
    return x > 0 and math.isfinite(x)


def at_least(low):
    """A finite number >= ``low`` (pair it with its requirement, e.g. ``NON_NEG``)."""
    return lambda x: x >= low and math.isfinite(x)


POSITIVE = (_positive, "a finite number > 0")
POS_INT = (lambda x: x >= 1, "an integer >= 1")
NON_NEG = (at_least(0), "a finite number >= 0")

# Keys of every stage section's optimiser (``<section>.optim.<key>``).
_OPTIM: dict[str, object] = {
    "name": _optim_names,
    "lr": NON_NEG,
    "lr_base_batch": POS_INT,
    "weight_decay": NON_NEG,
    "warmup_epochs": NON_NEG,
    "layer_decay": ((lambda x: 0 < x <= 1), "in (0, 1]"),
    "clip_grad_norm": NON_NEG,
}

# Keys of every stage section (``<section>.<key>``) that share a meaning.
_STAGE_COMMON: dict[str, object] = {"epochs": POS_INT, "batch_size": POS_INT}

# Dotted key -> check. Extend here when adding a switch or a number with a valid range.
CHECKS: dict[str, object] = {
    "data.format": _formats,
    "data.imbalance_factor": (at_least(1), "a finite number >= 1 (1: balanced)"),
    "data.many_threshold": NON_NEG,
    "data.few_threshold": NON_NEG,
    "data.max_per_class": NON_NEG,
    "data.image_size": POS_INT,
    "data.num_workers": NON_NEG,
    "data.prefetch_steps": POS_INT,
    "data.worker_processes": NON_NEG,
    "data.stream_above": NON_NEG,
    "data.decoded_size": POS_INT,
    "data.prepare_processes": NON_NEG,
    "data.test_fraction": ((lambda x: 0 < x < 1), "in (0, 1)"),
    "data.synthetic.num_classes": ((lambda x: x >= 2), "an integer >= 2"),
    "data.synthetic.train_per_class": POS_INT,
    "data.synthetic.test_per_class": POS_INT,
    "model.proj_hidden": POS_INT,
    "model.proj_dim": POS_INT,
    "model.init_head": choices(True, False),
    "model.encoder": _encoders,
    "model.dtype": _dtypes,
    "model.init": choices("flax", "torch"),
    "model.bn_running_var": choices("biased", "unbiased"),
    "model.init_format": choices("auto", "timm", "big_vision", "ltr_jax"),
    "train.log_every_steps": POS_INT,
    "train.eval_every_epochs": NON_NEG,
    "train.checkpoint_every_steps": NON_NEG,
    "train.checkpoint_every_minutes": NON_NEG,
    "train.max_checkpoints": POS_INT,
    "train.eval_batch_size": POS_INT,
    "train.stop_on_nonfinite": choices(True, False),
}


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def check_value(key: str, value, check) -> None:
    """Raises `ConfigError` naming ``key``, ``value`` and what is valid, if ``check`` fails."""
    if isinstance(check, tuple):
        predicate, requirement = check
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and predicate(value)
        if not ok:
            raise ConfigError(f"config.{key}={value!r} is invalid: it must be {requirement}.")
        return
    valid = tuple(check())
    if value not in valid:
        raise ConfigError(f"Unknown config.{key} {value!r}; valid: {', '.join(map(str, valid))}.")


def check_section(config, section: str, checks: dict[str, object] | None = None) -> None:
    """Checks the keys of one config section that the config has.

    Args:
      config: the run's config.
      section: ``data``, ``model``, ``train`` (checked by `CHECKS`) or a stage's section.
      checks: a stage's own table (keys relative to its section, e.g. ``"bns.form"``); its
        ``epochs``, ``batch_size`` and ``optim.*`` are checked too.

    Raises:
      ConfigError: the first invalid value, in one line.
    """
    if checks is None:
        table = {k: c for k, c in CHECKS.items() if k.split(".")[0] == section}
    else:
        table = {f"{section}.{k}": c for k, c in _STAGE_COMMON.items()}
        table.update({f"{section}.optim.{k}": c for k, c in _OPTIM.items()})
        table.update({f"{section}.{k}": c for k, c in checks.items()})
    for key, check in table.items():
        value = _get(config, key)
        if value is not _MISSING:
            check_value(key, value, check)


def validate(config, stages: Sequence[str], num_devices: int) -> None:
    """Checks the data, model and train sections and the batch sizes of the requested stages
    (each stage checks its own section: ``validate`` of its module, see `ltr_jax.pipeline`).

    Args:
      config: the run's (frozen) config.
      stages: the requested stage names (already checked against the stage registry).
      num_devices: devices of the mesh; every batch size must be a multiple.

    Raises:
      ConfigError: the first invalid value, in one line.
    """
    try:
        entry = datasets_registry.DATASETS[config.data.name]
    except ValueError as e:
        raise ConfigError(f"config.data.name: {e}") from None
    unknown = config_lib.unknown_key(config)
    if unknown is not None:
        key, valid = unknown
        parent, _, leaf = f"config.{key}".rpartition(".")
        close = difflib.get_close_matches(leaf, valid, n=1)
        hint = f"did you mean {parent}.{close[0]}? " if close else ""
        raise ConfigError(
            f"Unknown config key config.{key} (set in the config file, where it would be "
            f"ignored): {hint}Valid keys of {parent}: {', '.join(valid)}."
        )
    for section in ("data", "model", "train"):
        check_section(config, section)
    check_warmup(config, stages)
    if "checkpoint_every_minutes" not in config.train:  # steps are then the only cadence
        check_value("train.checkpoint_every_steps", config.train.checkpoint_every_steps, POS_INT)
    data = config.data
    if data.few_threshold > data.many_threshold:
        raise ConfigError(
            f"config.data.few_threshold={data.few_threshold} exceeds config.data.many_threshold="
            f"{data.many_threshold}: Few must lie below Many."
        )
    for s in ("probe", "stage2"):  # a kept partial batch is weighted on device only
        if s in stages and not config[s].drop_last and entry.kind == "streamed":
            raise ConfigError(
                f"config.{s}.drop_last=False needs in-memory data; {data.name} is streamed: "
                f"set --config.{s}.drop_last=True."
            )
    batches = {f"{s}.batch_size": config[s].batch_size for s in stages if "batch_size" in config[s]}
    batches["train.eval_batch_size"] = config.train.eval_batch_size
    for key, size in batches.items():
        if size % num_devices:
            fit = max(num_devices, size - size % num_devices)
            raise ConfigError(
                f"config.{key}={size} is not a multiple of the {num_devices} devices: "
                f"use e.g. --config.{key}={fit}."
            )


def check_earlier_stages(
    stages: Sequence[str], needs: dict[str, tuple[str, ...]], workdir: str
) -> None:
    """Refuses stages whose earlier stages have neither finished nor been requested before
    them, naming every missing stage at once (the needs of a missing stage count too).

    Args:
      stages: the requested stages, in order.
      needs: every stage's needs (the stages whose exported modules it loads), in the
        pipeline's order (the order the fix lists the missing stages in).
      workdir: the run's folder.
    """
    done = lambda s: os.path.exists(os.path.join(workdir, s, "results.json"))
    missing: set[str] = set()
    for i, stage in enumerate(stages):
        pending = list(needs.get(stage, ()))
        while pending:
            need = pending.pop()
            if need in missing or done(need) or need in stages[:i]:
                continue
            missing.add(need)
            pending += needs.get(need, ())
    if missing:
        ordered = [s for s in needs if s in missing] + sorted(missing - set(needs))
        run = ",".join(ordered + [s for s in stages if s not in missing])
        raise ConfigError(
            f"--stages={','.join(stages)} needs stage(s) {', '.join(ordered)}, not finished in "
            f"{workdir}: run --stages={run} (or the whole pipeline)."
        )


def check_warmup(config, stages: Sequence[str]) -> None:
    """Refuses a warm-up longer than its stage (the learning rate would never peak)."""
    for stage in stages:
        section = config[stage]
        if "optim" not in section or "epochs" not in section:
            continue
        warmup, epochs = section.optim.warmup_epochs, section.epochs
        if warmup > epochs:
            raise ConfigError(
                f"config.{stage}.optim.warmup_epochs={warmup} exceeds config.{stage}.epochs="
                f"{epochs}: the learning rate would never reach its peak; set "
                f"--config.{stage}.optim.warmup_epochs to at most {epochs} (e.g. "
                f"{_shorter(epochs)}), or more epochs."
            )


def _shorter(epochs: int) -> str:
    return f"{epochs * 0.1:g}" if epochs > 1 else f"{epochs * 0.5:g}"


def train_examples(config, stage: str, class_counts: np.ndarray) -> int:
    """Examples one epoch of ``stage`` draws from (the probe's and stage 2's subsets)."""
    counts = np.asarray(class_counts)
    if stage == "probe":
        return int(np.minimum(counts, config.probe.per_class).sum())
    if stage == "stage2":
        k = int(config.stage2.k_per_class) or int(10 * counts.min())
        return int(np.minimum(counts, k).sum())
    return int(counts.sum())


def validate_data(config, stages: Sequence[str], class_counts, class_names) -> dict:
    """Checks the loaded data against the run: every class has images, batches fit the data.

    Returns:
      Warnings (one line each) about accepted but ineffective settings, by stage.

    Raises:
      ConfigError: a class without training images, or a batch larger than the stage's data.
    """
    counts = np.asarray(class_counts)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        names = ", ".join(str(class_names[c]) for c in empty[:5])
        raise ConfigError(  # a long tail that empties a class is refused as it is drawn
            f"{len(empty)} class(es) have no training images ({names}) in the data itself "
            "(not because of the long tail): add images of those classes, or remove the "
            "classes from the dataset."
        )
    for stage in stages:
        if "batch_size" not in config[stage]:
            continue
        n, size = train_examples(config, stage, counts), config[stage].batch_size
        if size > n:
            raise ConfigError(
                f"config.{stage}.batch_size={size} exceeds the {n} training examples of stage "
                f"{stage}: use --config.{stage}.batch_size={n} or less."
            )
    warnings = {}
    if "stage2" in stages and config.stage2.k_per_class >= counts.max():
        warnings["stage2"] = [
            f"config.stage2.k_per_class={config.stage2.k_per_class} >= every class size (largest "
            f"{int(counts.max())}): every draw keeps every image, so IP-DPP does not re-balance."
        ]
    return warnings
