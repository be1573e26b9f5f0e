"""What a backend is: a name and six modules with the same names in both backends."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Backend:
    """A framework seen through the operations crossgrad composes from.

    ``arrays``: array operations and dtype rules; ``primitives``: vjp, jvp, vmap and
    chunked mapping on flat tuples of arrays; ``builtins``: the framework's own
    transforms and the options each one lacks (``builtins.LACKS``); ``distributed``:
    the batch spread over devices with the framework's own engine; ``taylor``: one call
    recorded as a list of operations for the forward Taylor propagation
    (NOTE [collapsed taylor], :mod:`crossgrad.transforms.taylor`); ``sparsity``: the
    sparsity pattern of one call (NOTE [dependency propagation],
    :mod:`crossgrad.sparsity.propagation`) and sparse results in the framework's formats.  The names each module
    must provide are written down in :mod:`crossgrad.backends.contract`.
    """

    name: str
    arrays: ModuleType
    primitives: ModuleType
    builtins: ModuleType
    distributed: ModuleType
    taylor: ModuleType
    sparsity: ModuleType

    def __repr__(self) -> str:
        return f"<crossgrad backend {self.name!r}>"
