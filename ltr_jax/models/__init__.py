"""ltr_jax/models."""
