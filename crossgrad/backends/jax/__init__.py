"""The jax backend (``jax``'s function transformations)."""

from crossgrad.backends.base import Backend
from crossgrad.backends.jax import arrays, builtins, distributed, primitives, sparsity, taylor

BACKEND = Backend("jax", arrays, primitives, builtins, distributed, taylor, sparsity)
