"""The checks of what a transformed function is called with and returns, made per call
(or per argument signature): argnums against the arity, the output a transform needs
(a scalar, real, floating, arrays), aux, pytree structures, a stream's start.

Shared by both backends (no framework is imported here), so a mistake raises the same
:mod:`crossgrad.errors` exception with the same message on torch and on jax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from crossgrad import errors, option_checks, pytree
from crossgrad.spec import Argnums


def normalize_argnums(transform: str, argnums: Argnums, nargs: int) -> tuple[tuple[int, ...], bool]:
    """Non-negative, in-range, distinct argnums as a tuple, and whether an int was given,
    for a function called with ``nargs`` positional arguments (the form was checked when
    the transform was made: :func:`check_argnums_form`).

    >>> normalize_argnums("grad", -1, 3)
    ((2,), True)
    """
    single = option_checks.is_int(argnums)
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


def check_estimator_key(transform: str, estimator: str, key: Any, is_key: bool) -> None:
    """A random estimator draws its directions from an explicit ``key`` (never a global
    generator); the exact one takes none."""
    if estimator == "exact":
        if key is not None:
            raise errors.OptionError(transform, "no key for estimator='exact'", f"key={key!r}",
                                     "Drop key=, or pick estimator='hutchinson' or 'hutch++'.")
        return
    if key is None or not (is_key or option_checks.is_int(key)):
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


def check_stream_start(transform: str, start: Any, size: int) -> None:
    """stream / stream_to: the sample to start from, within the batch."""
    if not (option_checks.is_int(start) and 0 <= start <= size):
        raise errors.OptionError(transform, f"start between 0 and the batch size {size}", f"start={start!r}",
                                 "Pass start=0, or the `done` of the ChunkError to resume after a failure.")

