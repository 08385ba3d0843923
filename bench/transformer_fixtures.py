"""Writes the timm conversion fixtures of ``tests/test_transformers.py`` (needs torch + timm).

Builds tiny timm models of each transformer family with ``pretrained=False`` (nothing is
downloaded), replaces every parameter by random values (so that a swapped scale and bias, a
missing transpose or a wrong head order cannot pass), and saves, per model, under
``tests/fixtures/transformers/``:

- ``<name>.safetensors``: the timm state dict (float32);
- ``<name>_features.npy`` and ``<name>_logits.npy``: the model's pre-logit features and logits,
  in float64 from a float64 copy of the model, for the images of ``inputs.npy``
  ([4, 32, 32, 3], NHWC float32, shared by every model).

The tests load the ``safetensors`` into ltr_jax's modules (without torch) and match them.

    /work/benchenv/bin/python bench/transformer_fixtures.py   # a venv with torch, timm
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import timm
import torch
from safetensors.torch import save_file

# name -> (timm architecture, overrides); the ltr_jax encoder each is compared with is named
# in tests/test_transformers.py.
MODELS = {
    "vit_cls": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
    ),
    "vit_avg": (
        "vit_tiny_patch16_224",
        dict(
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=2,
            global_pool="avg",
            class_token=True,
        ),
    ),
    "deit": (
        "deit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
    ),
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(
            img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2, 1), num_heads=(2, 4)
        ),
    ),
}
NUM_CLASSES = 10


def randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Every parameter random: weights N(0, 0.2^2), LayerNorm scales 1 + N(0, 0.2^2)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = 0.2 * torch.randn(p.shape, generator=gen)
            is_scale = p.ndim == 1 and name.endswith("weight")
            p.copy_(1.0 + noise if is_scale else noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/fixtures/transformers")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1  # NCHW in [-1, 1]
    np.save(os.path.join(args.out, "inputs.npy"), images.permute(0, 2, 3, 1).numpy())
    for name, (arch, kw) in MODELS.items():
        model = timm.create_model(arch, pretrained=False, num_classes=NUM_CLASSES, **kw).eval()
        randomise(model, gen)
        state = {
            k: v.contiguous()
            for k, v in model.state_dict().items()
            if not k.endswith(("relative_position_index", "attn_mask"))
        }
        save_file(state, os.path.join(args.out, f"{name}.safetensors"))
        model = model.double()
        with torch.no_grad():
            features = model.forward_head(model.forward_features(images.double()), True)
            logits = model.head(features) if name != "swin" else model.head.fc(features)
        np.save(os.path.join(args.out, f"{name}_features.npy"), features.numpy())
        np.save(os.path.join(args.out, f"{name}_logits.npy"), logits.numpy())
        print(
            f"{name}: {sum(v.numel() for v in state.values())} parameters, "
            f"features {tuple(features.shape)}"
        )


if __name__ == "__main__":
    main()
