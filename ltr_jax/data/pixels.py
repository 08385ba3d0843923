"""Decoded pixels at 8 bits: what every image source hands on (a leaf module: Pillow, NumPy).

Pillow's ``convert("RGB")`` clips a 16-bit grayscale image (PNG mode ``I;16``) at 255 instead
of scaling it, turning almost every pixel white; :func:`eight_bit` scales it first.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ltr_jax.errors import UserError


class ImageModeError(UserError, ValueError):
    """An image whose pixel range ltr_jax cannot know (32-bit integer or float)."""


def eight_bit(image: Image.Image) -> Image.Image:
    """``image`` with 8-bit channels: 16-bit grayscale (``I;16``, ``I;16B``...) scaled by
    255 / 65535 to mode ``L``; every other 8-bit mode unchanged (``convert`` then applies).

    Raises:
      ImageModeError: a 32-bit integer or float image (mode ``I`` or ``F``).
    """
    if image.mode.startswith("I;16"):
        values = np.asarray(image, np.float64)  # [H, W] in 0..65535
        return Image.fromarray(np.rint(values / 257.0).astype(np.uint8), "L")
    if image.mode in ("I", "F"):
        raise ImageModeError(
            f"a 32-bit image (Pillow mode {image.mode}): save it with 8 or 16 bits per channel."
        )
    return image
