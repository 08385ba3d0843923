"""The stage-1 loss registry: ``config.stage1.loss`` -> (loss, report label), in one place.

Every entry is a `Stage1Loss`: ``loss(z1, z2, labels, key, section)`` is the scalar float32
loss of the two views' projections (``[B, D]`` each) of a batch, read from the stage's config
section (its own nested keys, e.g. ``stage1.bns.tau``); ``label(section)`` is the method's
name in reports, read from the same section as saved in the workdir's ``config.json``.

Adding a loss is one entry here (or ``STAGE1_LOSSES["name"] = Stage1Loss(...)`` before
``pipeline.run``, e.g. at the top of a config file): config validation, stage 1 and the report
then all know it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from ltr_jax.losses import bns, supcon
from ltr_jax.registry import Registry

LossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class Stage1Loss:
    """One stage-1 loss.

    Attributes:
      loss: ``loss(z1 [B, D], z2 [B, D], labels int [B], key, section) -> scalar float32``.
      label: ``label(section) -> str``, the method's name in reports (``section`` is the
        stage's config section, a ConfigDict or the plain dict of ``config.json``).
    """

    loss: LossFn
    label: Callable[[Mapping], str]


def _bns(z1, z2, labels, key, section) -> jax.Array:
    cfg = section["bns"]
    return bns.bns_loss(z1, z2, labels, key, tau=cfg["tau"], m=cfg["m"], form=cfg["form"])


def _supcon(z1, z2, labels, key, section) -> jax.Array:
    del key  # deterministic
    return supcon.supcon_loss(z1, z2, labels, tau=section["supcon"]["tau"])


STAGE1_LOSSES: Registry[Stage1Loss] = Registry(
    "stage1.loss",
    {
        "bns": Stage1Loss(loss=_bns, label=lambda section: f"BNS({section['bns']['form']})"),
        "supcon": Stage1Loss(loss=_supcon, label=lambda section: "SupCon"),
    },
)


def report_label(section: Mapping) -> str:
    """The report label of a stage-1 run from its config section (``loss`` defaults to bns;
    a loss not registered in this process is labelled by its name)."""
    return STAGE1_LOSSES.label(section.get("loss", "bns"), section)
