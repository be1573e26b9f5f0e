"""A backend's public namespace: every transform bound to that backend."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from crossgrad import pytree, spec
from crossgrad.backends.base import Backend
from crossgrad.spec import TRANSFORMS
from crossgrad.transforms import auxiliary
from crossgrad.transforms.batched import Batched
from crossgrad.transforms.checking import Checking
from crossgrad.transforms.common import check_unchanged
from crossgrad.transforms.compiled import Compiled
from crossgrad.transforms.curvature import Curvature
from crossgrad.transforms.derivatives import Derivatives
from crossgrad.transforms.hessians import Hessians
from crossgrad.transforms.jacobians import Jacobians
from crossgrad.transforms.operators import Operators
from crossgrad.transforms.vectorize import Vectorize


def _arrays_at(name: str, method: Callable[..., Any]) -> slice:
    """The positional arguments (after ``self``) holding the arrays of a transform that
    evaluates at once, from the parameters ``spec.EVALUATE_AT_ONCE`` names."""
    params = list(inspect.signature(method).parameters.values())[1:]
    holders = spec.EVALUATE_AT_ONCE[name]
    at = [i for i, p in enumerate(params) if p.name in holders]
    if any(params[i].kind is inspect.Parameter.VAR_POSITIONAL for i in at):
        return slice(min(at), None)
    return slice(min(at), max(at) + 1)


def _watch_inputs(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a public transform so that dicts are walked in its framework's key order,
    so that a function writing into its inputs in place writes into copies and is
    reported (:class:`crossgrad.errors.InputMutationError`), the caller's arrays
    unchanged (``arrays.shield``: nothing to copy for immutable arrays: jax),
    and so that its calls run in ``arrays.exclusive()`` (one thread at a time on torch,
    whose forward-mode state is process-global), and so that aux values that are not
    arrays pass through (NOTE [static aux])."""

    signature = inspect.signature(method)
    takes_aux = "has_aux" in signature.parameters
    where = _arrays_at(name, method) if name in spec.EVALUATE_AT_ONCE else None

    @functools.wraps(method)
    def transform(self: Namespace, *args: Any, **kwargs: Any) -> Any:
        arrays = self.backend.arrays
        order = self.backend.name  # dicts walked in the framework's order (NOTE [pytree conventions])
        held: dict[Any, Any] = {}
        if takes_aux and args and callable(args[0]):
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError:
                bound = None
            if bound is not None and bound.arguments.get("has_aux") is True:
                args = (auxiliary.strip(self.backend, args[0], held), *args[1:])
        if where is not None:
            with arrays.exclusive(), pytree.dict_order(order):
                stop = len(args) if where.stop is None else min(where.stop, len(args))
                inputs, kwargs, watched = arrays.shield(tuple(args[where.start:stop]), kwargs)
                args = (*args[:where.start], *inputs, *args[stop:])
                result = method(self, *args, **kwargs)
                check_unchanged(name, watched)
                return auxiliary.restore(name, result, held)
        with pytree.dict_order(order):
            fn = method(self, *args, **kwargs)

        @functools.wraps(fn)
        def watched_fn(*call_args: Any, **call_kwargs: Any) -> Any:
            with arrays.exclusive(), pytree.dict_order(order):
                call_args, call_kwargs, watched = arrays.shield(call_args, call_kwargs)
                out = fn(*call_args, **call_kwargs)
                if watched:
                    check_unchanged(name, watched)
                return auxiliary.restore(name, out, held)

        return watched_fn

    return transform


class Namespace(Derivatives, Vectorize, Jacobians, Hessians, Batched, Curvature, Operators, Compiled, Checking):
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


for _name in TRANSFORMS:
    setattr(Namespace, _name, _watch_inputs(_name, getattr(Namespace, _name)))
