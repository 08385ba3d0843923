"""The explicit name -> factory registry of encoders, and model builders used by the stages."""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx

from ltr_jax.models import batchnorm, heads, init, resnet, resnet_imagenet, swin, vit
from ltr_jax.registry import Registry

ENCODERS: Registry[Callable[..., nnx.Module]] = Registry(
    "model.encoder",
    {
        "cifar_resnet8": resnet.cifar_resnet8,
        "cifar_resnet18": resnet.cifar_resnet18,
        "cifar_resnet32": resnet.cifar_resnet32,
        "cifar_resnet34": resnet.cifar_resnet34,
        "resnet50": resnet_imagenet.resnet50,  # ImageNet stem, for ImageNet-LT / iNaturalist
        "resnext50_32x4d": resnet_imagenet.resnext50_32x4d,
        **vit.ENCODERS,  # ViT and DeiT
        **swin.ENCODERS,
    },
    sort_names=True,
)

STOCHASTIC_DEPTH = frozenset(vit.ENCODERS) | frozenset(swin.ENCODERS)

DTYPES = Registry("model.dtype", {"float32": jnp.float32, "bfloat16": jnp.bfloat16})


def compute_dtype(name: str):
    """Maps ``config.model.dtype`` to a JAX dtype, failing with the valid names."""
    return DTYPES[name]


def make_encoder(
    name: str, *, dtype: str = "float32", rngs: nnx.Rngs, drop_path_rate: float | None = None
) -> nnx.Module:
    """Builds a registered encoder; an unknown name fails with the list of valid names.

    ``drop_path_rate`` (None: the encoder's default) applies to the transformer encoders.
    """
    factory = ENCODERS[name]
    if drop_path_rate is None:
        return factory(dtype=compute_dtype(dtype), rngs=rngs)
    if name not in STOCHASTIC_DEPTH:
        raise ValueError(
            f"model.drop_path_rate is for transformer encoders; {name!r} has none: "
            "leave it unset (None)."
        )
    return factory(dtype=compute_dtype(dtype), rngs=rngs, drop_path_rate=drop_path_rate)


HEADS: Registry[Callable[..., nnx.Module]] = Registry(
    "head", {"linear": heads.LinearHead, "cosine": heads.CosineHead}
)


def make_classifier(
    model_config, num_classes: int, *, rngs: nnx.Rngs, head: str = "linear"
) -> heads.Classifier:
    """Encoder + classifier head (``linear`` or ``cosine``) from ``config.model``."""
    head_cls = HEADS[head]
    encoder = make_encoder(
        model_config.encoder,
        dtype=model_config.dtype,
        rngs=rngs,
        drop_path_rate=model_config.get("drop_path_rate"),
    )
    model = heads.Classifier(encoder, head_cls(encoder.feature_dim, num_classes, rngs=rngs))
    batchnorm.apply_running_var(model, model_config.get("bn_running_var", "biased"))
    return init.apply_init(model, model_config.get("init", "flax"), rngs.params())


def make_contrastive(model_config, *, rngs: nnx.Rngs) -> heads.ContrastiveNet:
    """Encoder + projection head from ``config.model`` (``proj_hidden``, ``proj_dim``)."""
    dtype = compute_dtype(model_config.dtype)
    encoder = make_encoder(
        model_config.encoder,
        dtype=model_config.dtype,
        rngs=rngs,
        drop_path_rate=model_config.get("drop_path_rate"),
    )
    projection = heads.ProjectionHead(
        encoder.feature_dim, model_config.proj_hidden, model_config.proj_dim, dtype=dtype, rngs=rngs
    )
    model = heads.ContrastiveNet(encoder, projection)
    batchnorm.apply_running_var(model, model_config.get("bn_running_var", "biased"))
    return init.apply_init(model, model_config.get("init", "flax"), rngs.params())
