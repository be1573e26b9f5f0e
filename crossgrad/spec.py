"""The spec: names, options and the argument validation both backends share.

This module imports no framework.  Every public transform validates its options here
when it is created (:func:`validate_options`) and its call-time arguments here when it
is called (:func:`normalize_argnums`, :func:`split_aux`, :func:`check_scalar`, ...), so a
mistake raises the same :mod:`crossgrad.errors` exception with the same message on
the torch and the jax backend.

Conventions every backend follows:

* JAX-style names and argument order; ``value_and_grad`` returns ``(value, grads)``.
* Output nesting as in JAX: the output pytree outside, the ``argnums`` tuple inside.
  An int ``argnums`` gives one entry, a tuple gives a tuple; a Hessian with a tuple
  ``argnums`` has blocks ``H[i][j]``.
* Pytrees are tuples, lists, dicts, namedtuples and the classes registered with the
  framework's pytree registry; dict keys are visited in the framework's order (jax:
  sorted; torch: insertion), NOTE [pytree conventions] in :mod:`crossgrad.pytree`.
* ``chunk_size`` bounds how many basis vectors (Jacobian, Hessian and curvature
  transforms: directions) or batch elements (``vmap``) go through the vectorized
  computation at once.  The batched transforms have both kinds and a name for each:
  ``batch_chunk_size`` (samples at once) and ``basis_chunk_size`` (basis vectors or
  directions per sample); they refuse ``chunk_size`` (:func:`check_retired_chunk_size`).
  ``"auto"`` sizes the chunks from a memory budget and retries a chunk that runs out of
  memory in halves (:mod:`crossgrad.memory`, NOTE [auto chunks] in
  :mod:`crossgrad.transforms.chunking`).
* ``impl`` selects the implementation: ``"builtin"`` (the framework's own transform,
  or its documented recipe), ``"composed"`` (crossgrad's composition from vjp, jvp and
  vmap) or ``"auto"`` (the fastest one that supports the options given).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import inspect
import numbers
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, cast, get_args

from crossgrad import errors, pytree

TRANSFORMS = (
    "grad",
    "value_and_grad",
    "vjp",
    "jvp",
    "linearize",
    "vmap",
    "jacrev",
    "jacfwd",
    "jacobian",
    "hessian",
    "hvp",
    "batched_jacobian",
    "batched_hessian",
    "laplacian",
    "hessian_trace",
    "hessian_diagonal",
    "batched_laplacian",
    "batched_hessian_trace",
    "batched_hessian_diagonal",
    "weighted_laplacian",
    "batched_weighted_laplacian",
    "biharmonic",
    "batched_biharmonic",
    "hessian_operator",
    "ggn_operator",
    "jacobian_sparsity",
    "hessian_sparsity",
    "sparse_jacobian",
    "sparse_hessian",
    "batched_sparse_jacobian",
    "batched_sparse_hessian",
)
# The transforms with a ``randomness`` option (vmap's: one draw per sample or one for the batch).
TAKE_RANDOMNESS = ("vmap", "batched_jacobian", "batched_hessian")
# The sparse transforms: their results carry ``.plan(*args)`` (NOTE [sparse plans]).
SPARSE = ("sparse_jacobian", "sparse_hessian", "batched_sparse_jacobian", "batched_sparse_hessian")
# The transforms whose results carry ``.plan(*args)``, the plan a call follows (NOTE [plans]),
# which ``crossgrad.explain`` returns; the others do not have plans yet.
PLANNED = ("jacrev", "jacfwd", "jacobian", "hessian", "batched_jacobian", "batched_hessian", *SPARSE)
# Not transforms of derivatives, but in both namespaces with one signature too.
TOOLS = ("jit", "check_grads")
# The transforms that evaluate at once (the others return a function), and the parameters
# that hold their arrays: where the top level finds the backend and the namespace finds the
# caller's arrays to shield.
EVALUATE_AT_ONCE: dict[str, tuple[str, ...]] = {
    "vjp": ("primals",), "jvp": ("primals", "tangents"), "linearize": ("primals",), "hvp": ("primals", "tangents"),
    "hessian_operator": ("primals",), "ggn_operator": ("primals",), "check_grads": ("args",),
}
Mode = Literal["auto", "rev", "fwd", "loop"]
MODES: tuple[str, ...] = get_args(Mode)
Strategy = Literal["auto", "fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd", "loop"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Impl = Literal["auto", "builtin", "composed"]
IMPLS: tuple[str, ...] = get_args(Impl)
# What a random operation under vmap does: refused, one draw per batch element, one for all.
Randomness = Literal["error", "different", "same"]
RANDOMNESS: tuple[str, ...] = get_args(Randomness)
# How traces and diagonals of Hessians are computed (exactly, or estimated from random directions).
Estimator = Literal["exact", "hutchinson", "hutch++"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
# The transforms whose estimate is not a trace (diagonals, the biharmonic, trace(C H)) take these two.
ExactOrHutchinson = Literal["exact", "hutchinson"]
# NumPy's casting rules, for writing results into a sink (stream_to).
CASTINGS = ("no", "equiv", "safe", "same_kind", "unsafe")
# How jit compiles (NOTE [jit routes]); each backend has a subset (``builtins.JIT_ROUTES``).
JitRoute = Literal["auto", "measure", "compile", "trace", "trace-compile", "trace-cudagraph"]
JIT_ROUTES: tuple[str, ...] = get_args(JitRoute)

Argnums = int | tuple[int, ...] | list[int]


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_argnums_form(transform: str, argnums: Any) -> None:
    """Reject argnums that are wrong whatever the function's arity."""
    fix = "Pass an int (negative counts from the end) or a tuple of distinct ints, e.g. argnums=(0, 2)."
    if _is_int(argnums):
        return
    if isinstance(argnums, (tuple, list)):
        if not argnums:
            raise errors.ArgnumsError(transform, "at least one argument index in argnums", "an empty " + type(argnums).__name__, fix)
        bad = [a for a in argnums if not _is_int(a)]
        if bad:
            raise errors.ArgnumsTypeError(transform, "integer argnums", f"argnums={argnums!r} containing {bad[0]!r} of type {type(bad[0]).__name__}", fix)
        if len(set(argnums)) != len(argnums):
            raise errors.ArgnumsError(transform, "distinct argnums", f"argnums={tuple(argnums)!r} with a repeated index", fix)
        return
    raise errors.ArgnumsTypeError(transform, "an int or a tuple of ints for argnums", f"{argnums!r} of type {type(argnums).__name__}", fix)


