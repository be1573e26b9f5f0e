"""crossgrad's benchmark: every transform and implementation, torch against jax (``make bench``)."""
