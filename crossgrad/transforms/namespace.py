"""A backend's public namespace: every transform function bound to one backend, behind the
input watch.

Each transform is a plain function of :mod:`crossgrad.transforms` that takes the backend
first (``hessians.hessian(backend, f, ...)``) and composes the others by import.  A
namespace (``crossgrad.torch``, ``crossgrad.jax``) only binds them: ``cg.torch.hessian``
is ``hessians.hessian`` with the torch backend bound first, wrapped once by
:func:`watch`.  Compositions call the functions, never the namespace, so the watch
runs once per public call.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from crossgrad import option_checks, pytree, spec
from crossgrad.backends.base import Backend
from crossgrad.transforms import (
    auxiliary,
    batched,
    biharmonics,
    checking,
    compiled,
    curvature,
    derivatives,
    gauss_newton,
    hessian_vector,
    hessians,
    jacobians,
    models,
    operators,
    sparse,
    vectorize,
    weighted,
)
from crossgrad.transforms.call import check_unchanged

P = ParamSpec("P")
R = TypeVar("R")


def _public_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature without its first parameter (the backend)."""
    sig = inspect.signature(fn)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def _arrays_at(name: str, signature: inspect.Signature) -> slice:
    """The positional arguments holding the arrays of a transform that evaluates at once,
    from the parameters ``spec.EVALUATE_AT_ONCE`` names."""
    params = list(signature.parameters.values())
    holders = spec.EVALUATE_AT_ONCE[name]
    at = [i for i, p in enumerate(params) if p.name in holders]
    if any(params[i].kind is inspect.Parameter.VAR_POSITIONAL for i in at):
        return slice(min(at), None)
    return slice(min(at), max(at) + 1)


# NOTE [input writes]
# A function that writes into its input is an error (InputMutationError), and the caller's
# tensors stay as they were: the first call of each transformed function (and of each
# function given to vjp, jvp, hvp...) runs on copies of the caller's tensors, so the write
# lands in the copy.  A call that wrote nothing shows the function leaves its inputs alone;
# later calls watch the caller's tensors themselves (their version counters: a write is
# still reported, naming the caller's array as changed) without copying them, and a result
# that shares memory with an input is copied on its way out.  Copying every call cost
# 15% of a torch HVP of a 1.3M-parameter MLP and 8% of a 32->2048 Jacobian (the eager
# overhead goal is 5%).  jax arrays are immutable: nothing is copied or watched.
_WROTE_NOTHING: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _known_clean(f: Any) -> bool:
    try:
        return f in _WROTE_NOTHING
    except TypeError:  # neither hashable nor weakly referable: copies on every call
        return False


def _wrote_nothing(f: Any) -> None:
    try:
        _WROTE_NOTHING[f] = True
    except TypeError:
        pass


# The lifted forms of functions given to the transforms that evaluate at once, per function.
_LIFTED: weakref.WeakKeyDictionary[Any, models.Lifted] = weakref.WeakKeyDictionary()


def _models_lifted(backend: Backend, name: str, signature: inspect.Signature, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any], Callable[[], None] | None]:
    """For a transform that evaluates at once: the models among its primals (or ``args``)
    replaced by their parameters, ``f`` by its lifted form (NOTE [models as arguments]), and
    what updates the models' statistics once the result is computed (NOTE [statistics once
    per call]); the arguments as they are, and None, where there is no model."""
    holder = spec.EVALUATE_AT_ONCE[name][0]
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return args, kwargs, None  # the transform names the mistake
    value = bound.arguments.get(holder)
    seq = value if isinstance(value, tuple) else (value,)
    at = models.positions(backend, seq)
    if not at:
        return args, kwargs, None
    f = bound.arguments["f"]
    try:
        lifted = _LIFTED.get(f)
        if lifted is None:
            lifted = _LIFTED[f] = models.Lifted(backend, f)
    except TypeError:  # not weakly referable: lifted for this call
        lifted = models.Lifted(backend, f)
    g, new = lifted.of(seq, at)
    bound.arguments["f"] = g
    bound.arguments[holder] = new if isinstance(value, tuple) else new[0]
    return bound.args, bound.kwargs, lambda: lifted.settle(name, seq, {}, at)


def _option(signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any], option: str) -> Any:
    """The value of ``option`` in a call of the transform maker (its default where not given)."""
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return signature.parameters[option].default
    bound.apply_defaults()
    return bound.arguments[option]


