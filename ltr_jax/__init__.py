"""ltr_jax: long-tailed recognition (BNS + IP-DPP) in JAX / Flax NNX.

``ltr_jax.load_classifier(workdir, stage=None)`` is the classifier of a finished run
(`ltr_jax.inference`); it is imported on first use, so ``import ltr_jax`` stays light (the
report and the error base import no JAX).
"""

__all__ = ["load_classifier"]


def __getattr__(name: str):
    if name == "load_classifier":
        from ltr_jax import inference  # JAX and Flax load only when a model is asked for

        return inference.load_classifier
    raise AttributeError(f"module 'ltr_jax' has no attribute {name!r}")
