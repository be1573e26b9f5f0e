"""A backend's public namespace: every transform bound to that backend."""

from __future__ import annotations

from crossgrad.backends.base import Backend
from crossgrad.transforms.batched import Batched
from crossgrad.transforms.derivatives import Derivatives
from crossgrad.transforms.hessians import Hessians
from crossgrad.transforms.jacobians import Jacobians
from crossgrad.transforms.vectorize import Vectorize


class Namespace(Derivatives, Vectorize, Jacobians, Hessians, Batched):
    """Every crossgrad transform for one backend (``crossgrad.torch``, ``crossgrad.jax``).

    Both namespaces are instances of this one class, so their names and signatures
    are identical by construction.
    """

    def __init__(self, backend: Backend):
        self.backend = backend

    @property
    def name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return f"<crossgrad namespace for {self.backend.name}>"
