"""The augmentation registry: ``<section>.augment`` -> its halves for every input kind.

A named augmentation runs wholly on device for data in device memory, is split between the
host (the crop) and the device (the rest) for streamed JPEGs, and runs on device from the
squares of a decoded store. `Augmentation` holds the three, so one entry here makes a name
valid in the config (``ce.augment``, ``stage2.augment``) and usable by every input of
`ltr_jax.data.input`::

    AUGMENTS["my_aug"] = Augmentation(
        device=lambda strength: my_aug,  # my_aug(key, x) -> x: the whole recipe in memory
        host_crop="train",  # streamed JPEGs: the host's random resized crop + flip,
        after_host_crop=lambda strength: my_colour,  # then the rest on device
        from_store=lambda strength, size, eval_side: my_store_aug,  # crop included
    )

Every ``fn(key, float32 images [B, H, W, 3] in [0, 1]) -> images`` is jittable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from ltr_jax.data.input import augment
from ltr_jax.registry import Registry

AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]
HOST_CROPS = ("train", "eval")  # random resized crop + flip per view | resize + centre crop


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One augmentation, for every input kind.

    Attributes:
      device: ``device(strength) -> fn``: the whole augmentation on device (images in memory).
      host_crop: the crop of the streamed JPEG pipeline's host half (`HOST_CROPS`): ``train``
        (a random resized crop + flip per view) or ``eval`` (resize + centre crop).
      after_host_crop: ``after_host_crop(strength) -> fn``: the device half that follows it.
      from_store: ``from_store(strength, image_size, eval_side) -> fn``: the whole augmentation
        on device from decoded-store squares ``[B, S, S, 3]`` to ``[B, image_size,
        image_size, 3]``; ``eval_side`` is the side of the centre crop evaluation takes.
    """

    device: Callable[[float], AugmentFn]
    host_crop: str
    after_host_crop: Callable[[float], AugmentFn]
    from_store: Callable[[float, int, float], AugmentFn]


def _unchanged(strength: float) -> AugmentFn:
    del strength
    return lambda key, x: x


def _centre(strength: float, size: int, eval_side: float) -> AugmentFn:
    del strength
    return lambda key, x: augment.centre_crop_resize(x, eval_side, size)


AUGMENTS: Registry[Augmentation] = Registry(
    "augment",
    {
        "crop_flip": Augmentation(
            device=lambda strength: lambda key, x: augment.crop_flip(key, x),
            host_crop="train",
            after_host_crop=_unchanged,
            from_store=lambda strength, size, eval_side: (
                lambda key, x: augment.random_resized_crop_flip(key, x, size)
            ),
        ),
        "simclr": Augmentation(
            device=lambda strength: lambda key, x: augment.simclr(key, x, strength=strength),
            host_crop="train",
            after_host_crop=lambda strength: (
                lambda key, x: augment.simclr_colour(key, x, strength=strength)
            ),
            from_store=lambda strength, size, eval_side: (
                lambda key, x: augment.simclr(key, x, strength=strength, size=size)
            ),
        ),
        "none": Augmentation(
            device=_unchanged, host_crop="eval", after_host_crop=_unchanged, from_store=_centre
        ),
    },
)
