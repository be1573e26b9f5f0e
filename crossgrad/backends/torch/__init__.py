"""The torch backend (``torch.func``)."""

from crossgrad.backends.base import Backend
from crossgrad.backends.torch import arrays, builtins, distributed, primitives, taylor

BACKEND = Backend("torch", arrays, primitives, builtins, distributed, taylor)
