"""ltr_jax/data."""
