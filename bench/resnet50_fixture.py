"""Writes the torchvision reference outputs of ``tests/test_resnet_imagenet.py`` (needs torch +
torchvision).

The ImageNet ResNet-50 and ResNeXt-50 (32x4d) encoders get seeded weights
(``parity_lib.seed_weights``: every variable a pure function of the seed and its path, NumPy),
which are copied into torchvision's ``resnet50`` / ``resnext50_32x4d`` (``fc`` removed) under
torchvision's names; the tests rebuild the same weights without torch. Saved under
``tests/fixtures/resnet/``, per model: ``<name>_eval.npy`` and ``<name>_train.npy``, the
2048-d features [2, 2048] of ``parity_lib.imagenet_resnet_inputs()`` (2 x 64 x 64; train mode:
BatchNorm with batch statistics), and nothing else (weights are not stored).

    python bench/resnet50_fixture.py   # a Python with torch, torchvision (the bench extra)
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torchvision

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_BENCH), _BENCH]  # this checkout's ltr_jax, then parity_lib
import parity_lib as pl  # noqa: E402
from flax import nnx  # noqa: E402

FIXTURES = pl.RESNET_FIXTURES
BLOCKS = [3, 4, 6, 3]
_LEAF = pl._LEAF  # our leaf names -> torchvision's (the released code's, too)
_SUB = {"proj_conv": "downsample.0", "proj_bn": "downsample.1"}


def torchvision_name(path: str) -> str:
    """Our path ('layers/3/proj_bn/var') -> torchvision's key ('layer2.0.downsample.1...')."""
    parts = path.split("/")
    leaf = _LEAF[parts[-1]]
    if parts[0] in ("stem_conv", "stem_bn"):
        return f"{'conv1' if parts[0] == 'stem_conv' else 'bn1'}.{leaf}"
    i, starts = int(parts[1]), np.cumsum([0] + BLOCKS)
    layer = int(np.searchsorted(starts, i, side="right")) - 1
    return f"layer{layer + 1}.{i - starts[layer]}.{_SUB.get(parts[2], parts[2])}.{leaf}"


def main() -> int:
    torch.manual_seed(0)
    os.makedirs(FIXTURES, exist_ok=True)
    x = pl.imagenet_resnet_inputs()
    for name in ("resnet50", "resnext50_32x4d"):
        ours = pl.imagenet_resnet(name)
        theirs = getattr(torchvision.models, name)(weights=None)
        theirs.fc = torch.nn.Identity()
        flat = nnx.to_flat_state(nnx.state(ours))
        state = {}
        for p, v in flat:
            value = np.asarray(v.get_value())
            if value.ndim == 4:  # [kh, kw, in, out] -> [out, in, kh, kw]
                value = value.transpose(3, 2, 0, 1)
            state[torchvision_name("/".join(map(str, p)))] = torch.from_numpy(
                np.ascontiguousarray(value, np.float32)
            )
        missing, unexpected = theirs.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise RuntimeError(f"{name}: missing {missing}, unexpected {unexpected}")
        theirs.double()  # float64 reference outputs
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float64))
        for mode in ("eval", "train"):
            theirs.train(mode == "train")
            with torch.no_grad():
                features = theirs(xt).numpy()
            np.save(os.path.join(FIXTURES, f"{name}_{mode}.npy"), features)
            print(
                f"{name} {mode}: features {features.shape}, mean |f| {np.abs(features).mean():.3g}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
