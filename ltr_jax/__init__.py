"""ltr_jax."""
