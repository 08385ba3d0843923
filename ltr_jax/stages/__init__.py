"""ltr_jax/stages."""
