"""The framework's own transforms as a route: whether they serve a call's options
(:func:`builtin_serves`), what they refuse that crossgrad's compositions take
(:func:`needs_composition`), made once per signature (:func:`made`, :func:`via_builtin`),
with crossgrad's output checks around the user's function (:func:`checked`) so both routes
raise the same errors."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from crossgrad import errors, option_checks, pytree, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import policy
from crossgrad.transforms.call import Call, Memo, call_user, is_static


def needs_composition(backend: Backend, tree: Any) -> bool:
    """Whether ``tree`` holds what the framework's built-ins refuse and crossgrad's
    compositions take: static leaves (both frameworks), None subtrees (torch.func)."""
    def visit(td: pytree.TreeDef) -> bool:
        return td.kind == "none" or any(visit(c) for c in td.children)

    flat, treedef = pytree.flatten(tree)
    if any(is_static(leaf) for leaf in flat):
        return True
    return not backend.builtins.NONE_LEAVES and visit(treedef)


def builtin_serves(transform: str, backend: Backend, impl: str, builtin: str | None = None, **options: Any) -> bool:
    """Whether the framework's built-in ``builtin`` (default: ``transform``) serves a call
    of ``transform`` with ``options``: ``impl`` asks for it, and it lacks none of them."""
    if impl == "composed":
        return False
    # chunk_size="auto" is crossgrad's own (sized from memory, retried on exhaustion): no built-in has it.
    lacking = [name for name, value in options.items()
               if value is not None and (value == "auto" or name in backend.builtins.LACKS.get(builtin or transform, ()))]
    if impl == "builtin" and lacking:
        raise option_checks.unsupported(transform, backend.name, lacking[0], options[lacking[0]])
    if impl == "auto" and (builtin or transform) in policy.AUTO_AVOIDS[backend.name]:
        return False
    return not lacking


def made(transform: str, backend: Backend, make: Callable[[Callable[..., Any], Any], Callable[..., Any]],
         f: Callable[..., Any], argnums: Any, has_aux: bool, scalar: bool, nargs: int, kwargs: dict[Any, Any],
         real: bool = False) -> Callable[..., Any]:
    """The framework's built-in ``make(checked f, argnums)`` for a call with ``nargs``
    positional arguments and ``kwargs`` (closed over: a built-in made with keyword arguments
    serves that call alone).  With ``real``, a complex output raises
    :class:`crossgrad.errors.ComplexOutputError` before the built-in sees it."""
    nums, single = value_checks.normalize_argnums(transform, argnums, nargs)
    g = partial(f, **kwargs) if kwargs else f
    return make(checked(transform, backend, g, has_aux, scalar, real), nums[0] if single else nums)


def via_builtin(backend: Backend, name: str, make: Callable[..., Any], f: Callable[..., Any], argnums: Any, has_aux: bool,
                scalar: bool, real: bool = False, prechecked: bool = False) -> Callable[..., Any]:
    """A call of ``make(checked f, argnums)``, the framework's built-in, validated by
    crossgrad first (``prechecked``: by the transform that calls it); the built-in is made
    once per argument signature (when no kwargs are given), kept with the signature's check
    in one cache."""
    known = Memo()

    def run(*args: Any, **kwargs: Any) -> Any:
        key = Memo.key(args)
        fn = known.get(key)
        if fn is None:  # the signature's checks, once, and its built-in (made without evaluating f)
            if not prechecked:
                Call(name, backend, f, args, kwargs, argnums, has_aux)
            fn = known.put(key, made(name, backend, make, f, argnums, has_aux, scalar, len(args), {}, real))
        if kwargs:  # closed over: a built-in for this call alone
            return made(name, backend, make, f, argnums, has_aux, scalar, len(args), kwargs, real)(*args)
        return fn(*args)

    return run


def checked(transform: str, backend: Backend, f: Callable[..., Any], has_aux: bool, scalar: bool,
            real: bool = False) -> Callable[..., Any]:
    """``f`` with its output checked the way the composed path checks it, dicts sorted.

    Wrapped around ``f`` before it goes into a framework built-in, so the built-in
    and the composed implementation raise the same errors and return the same nesting.
    """

    is_array, shape, dtype_name = backend.arrays.is_array, backend.arrays.shape, backend.arrays.dtype_name
    real = real or scalar  # grad, value_and_grad and hvp are reverse mode

    def checked_f(*args: Any, **kwargs: Any) -> Any:
        out = call_user(transform, backend, f, *args, **kwargs)
        if not has_aux and is_array(out):  # the common case, kept cheap
            if scalar:
                value_checks.check_scalar(transform, shape(out))
            if real:
                value_checks.check_real_output(transform, dtype_name(out), "output leaf 0")
            return out
        aux = None
        if has_aux:
            out, aux = value_checks.split_aux(transform, out)
        check_output(transform, backend, out, scalar)
        if real:
            for k, leaf in enumerate(pytree.leaves(out)):
                value_checks.check_real_output(transform, dtype_name(leaf), f"output leaf {k}")
        return (out, aux) if has_aux else out

    return checked_f


def check_output(transform: str, backend: Backend, out: Any, scalar: bool) -> None:
    """Every output leaf is an array; with ``scalar``, the output is one array of shape ()."""
    leaves, treedef = pytree.flatten(out)
    value_checks.check_some_output(transform, out, len(leaves))
    value_checks.check_output_leaves(transform, leaves, backend.arrays.is_array)
    if scalar:
        if treedef.kind != "leaf":
            raise errors.NonScalarOutputError(transform, "a function with a single scalar output",
                                              f"a {type(out).__name__} of {len(leaves)} arrays",
                                              "Return one scalar array; reduce a pytree output with a sum.")
        value_checks.check_scalar(transform, backend.arrays.shape(out))
