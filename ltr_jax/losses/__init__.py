"""ltr_jax/losses."""
