"""The checks of a transform's options, made once when the transform is made.

Both backends call these (no framework is imported here), so a wrong option raises the same
:mod:`crossgrad.errors` exception with the same message on torch and on jax:
:func:`validate_options` for every option a transform is made with, :func:`check_keywords`
for an unknown keyword (with torch.func's spelling pointed to crossgrad's,
:data:`ALIASES`), :func:`check_callable` for ``f``.  The names and choices they check
against are the catalog's (:mod:`crossgrad.spec`); the checks of what a call is given and
returns are :mod:`crossgrad.value_checks`, the batch axes' arithmetic
:mod:`crossgrad.batch_axes`.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import inspect
import numbers
from collections.abc import Iterator
from typing import Any

from crossgrad import errors, pytree
from crossgrad.spec import BATCHED, CASTINGS, ESTIMATORS, IMPLS, JIT_ROUTES, MAPPED, MODES, RANDOMNESS, STRATEGIES


def is_int(x: Any) -> bool:
    """An integer that is not a bool (a NumPy integer too)."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_argnums_form(transform: str, argnums: Any) -> None:
    """Reject argnums that are wrong whatever the function's arity."""
    fix = "Pass an int (negative counts from the end) or a tuple of distinct ints, e.g. argnums=(0, 2)."
    if is_int(argnums):
        return
    if isinstance(argnums, (tuple, list)):
        if not argnums:
            raise errors.ArgnumsError(transform, "at least one argument index in argnums", "an empty " + type(argnums).__name__, fix)
        bad = [a for a in argnums if not is_int(a)]
        if bad:
            raise errors.ArgnumsTypeError(transform, "integer argnums", f"argnums={argnums!r} containing {bad[0]!r} of type {type(bad[0]).__name__}", fix)
        if len(set(argnums)) != len(argnums):
            raise errors.ArgnumsError(transform, "distinct argnums", f"argnums={tuple(argnums)!r} with a repeated index", fix)
        return
    raise errors.ArgnumsTypeError(transform, "an int or a tuple of ints for argnums", f"{argnums!r} of type {type(argnums).__name__}", fix)


