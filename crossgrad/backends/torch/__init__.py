"""The torch backend (``torch.func``)."""

from crossgrad.backends.base import Backend
from crossgrad.backends.torch import arrays, builtins, distributed, primitives, sparsity, taylor

BACKEND = Backend("torch", arrays, primitives, builtins, distributed, taylor, sparsity)
