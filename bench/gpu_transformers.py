"""GPU checks of the transformer encoders, in one short run (prepared; not yet run on a GPU).

1. cuDNN fused attention (``transformer.attention`` on bfloat16 without a bias) against XLA's
   plain formula, on ViT-B/16 shapes: prints the max relative difference (bf16 rounding only
   is expected, well under 1e-2).
2. ``bench/throughput.py`` rows: ViT-S/4 and Swin-T/2 on 32 px CIFAR at batch 512 (stage 1,
   stage 2), ViT-B/16 and Swin-B on 224 px at batch 256 (stage 2 = fine-tuning), bfloat16;
   written to ``bench/results/gpu_h200/throughput_transformers*.json``.

    python bench/gpu_transformers.py            # about 5-8 minutes on one H200 (estimate)
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from ltr_jax.models import transformer  # noqa: E402


def check_fused_attention() -> float:
    """Max relative difference of cuDNN vs XLA attention in bfloat16 ([64, 197, 12, 64])."""
    q, k, v = jax.random.normal(jax.random.key(0), (3, 64, 197, 12, 64), jnp.bfloat16)
    assert transformer.attention_implementation(q, None) == "cudnn", "not on a GPU with bf16"
    fused = jax.jit(transformer.attention)(q, k, v).astype(jnp.float32)
    plain = jax.nn.dot_product_attention(q, k, v, implementation="xla").astype(jnp.float32)
    return float(jnp.max(jnp.abs(fused - plain)) / jnp.max(jnp.abs(plain)))


def throughput(args: list[str], out: str) -> None:
    cmd = [
        sys.executable,
        os.path.join(HERE, "throughput.py"),
        "--dtypes",
        "bfloat16",
        "--steps",
        "10",
        "--warmup",
        "3",
        "--out",
        out,
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    subprocess.run(cmd, check=True, env=env)


def main() -> None:
    print(f"cuDNN vs XLA attention, bf16, max relative difference: {check_fused_attention():.2e}")
    results = os.path.join(HERE, "results", "gpu_h200")
    throughput(
        ["--backbones", "vit_small_patch4_32,swin_tiny_patch2_window4_32", "--batch_sizes", "512"],
        os.path.join(results, "throughput_transformers.json"),
    )
    throughput(
        [
            "--backbones",
            "vit_base_patch16_224,swin_base_patch4_window7_224",
            "--image_size",
            "224",
            "--num_images",
            "2048",
            "--batch_sizes",
            "256",
            "--stages",
            "stage2",
        ],
        os.path.join(results, "throughput_transformers_224.json"),
    )


if __name__ == "__main__":
    main()
