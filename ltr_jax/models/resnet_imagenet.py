"""ImageNet ResNet-50 and ResNeXt-50 (32x4d) encoders as Flax NNX modules.

The torchvision architectures (He et al., CVPR 2016; Xie et al., CVPR 2017), used by the
ImageNet-LT and iNaturalist 2018 results of the long-tailed literature: the ImageNet stem
(7x7 stride-2 64-channel convolution, BatchNorm, ReLU, 3x3 stride-2 max-pool), Bottleneck
blocks [3, 4, 6, 3] with the stride on the 3x3 convolution ("ResNet v1.5"), projection
shortcuts (1x1 convolution + BatchNorm) where the shape changes, and global average pooling
to 2048-d features. ResNeXt-50 32x4d replaces the 3x3 convolution by 32 groups of 4 channels
per 64 of the stage's base width. Parameters without the classifier: 23.51M (ResNet-50) and
22.98M (ResNeXt-50); with a 1000-class linear head 25.56M and 25.03M, as torchvision's.

Dtype handling is that of :mod:`ltr_jax.models.resnet`: convolutions compute in ``dtype``,
BatchNorm keeps its statistics and affine parameters in float32, features leave in float32
(float64 from a float64 model).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ltr_jax.models import resnet

STAGE_PLANES = (64, 128, 256, 512)
EXPANSION = 4  # a Bottleneck's output has 4x its stage's planes


def _conv(
    cin: int, cout: int, k: int, stride: int, dtype: Any, rngs: nnx.Rngs, groups: int = 1
) -> nnx.Conv:
    """A bias-free k x k convolution with PyTorch's padding k // 2 and He (fan-out) init."""
    return nnx.Conv(
        cin,
        cout,
        (k, k),
        strides=stride,
        padding=k // 2,
        feature_group_count=groups,
        use_bias=False,
        kernel_init=resnet._conv_init,
        dtype=dtype,
        rngs=rngs,
    )


class Bottleneck(nnx.Module):
    """1x1 reduce -> 3x3 (strided, grouped) -> 1x1 expand, with a residual connection."""

    def __init__(
        self, cin: int, width: int, cout: int, stride: int, groups: int, dtype: Any, rngs: nnx.Rngs
    ):
        self.conv1 = _conv(cin, width, 1, 1, dtype, rngs)
        self.bn1 = resnet._bn(width, dtype, rngs)
        self.conv2 = _conv(width, width, 3, stride, dtype, rngs, groups)
        self.bn2 = resnet._bn(width, dtype, rngs)
        self.conv3 = _conv(width, cout, 1, 1, dtype, rngs)
        self.bn3 = resnet._bn(cout, dtype, rngs)
        self.needs_projection = stride != 1 or cin != cout
        if self.needs_projection:
            self.proj_conv = _conv(cin, cout, 1, stride, dtype, rngs)
            self.proj_bn = resnet._bn(cout, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = self.proj_bn(self.proj_conv(x)) if self.needs_projection else x
        return nnx.relu(y + shortcut)


class ImageNetResNet(nnx.Module):
    """A Bottleneck ResNet / ResNeXt encoder with the ImageNet stem; features [B, 2048]."""

    def __init__(
        self,
        blocks: Sequence[int],
        *,
        groups: int = 1,
        width_per_group: int = 64,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Builds the encoder.

        Args:
          blocks: Bottleneck blocks per stage, e.g. (3, 4, 6, 3).
          groups: groups of the 3x3 convolutions (32 for ResNeXt 32x4d).
          width_per_group: channels per group at base width 64 (4 for ResNeXt 32x4d).
          dtype: compute dtype of the convolutions.
          rngs: parameter initialisation keys.
        """
        self.dtype = dtype
        self.stem_conv = _conv(3, 64, 7, 2, dtype, rngs)
        self.stem_bn = resnet._bn(64, dtype, rngs)
        layers, cin = [], 64
        for stage, (n, planes) in enumerate(zip(blocks, STAGE_PLANES)):
            width = planes * width_per_group // 64 * groups
            for b in range(n):
                stride = 2 if (stage > 0 and b == 0) else 1
                layers.append(
                    Bottleneck(cin, width, planes * EXPANSION, stride, groups, dtype, rngs)
                )
                cin = planes * EXPANSION
        self.layers = nnx.List(layers)
        self.feature_dim = cin

    def __call__(self, x: jax.Array) -> jax.Array:
        resnet.check_images(x, "ImageNet ResNet")
        x = x.astype(self.dtype)  # [B, H, W, 3]
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))  # [B, H/2, W/2, 64]
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B, H/4, W/4, 64]
        for layer in self.layers:
            x = layer(x)  # [B, H/32, W/32, 2048] after the last stage
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float64 stays float64
        return jnp.mean(x, axis=(1, 2))  # [B, 2048]


def resnet50(*, dtype=jnp.float32, rngs: nnx.Rngs) -> ImageNetResNet:
    """ResNet-50: Bottlenecks [3, 4, 6, 3], 2048-d features."""
    return ImageNetResNet((3, 4, 6, 3), dtype=dtype, rngs=rngs)


def resnext50_32x4d(*, dtype=jnp.float32, rngs: nnx.Rngs) -> ImageNetResNet:
    """ResNeXt-50 (32x4d): ResNet-50 with 32-group 3x3 convolutions, twice as wide inside."""
    return ImageNetResNet((3, 4, 6, 3), groups=32, width_per_group=4, dtype=dtype, rngs=rngs)