def check_bool(transform: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise errors.OptionTypeError(transform, f"{name} to be True or False", f"{value!r}", f"Pass {name}=True or {name}=False.")


def check_chunk_size(transform: str, chunk_size: Any, name: str = "chunk_size") -> None:
    if chunk_size is None or chunk_size == "auto":
        return
    fix = f'Pass a positive int, {name}="auto" to fit a memory budget, or {name}=None to process everything at once.'
    if not is_int(chunk_size):
        raise errors.OptionTypeError(transform, f'{name} to be a positive int, "auto" or None', f"{chunk_size!r} of type {type(chunk_size).__name__}", fix)
    if chunk_size <= 0:
        raise errors.OptionError(transform, f"{name} >= 1", f"{name}={chunk_size}", fix)


def check_retired_chunk_size(transform: str, chunk_size: Any) -> None:
    """The batched transforms ask for their two kinds of chunks by two names
    (``batch_chunk_size``: samples at once; ``basis_chunk_size``: basis vectors or
    directions per sample); ``chunk_size``, which once meant one or the other by its
    type, is refused with the name to use."""
    if chunk_size is None:
        return
    fix = (f"Pass basis_chunk_size={chunk_size!r} for what an int meant, or batch_chunk_size={chunk_size!r} "
           'to bound the samples computed at once ("auto": from the memory budget).' if chunk_size != "auto" else
           'Pass batch_chunk_size="auto" (what chunk_size="auto" meant: samples at once, from the memory budget).')
    raise errors.OptionError(
        transform, "batch_chunk_size= (samples at once) or basis_chunk_size= (basis vectors per sample)",
        f"chunk_size={chunk_size!r}, which the batched transforms no longer take (an int meant basis vectors, "
        '"auto" meant samples)', fix)


def check_basis_chunks_under_vmap(transform: str, basis_chunk_size: Any) -> None:
    """batched_jacobian / batched_hessian map the per-sample transform over the batch: under
    that vmap the memory a basis chunk takes is not known, so ``"auto"`` is refused."""
    if basis_chunk_size == "auto":
        raise errors.OptionError(
            transform, "an int or None for basis_chunk_size (under the batch's vmap the memory a basis chunk "
            "takes is not known)", 'basis_chunk_size="auto"',
            'Pass batch_chunk_size="auto" to size the samples computed at once from the memory budget.')


def check_choice(transform: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise errors.OptionError(transform, f"{name} to be one of {listed}", f"{name}={value!r}", f"Pick one of {listed}.")


# The options whose value is one of a fixed set of names.
CHOICES: dict[str, tuple[str, ...]] = {
    "mode": MODES, "strategy": STRATEGIES, "impl": IMPLS, "route": JIT_ROUTES, "randomness": RANDOMNESS,
    "estimator": ESTIMATORS, "casting": CASTINGS,
}


# Set while the top level binds a backend to a transform whose options it checked when the
# transform was made: those options are not checked a second time.
_OPTIONS_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("crossgrad_options_checked", default=False)


@contextlib.contextmanager
def options_checked() -> Iterator[None]:
    """Within: the options of the transforms made were checked by the caller already (the
    top level, when its transform was made); :func:`validate_options` and
    :func:`check_callable` pass them."""
    token = _OPTIONS_CHECKED.set(True)
    try:
        yield
    finally:
        _OPTIONS_CHECKED.reset(token)


def validate_options(transform: str, **options: Any) -> None:
    """Validate the creation-time options of ``transform`` (everything but ``f``)."""
    if _OPTIONS_CHECKED.get():
        return
    for name, value in options.items():
        if name in CHOICES:
            check_choice(transform, name, value, CHOICES[name])
        elif name == "argnums":
            check_argnums_form(transform, value)
        elif name in ("has_aux", "check", "gather"):
            check_bool(transform, name, value)
        elif name in ("chunk_size", "batch_chunk_size", "basis_chunk_size"):
            check_chunk_size(transform, value, name)
            if name == "chunk_size" and transform in BATCHED:
                check_retired_chunk_size(transform, value)
            if name == "basis_chunk_size" and transform in MAPPED:
                check_basis_chunks_under_vmap(transform, value)
        elif name in ("in_axes", "out_axes"):
            check_axes_form(transform, name, value)
        elif name == "samples":
            check_samples(transform, value)
        elif name == "options" and value is not None and not isinstance(value, dict):
            raise errors.OptionTypeError(transform, "options to be a dict of compiler arguments or None",
                                         f"{value!r} of type {type(value).__name__}",
                                         "Pass e.g. options={'backend': 'aot_eager'} (torch) or "
                                         "options={'static_argnums': 1} (jax).")


def check_samples(transform: str, samples: Any) -> None:
    fix = "Pass samples=None (the estimator's default) or a positive int, the number of random directions."
    if samples is None:
        return
    if not is_int(samples):
        raise errors.OptionTypeError(transform, "samples to be a positive int or None", f"{samples!r} of type "
                                     f"{type(samples).__name__}", fix)
    if samples <= 0:
        raise errors.OptionError(transform, "samples >= 1", f"samples={samples}", fix)


# torch.func's spellings of crossgrad's (jax's) option names.
ALIASES = {"in_dims": "in_axes", "out_dims": "out_axes", "argnum": "argnums", "chunks": "chunk_size"}


def check_keywords(transform: str, signature: inspect.Signature, kwargs: dict[str, Any]) -> None:
    """Every keyword is a parameter of the transform; an unknown one is named with the
    parameter meant (torch.func's ``in_dims`` is ``in_axes``) or the closest name."""
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    for key in kwargs:
        if key in params:
            continue
        names = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
        meant = ALIASES.get(key) if ALIASES.get(key) in params else next(iter(difflib.get_close_matches(key, names, 1)), None)
        fix = f"Write {meant}= instead" + (" (crossgrad follows jax's names: torch.func's in_dims is in_axes, out_dims is "
                                          "out_axes)." if key in ALIASES else ".") if meant else "Remove it."
        raise errors.UnknownOptionError(transform, f"one of its parameters ({', '.join(names)})",
                                        f"the keyword {key}={kwargs[key]!r}", fix)


def check_callable(transform: str, f: Any) -> None:
    if not callable(f) and not _OPTIONS_CHECKED.get():
        raise errors.OptionTypeError(transform, "a callable as its first argument", f"{f!r} of type {type(f).__name__}", f"Pass the function to transform, e.g. {transform}(f).")


def check_axes_form(transform: str, name: str, axes: Any) -> None:
    """``in_axes``/``out_axes``: an int, None (in_axes only) or a pytree of those."""

    fix = f"Use an int, None, or a tuple with one entry per positional argument, e.g. {name}=(None, 0)."
    allow_none = name == "in_axes"
    for leaf in pytree.leaves(axes) if axes is not None else [None]:
        if leaf is None and allow_none:
            continue
        if not is_int(leaf):
            what = "ints or None" if allow_none else "ints"
            raise errors.AxisError(transform, f"{name} made of {what}", f"{name}={axes!r}", fix)


def bad_devices(transform: str, devices: Any) -> errors.OptionTypeError:
    """The one message for a ``devices=`` value neither backend accepts."""
    return errors.OptionTypeError(
        transform, "devices to be None, 'all', a jax.sharding.Mesh or list of jax devices (jax backend), "
        "or a torch.distributed.ProcessGroup (torch backend)", f"{devices!r} of type {type(devices).__name__}",
        "Pass devices='all' to spread the batch over every device (jax) or every rank of the default process "
        "group (torch).")


def check_route(transform: str, backend: str, route: str, available: tuple[str, ...]) -> None:
    """A jit route the backend has (NOTE [jit routes])."""
    if route not in available:
        raise errors.UnsupportedOptionError(
            transform, f"a route the {backend} backend has ({', '.join(map(repr, available))})", f"route={route!r}",
            "Tracing into a graph of operations is torch's route: jax.jit traces and compiles already. "
            "Use route='compile' or route='auto'.")


def unsupported(transform: str, backend: str, option: str, value: Any) -> errors.UnsupportedOptionError:
    return errors.UnsupportedOptionError(
        transform,
        f"options that the {backend} built-in supports with impl='builtin'",
        f"{option}={value!r}",
        "Use impl='composed' (or impl='auto', which picks crossgrad's composition when the built-in lacks an option).",
    )


def check_stream_chunks(transform: str, chunk_size: Any) -> None:
    """stream / stream_to: a positive int of samples per chunk."""
    if not (is_int(chunk_size) and chunk_size > 0):
        raise errors.OptionTypeError(transform, "chunk_size to be a positive int (samples per chunk)",
                                     f"{chunk_size!r}", "Pass e.g. chunk_size=1024.")


def check_memory_budget(nbytes: Any) -> None:
    """memory_budget: a positive int of bytes."""
    if not (is_int(nbytes) and nbytes > 0):
        raise errors.OptionError("memory_budget", "a positive number of bytes", f"{nbytes!r}",
                                 "Pass an int, e.g. memory_budget(2 * 1024**3) for 2 GiB.")