def normalize_argnums(transform: str, argnums: Argnums, nargs: int) -> tuple[tuple[int, ...], bool]:
    """Non-negative, in-range, distinct argnums as a tuple, and whether an int was given,
    for a function called with ``nargs`` positional arguments (the form was checked when
    the transform was made: :func:`check_argnums_form`).

    >>> normalize_argnums("grad", -1, 3)
    ((2,), True)
    """
    single = _is_int(argnums)
    nums: tuple[Any, ...] = (argnums,) if single else tuple(cast("tuple[int, ...] | list[int]", argnums))
    fix = f"The function was called with {nargs} positional argument(s): use indices in [-{nargs}, {nargs - 1}]."
    out = []
    for a in nums:
        if not -nargs <= a < nargs:
            raise errors.ArgnumsError(transform, f"argnums in range for {nargs} positional argument(s)", f"argnums={argnums!r}", fix)
        out.append(int(a) % nargs)  # a NumPy integer too: frameworks take Python ints only
    if len(set(out)) != len(out):
        raise errors.ArgnumsError(transform, "distinct argnums", f"argnums={argnums!r}, which name the same argument twice", fix)
    return tuple(out), single


def check_bool(transform: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise errors.OptionTypeError(transform, f"{name} to be True or False", f"{value!r}", f"Pass {name}=True or {name}=False.")


def check_chunk_size(transform: str, chunk_size: Any, name: str = "chunk_size") -> None:
    if chunk_size is None or chunk_size == "auto":
        return
    fix = f'Pass a positive int, {name}="auto" to fit a memory budget, or {name}=None to process everything at once.'
    if not _is_int(chunk_size):
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
            if name == "chunk_size" and transform.startswith("batched_"):
                check_retired_chunk_size(transform, value)
            if name == "basis_chunk_size" and transform in ("batched_jacobian", "batched_hessian",
                                                             "batched_sparse_jacobian", "batched_sparse_hessian"):
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
    if not _is_int(samples):
        raise errors.OptionTypeError(transform, "samples to be a positive int or None", f"{samples!r} of type "
                                     f"{type(samples).__name__}", fix)
    if samples <= 0:
        raise errors.OptionError(transform, "samples >= 1", f"samples={samples}", fix)


def check_estimator_key(transform: str, estimator: str, key: Any, is_key: bool) -> None:
    """A random estimator draws its directions from an explicit ``key`` (never a global
    generator); the exact one takes none."""
    if estimator == "exact":
        if key is not None:
            raise errors.OptionError(transform, "no key for estimator='exact'", f"key={key!r}",
                                     "Drop key=, or pick estimator='hutchinson' or 'hutch++'.")
        return
    if key is None or not (is_key or _is_int(key)):
        got = "no key" if key is None else f"{key!r} of type {type(key).__name__}"
        raise errors.OptionTypeError(
            transform, f"a random key for estimator={estimator!r}: a jax PRNG key (jax), a torch.Generator "
            "(torch) or an int seed", got, "Pass key=jax.random.key(0), key=torch.Generator().manual_seed(0) or key=0.")


def check_scalar_estimator(transform: str, estimator: str, shapes: list[tuple[int, ...]]) -> None:
    """Hutch++ and the estimated diagonal take Hessian-vector products: one scalar output."""
    if len(shapes) != 1 or tuple(shapes[0]) != ():
        raise errors.NonScalarOutputError(
            transform, f"a function with one scalar output (per sample) for estimator={estimator!r}",
            f"output leaves of shapes {[tuple(s) for s in shapes]}",
            "Reduce the output to a scalar, or use estimator='exact' or 'hutchinson' (for the trace), which "
            "give one value per output element.")


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
    from crossgrad import pytree

    fix = f"Use an int, None, or a tuple with one entry per positional argument, e.g. {name}=(None, 0)."
    allow_none = name == "in_axes"
    for leaf in pytree.leaves(axes) if axes is not None else [None]:
        if leaf is None and allow_none:
            continue
        if not _is_int(leaf):
            what = "ints or None" if allow_none else "ints"
            raise errors.AxisError(transform, f"{name} made of {what}", f"{name}={axes!r}", fix)


def split_aux(transform: str, out: Any) -> tuple[Any, Any]:
    """``(output, aux)`` from a function called with ``has_aux=True``."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        if isinstance(out, (tuple, list)):
            got = f"a {type(out).__name__} of length {len(out)}"
        else:
            got = "a single array" if hasattr(out, "shape") else f"a {type(out).__name__}"
        raise errors.HasAuxError(
            transform,
            "the function to return a pair (output, aux) because has_aux=True",
            got,
            "Return (output, aux) from the function, or pass has_aux=False.",
        )
    return out[0], out[1]


def check_scalar(transform: str, shape: tuple[int, ...]) -> None:
    if tuple(shape) != ():
        raise errors.NonScalarOutputError(
            transform,
            "a function with a scalar output (shape ())",
            f"an output of shape {tuple(shape)}",
            "Reduce the output to a scalar with output.sum(), or use jacobian / hessian for array outputs.",
        )


def check_real_output(transform: str, dtype: str, position: str) -> None:
    """A reverse-mode route needs real outputs: the vjp of a complex output of real
    inputs keeps only its real part (NOTE: forward mode returns the complex Jacobian)."""
    if dtype.startswith("complex"):
        raise errors.ComplexOutputError(
            transform,
            "real outputs for reverse mode (a vjp of a complex output of real inputs keeps only its real part)",
            f"a {dtype} output at {position}",
            "Use forward mode (jacfwd, mode='fwd', strategy='fwd-fwd', or 'auto', which picks it for complex "
            "outputs), or return the real and imaginary parts as two real outputs.",
        )


def check_output_leaves(transform: str, leaves: Sequence[Any], is_array: Callable[[Any], bool]) -> None:
    """Every output leaf is an array of the backend (``is_array``: the backend's test)."""
    for leaf in leaves:
        if not is_array(leaf):
            raise errors.OutputError(
                transform,
                "the function to return arrays or a pytree of arrays",
                f"a leaf of type {type(leaf).__name__}",
                "Return framework arrays (tensors); move Python numbers into the output with an array constructor.",
            )


def check_float_outputs(transform: str, dtypes: Sequence[str]) -> None:
    """Every output leaf a second derivative is taken of is floating point (or complex)."""
    for k, dtype in enumerate(dtypes):
        if not dtype.startswith(("float", "bfloat", "complex")):
            raise errors.OutputError(
                transform, "floating-point outputs (their second derivatives)", f"output leaf {k} of dtype {dtype}",
                "Return a float array (cast with .float() / .astype(float)); an integer or boolean output has no "
                "derivatives.")


def check_some_output(transform: str, out: Any, count: int) -> None:
    """A function differentiated must return at least one array (``None``, the return of
    a function without ``return``, is not one)."""
    if count == 0:
        got = "None" if out is None else f"a {type(out).__name__} without arrays"
        raise errors.OutputError(
            transform, "the function to return at least one array", got,
            "Return the array(s) to differentiate (a Python function without a return statement returns None).")


def check_float_input(transform: str, dtype: str, position: str) -> None:
    if not dtype.startswith(("float", "bfloat")):
        raise errors.InputDtypeError(
            transform,
            "real floating-point inputs for the differentiated arguments",
            f"dtype {dtype} at {position}",
            "Convert the input to a float dtype (e.g. float32 or float64), or leave it out of argnums.",
        )


def check_axis_sizes(transform: str, sizes: dict[str, int]) -> int:
    """The common size of the mapped axes, or an :class:`AxisSizeError`."""
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise errors.AxisSizeError(
            transform,
            "all mapped axes to have the same size",
            f"sizes {listed}",
            "Make the batch sizes agree, or mark unbatched arguments with None in in_axes.",
        )
    if not distinct:
        raise errors.AxisError(
            transform,
            "at least one argument with a mapped axis",
            "in_axes that map no argument",
            "Give at least one argument an int axis in in_axes.",
        )
    return distinct[0]


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


def check_same_structure(transform: str, what: str, tree: Any, like: Any, like_name: str) -> None:
    """``tree`` (tangents, cotangents) matches ``like`` leaf for leaf: structure, shapes and
    dtypes (torch alone would accept float32 tangents for float64 primals)."""
    if not pytree.same_structure(pytree.flatten(tree)[1], pytree.flatten(like)[1]):
        raise errors.StructureError(
            transform,
            f"{what} with the same pytree structure as {like_name}",
            f"{what} structured as {type(tree).__name__} with {len(pytree.leaves(tree))} leaves "
            f"for {like_name} with {len(pytree.leaves(like))} leaves",
            f"Give one {what[:-1]} per leaf of {like_name}, in the same containers.",
        )
    for k, (a, b) in enumerate(zip(pytree.leaves(pytree.ordered_like(tree, like)), pytree.leaves(like))):
        sa, sb = getattr(a, "shape", None), getattr(b, "shape", None)
        if sa is None or sb is None:
            continue
        if tuple(sa) != tuple(sb):
            raise errors.StructureError(
                transform, f"{what} shaped like {like_name}",
                f"{what[:-1]} leaf {k} of shape {tuple(sa)} for a leaf of shape {tuple(sb)}",
                f"Give each {what[:-1]} the shape of its {like_name} leaf.")
        da, db = (str(getattr(x, "dtype", "")).removeprefix("torch.") for x in (a, b))
        if da != db:
            raise errors.InputDtypeError(
                transform, f"{what} of the dtypes of {like_name}",
                f"{what[:-1]} leaf {k} of dtype {da} for a leaf of dtype {db}",
                f"Convert the {what[:-1]} to {db}.")


def check_some_primals(transform: str, primals: tuple[Any, ...]) -> None:
    """vjp, jvp, linearize: at least one point to differentiate at."""
    if not primals:
        raise errors.OptionError(
            transform, "at least one primal (the point to differentiate at)", "no primals",
            f"Pass the point: {transform}(f, x)" + (" with tangents: jvp(f, (x,), (t,))." if transform == "jvp" else "."))


def as_tuple(transform: str, name: str, value: Any) -> tuple[Any, ...]:
    """``primals`` / ``tangents``: a tuple (or list) with one entry per argument."""
    if not isinstance(value, (tuple, list)):
        raise errors.OptionTypeError(
            transform,
            f"{name} as a tuple with one entry per argument",
            f"a {type(value).__name__}",
            f"Wrap it in a tuple: {name}=(x,).",
        )
    return tuple(value)


# in_axes and out_axes against the arguments and outputs of a call (array shapes through
# ``shape``: no framework here).


def _is_axis(a: Any) -> bool:
    return a is None or isinstance(a, int)


def in_axes_form(in_axes: Any) -> Any:
    """``in_axes`` as the frameworks take it: a list of per-argument entries as a tuple."""
    return tuple(in_axes) if isinstance(in_axes, list) else in_axes


def leaf_axes(transform: str, in_axes: Any, args: tuple[Any, ...], shape: Callable[..., Any]) -> list[int | None]:
    """One non-negative axis (or None) per leaf of ``args``, from JAX-style ``in_axes``."""
    fix = "Give in_axes one entry per positional argument (an int, None, or a pytree prefix of the argument)."
    if _is_axis(in_axes):
        per_arg = [in_axes] * len(args)
    elif isinstance(in_axes, (tuple, list)) and len(in_axes) == len(args):
        per_arg = list(in_axes)
    else:
        got = f"{len(in_axes)} entries" if isinstance(in_axes, (tuple, list)) else f"a {type(in_axes).__name__}"
        raise errors.AxisError(transform, f"in_axes for {len(args)} positional argument(s)", got, fix)
    axes: list[int | None] = []
    for k, (prefix, arg) in enumerate(zip(per_arg, args)):
        try:
            expanded = pytree.broadcast_prefix(prefix, arg, _is_axis)
        except ValueError as exc:
            raise errors.AxisError(transform, f"in_axes[{k}] to match argument {k}'s structure", str(exc), fix) from None
        for ax, leaf in zip(expanded, pytree.leaves(arg)):
            if ax is not None and not hasattr(leaf, "shape"):
                raise errors.AxisError(transform, f"None in in_axes for the non-array leaves of argument {k}",
                                       f"in_axes entry {ax} for a {type(leaf).__name__}",
                                       "Map arrays only: pass None for Python numbers and other objects.")
            if ax is not None:
                ndim = len(shape(leaf))
                if not -ndim <= ax < ndim:
                    raise errors.AxisError(transform, f"an axis in [-{ndim}, {ndim - 1}] for argument {k}",
                                           f"in_axes entry {ax} for an array of shape {tuple(shape(leaf))}",
                                           "Pick an axis the array has, or None for an unbatched argument.")
                ax %= ndim
            axes.append(ax)
    return axes


def out_axes_of(transform: str, out_axes: Any, out_tree: Any) -> list[int]:
    """One entry of ``out_axes`` per output leaf."""
    try:
        return pytree.broadcast_prefix(out_axes, out_tree, _is_axis)
    except ValueError as exc:
        raise errors.AxisError(transform, "out_axes matching the output's structure", str(exc),
                               "Give out_axes as an int or a pytree prefix of the output.") from None


def batch_size(transform: str, args: tuple[Any, ...], axes: list[int | None], shape: Callable[..., Any]) -> int:
    """The one batch size of the mapped leaves (:func:`check_axis_sizes`)."""
    sizes: dict[str, int] = {}
    position = 0
    for k, arg in enumerate(args):
        arg_leaves = pytree.leaves(arg)
        for j, leaf in enumerate(arg_leaves):
            ax = axes[position + j]
            if ax is not None:
                label = f"argument {k}" + (f" leaf {j}" if len(arg_leaves) > 1 else "")
                sizes[label] = shape(leaf)[ax]
        position += len(arg_leaves)
    return check_axis_sizes(transform, sizes)


def check_stream_chunks(transform: str, chunk_size: Any) -> None:
    """stream / stream_to: a positive int of samples per chunk."""
    if not (_is_int(chunk_size) and chunk_size > 0):
        raise errors.OptionTypeError(transform, "chunk_size to be a positive int (samples per chunk)",
                                     f"{chunk_size!r}", "Pass e.g. chunk_size=1024.")


def check_stream_start(transform: str, start: Any, size: int) -> None:
    """stream / stream_to: the sample to start from, within the batch."""
    if not (_is_int(start) and 0 <= start <= size):
        raise errors.OptionError(transform, f"start between 0 and the batch size {size}", f"start={start!r}",
                                 "Pass start=0, or the `done` of the ChunkError to resume after a failure.")


def check_memory_budget(nbytes: Any) -> None:
    """memory_budget: a positive int of bytes."""
    if not (_is_int(nbytes) and nbytes > 0):
        raise errors.OptionError("memory_budget", "a positive number of bytes", f"{nbytes!r}",
                                 "Pass an int, e.g. memory_budget(2 * 1024**3) for 2 GiB.")
