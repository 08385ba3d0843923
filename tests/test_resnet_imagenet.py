"""ImageNet ResNet-50 / ResNeXt-50 (32x4d): parameter counts, shapes at 224, one tiny forward.

Counts and shapes are abstract (``nnx.eval_shape`` / ``jax.eval_shape``): no 224-pixel forward
pass runs on the CPU. Reference counts are torchvision's (``resnet50``: 25,557,032 with the
1000-class fc; ``resnext50_32x4d``: 25,028,904); reference outputs are torchvision's models
with the same seeded weights (``bench/resnet50_fixture.py``).
"""

import os
import sys

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import pytest
from flax import nnx

from ltr_jax.models import heads, modes, registry

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
)
import parity_lib as pl

FC_1000 = 2048 * 1000 + 1000


def _num_params(module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _abstract_encoder(name: str, dtype: str = "float32"):
    return nnx.eval_shape(lambda: registry.make_encoder(name, dtype=dtype, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize(
    "name, with_fc", [("resnet50", 25_557_032), ("resnext50_32x4d", 25_028_904)]
)
def test_parameter_counts_match_torchvision(name, with_fc):
    encoder = _abstract_encoder(name)
    assert encoder.feature_dim == 2048
    assert _num_params(encoder) == with_fc - FC_1000  # ResNet-50 without fc: 23,508,032
    config = mlc.ConfigDict(dict(encoder=name, dtype="float32"))
    model = nnx.eval_shape(lambda: registry.make_classifier(config, 1000, rngs=nnx.Rngs(0)))
    assert _num_params(model) == with_fc


def test_resnext_uses_grouped_convolutions():
    encoder = _abstract_encoder("resnext50_32x4d")
    first, last = encoder.layers[0], encoder.layers[-1]
    assert first.conv2.kernel.shape == (3, 3, 4, 128)  # 32 groups of 4 channels, width 128
    assert last.conv2.kernel.shape == (3, 3, 32, 1024)
    assert last.conv3.kernel.shape == (1, 1, 1024, 2048)
    resnet = _abstract_encoder("resnet50")
    assert resnet.layers[0].conv2.kernel.shape == (3, 3, 64, 64)


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_feature_shapes_at_224(name, dtype):
    encoder = _abstract_encoder(name, dtype)
    images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    stem = jax.eval_shape(lambda m, x: m.stem_conv(x), encoder, images)
    assert stem.shape == (2, 112, 112, 64)
    features = jax.eval_shape(lambda m, x: m(x), encoder, images)
    assert features.shape == (2, 2048) and features.dtype == jnp.float32
    assert encoder.stem_bn.mean.dtype == jnp.float32  # statistics stay float32 under bfloat16
    logits = jax.eval_shape(
        lambda h, f: h(f), heads.LinearHead(2048, 1000, rngs=nnx.Rngs(0)), features
    )
    assert logits.shape == (2, 1000)


@pytest.mark.parametrize("name", ["resnet50", "resnext50_32x4d"])
def test_tiny_forward_matches_torchvision(name):
    """Seeded weights (``parity_lib.seed_weights``) in ours and in torchvision's model give the
    features torchvision gave (``bench/resnet50_fixture.py``, float64), in eval mode (running
    statistics) and in train mode (batch statistics), on a 2 x 64 x 64 batch."""
    encoder = pl.imagenet_resnet(name)
    x = pl.imagenet_resnet_inputs()
    for mode in ("eval", "train"):
        model = modes.eval_view(encoder) if mode == "eval" else encoder
        features = np.asarray(model(x), np.float64)  # op by op: no compilation
        want = np.load(os.path.join(pl.RESNET_FIXTURES, f"{name}_{mode}.npy"))
        assert features.shape == want.shape == (2, 2048)
        err = np.abs(features - want).max() / np.abs(want).max()
        # Train mode normalises the last blocks over 8 values a channel: torchvision's own
        # float32 forward is 3.9e-4 from its float64 one there (eval mode: 1e-5 holds).
        assert err <= (1e-5 if mode == "eval" else 2e-3), (mode, err)
