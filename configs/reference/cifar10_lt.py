"""The paper's released code on CIFAR-10-LT (IF 100), reproduced in every place it differs.

    python run.py --config=configs/reference/cifar10_lt.py --workdir=workdirs/reference_c10
    python run.py --config=configs/reference/cifar10_lt.py:smoke   # synthetic, ResNet-8, CPU

``configs/cifar10_lt.py`` (the paper-faithful recipe) plus ``config_lib.reference_switches``
(README "Differences from the released code"): PyTorch's default initialisers, one encoder
pass per view in stage 1, a probe that draws a SimCLR view (s = 2) per step through the frozen
encoder with BatchNorm in train mode, an evaluation every epoch (the released logs keep the
maximum), and a stage 2 that starts from a fresh head, draws ONE subset (500 per class,
uniform within each class: the released sampler's kernel is numerically the identity and it
is re-seeded identically at every draw) at epochs 0, 9, 19, ..., and fine-tunes on SimCLR
views (s = 1); the probe and stage 2 keep each epoch's last partial batch, and BatchNorm's
running variance takes the unbiased batch variance (PyTorch). Paper: probe 68.2, BNS + IP-DPP
76.4 top-1. Ours with this config: not yet measured (GPU work, as long as the paper-faithful
recipe).
"""

import os

from ltr_jax import config_lib

_BASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cifar10_lt.py")


def get_config(arg: str | None = None):
    config = config_lib.load_config_file(_BASE, arg="")
    config_lib.reference_switches(config, probe_strength=2.0, k=500, redraw_every=10)
    return config_lib.apply_arg(config, arg)