def watch(name: str, fn: Callable[..., Any], backend: Backend) -> Callable[..., Any]:
    """``fn`` with ``backend`` bound first, as the public transform ``name``.

    Around every evaluation: dicts walked in the framework's key order (NOTE [pytree
    conventions]); a write into the caller's arrays reported
    (:class:`crossgrad.errors.InputMutationError`) and prevented on the first call (NOTE
    [input writes]: ``arrays.shield``; nothing to copy for immutable arrays, jax); one thread
    at a time on torch, whose forward-mode state is process-global
    (``arrays.exclusive``); aux values that are not arrays passed through (NOTE [static
    aux]); results leave as ordinary arrays (``arrays.materialized``: torch's lazy
    ``ZeroTensor`` replaced by zeros) that share no memory with an input.  A transform of
    ``spec.EVALUATE_AT_ONCE`` is watched as it runs; any other returns a function, watched
    when it is called.
    """
    signature = _public_signature(fn)
    takes_aux = "has_aux" in signature.parameters
    where = _arrays_at(name, signature) if name in spec.EVALUATE_AT_ONCE else None
    order = backend.name  # dicts walked in the framework's order (NOTE [pytree conventions])

    def transform(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            option_checks.check_keywords(name, signature, kwargs)
        held: dict[Any, Any] = {}
        user_f = args[0] if args and callable(args[0]) else None
        if takes_aux and user_f is not None:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                bound = None
            if bound is not None and bound.arguments.get("has_aux") is True:
                args = (auxiliary.strip(backend, args[0], held), *args[1:])
        if where is not None:
            return _at_once(name, fn, backend, signature, where, args, kwargs, held, user_f)
        return _watched_result(name, fn, backend, signature, args, kwargs, held)

    transform.__name__ = transform.__qualname__ = name
    transform.__doc__ = fn.__doc__
    transform.__module__ = fn.__module__
    transform.__signature__ = signature  # type: ignore[attr-defined]
    planner = getattr(fn, "planner", None)
    if planner is not None:  # a transform that evaluates at once: its plan from the same arguments
        def plan(*args: Any, **kwargs: Any) -> Any:
            """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
            if kwargs:
                option_checks.check_keywords(name, signature, kwargs)
            if args and callable(args[0]):  # models among the primals planned as their parameters
                args, kwargs, _ = _models_lifted(backend, name, signature, args, kwargs)
            with pytree.dict_order(order):
                return planner(backend, *args, **kwargs)

        transform.plan = plan  # type: ignore[attr-defined]
    return transform


def _at_once(name: str, fn: Callable[..., Any], backend: Backend, signature: inspect.Signature, where: slice,
             args: tuple[Any, ...], kwargs: dict[str, Any], held: dict[Any, Any], user_f: Any) -> Any:
    """A transform that evaluates at once, run behind the watch (:func:`watch`); ``user_f``
    is the caller's function (before its aux is stripped or its models lifted, both made
    anew per call): what NOTE [input writes] remembers as having written nothing."""
    arrays = backend.arrays
    settle = None
    if user_f is not None:
        args, kwargs, settle = _models_lifted(backend, name, signature, args, kwargs)
    with arrays.exclusive(), pytree.dict_order(backend.name):
        stop = len(args) if where.stop is None else min(where.stop, len(args))
        copies = not _known_clean(user_f)
        inputs, kwargs, watched = arrays.shield(tuple(args[where.start:stop]), kwargs, copies)
        args = (*args[:where.start], *inputs, *args[stop:])
        result = fn(backend, *args, **kwargs)
        check_unchanged(name, arrays, watched, copies)
        if copies and user_f is not None:
            _wrote_nothing(user_f)
        out = arrays.materialized(auxiliary.restore(name, result, held))
        if settle is not None:
            settle()
        return out if copies else arrays.unaliased(out, watched)


def _watched_result(name: str, fn: Callable[..., Any], backend: Backend, signature: inspect.Signature,
                    args: tuple[Any, ...], kwargs: dict[str, Any], held: dict[Any, Any]) -> Callable[..., Any]:
    """The function a transform returns, watched when it is called (:func:`watch`)."""
    arrays, order = backend.arrays, backend.name
    with pytree.dict_order(order):
        made = fn(backend, *args, **kwargs)
    copies = True
    lifted = models.Lifted(backend, args[0]) if args and callable(args[0]) else None
    batched = "in_axes" in signature.parameters
    in_axes = _option(signature, args, kwargs, "in_axes") if batched else None

    def made_for(g: Callable[..., Any]) -> Any:
        with pytree.dict_order(order):
            return fn(backend, g, *args[1:], **kwargs)

    @functools.wraps(made)
    def watched_fn(*call_args: Any, **call_kwargs: Any) -> Any:
        nonlocal copies
        target, given = made, call_args
        at = models.positions(backend, call_args)
        if at and lifted is not None:  # NOTE [models as arguments]
            target, call_args = lifted.of(call_args, at, made_for)
        with arrays.exclusive(), pytree.dict_order(order):
            shielded = copies
            call_args, call_kwargs, watched = arrays.shield(call_args, call_kwargs, shielded)
            out = target(*call_args, **call_kwargs)
            if watched:
                check_unchanged(name, arrays, watched, shielded)
                copies = False
            out = arrays.materialized(auxiliary.restore(name, out, held))
            if at and lifted is not None:  # NOTE [statistics once per call]
                lifted.settle(name, given, call_kwargs, at, in_axes, batched)
            return out if shielded else arrays.unaliased(out, watched)

    return watched_fn


# jit compiles what it is given (crossgrad's transforms, watched themselves) and is not
# watched a second time.
UNWATCHED = ("jit",)


def unwatched(name: str, fn: Callable[..., Any], backend: Backend) -> Callable[..., Any]:
    """``fn`` with ``backend`` bound first, as the public tool ``name`` (:data:`UNWATCHED`)."""

    def tool(*args: Any, **kwargs: Any) -> Any:
        return fn(backend, *args, **kwargs)

    tool.__name__ = tool.__qualname__ = name
    tool.__doc__ = fn.__doc__
    tool.__module__ = fn.__module__
    tool.__signature__ = _public_signature(fn)  # type: ignore[attr-defined]
    return tool


class Bound(Generic[P, R]):
    """A transform function as a namespace attribute: read from a namespace, it is the
    function with that namespace's backend bound first, behind :func:`watch` (all but
    :data:`UNWATCHED`), made once per namespace."""

    def __init__(self, fn: Callable[Concatenate[Backend, P], R]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__
        self.signature = _public_signature(fn)
        self.bind = unwatched if self.name in UNWATCHED else watch

    @overload
    def __get__(self, namespace: None, owner: type) -> Bound[P, R]: ...

    @overload
    def __get__(self, namespace: Namespace, owner: type) -> Callable[P, R]: ...

    def __get__(self, namespace: Namespace | None, owner: type) -> Bound[P, R] | Callable[P, R]:
        if namespace is None:
            return self
        bound: Callable[P, R] = self.bind(self.name, self.fn, namespace.backend)
        namespace.__dict__[self.name] = bound  # later reads find it without this descriptor
        return bound


class Namespace:
    """Every crossgrad transform for one backend (``crossgrad.torch``, ``crossgrad.jax``).

    Both namespaces are instances of this one class, so their names and signatures
    are identical by construction.
    """

    # BEGIN namespace attributes (python -m crossgrad.testing.signatures writes this block)
    grad = Bound(derivatives.grad)
    value_and_grad = Bound(derivatives.value_and_grad)
    vjp = Bound(derivatives.vjp)
    jvp = Bound(derivatives.jvp)
    linearize = Bound(derivatives.linearize)
    vmap = Bound(vectorize.vmap)
    jacrev = Bound(jacobians.jacrev)
    jacfwd = Bound(jacobians.jacfwd)
    jacobian = Bound(jacobians.jacobian)
    hessian = Bound(hessians.hessian)
    hvp = Bound(hessian_vector.hvp)
    batched_jacobian = Bound(batched.batched_jacobian)
    batched_hessian = Bound(batched.batched_hessian)
    laplacian = Bound(curvature.laplacian)
    hessian_trace = Bound(curvature.hessian_trace)
    hessian_diagonal = Bound(curvature.hessian_diagonal)
    batched_laplacian = Bound(curvature.batched_laplacian)
    batched_hessian_trace = Bound(curvature.batched_hessian_trace)
    batched_hessian_diagonal = Bound(curvature.batched_hessian_diagonal)
    weighted_laplacian = Bound(weighted.weighted_laplacian)
    batched_weighted_laplacian = Bound(weighted.batched_weighted_laplacian)
    biharmonic = Bound(biharmonics.biharmonic)
    batched_biharmonic = Bound(biharmonics.batched_biharmonic)
    hessian_operator = Bound(operators.hessian_operator)
    ggn_operator = Bound(gauss_newton.ggn_operator)
    jacobian_sparsity = Bound(sparse.jacobian_sparsity)
    hessian_sparsity = Bound(sparse.hessian_sparsity)
    sparse_jacobian = Bound(sparse.sparse_jacobian)
    sparse_hessian = Bound(sparse.sparse_hessian)
    batched_sparse_jacobian = Bound(sparse.batched_sparse_jacobian)
    batched_sparse_hessian = Bound(sparse.batched_sparse_hessian)
    jit = Bound(compiled.jit)
    check_grads = Bound(checking.check_grads)
    # END namespace attributes

    def __init__(self, backend: Backend):
        self.backend = backend

    @property
    def name(self) -> str:
        return self.backend.name

    def __repr__(self) -> str:
        return f"<crossgrad namespace for {self.backend.name}>"


def public(name: str) -> Bound[Any, Any]:
    """The namespace attribute of the public transform ``name`` (its function, signature
    without the backend, and docstring), without binding it to a backend."""
    attribute = Namespace.__dict__[name]
    assert isinstance(attribute, Bound), name
    return attribute
