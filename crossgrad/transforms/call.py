"""One call of the user's function as crossgrad sees it: the arguments as flat leaves
(:class:`Call`), the checks that depend on their signature, the user's function called with
the framework's refusals named (:func:`call_user`, :mod:`crossgrad.transforms.refusals`),
and per-signature memory (:class:`Memo`, and :class:`Route`, the record a transform keeps
per signature in its one cache)."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from typing import Any

from crossgrad import batch_axes, errors, pytree, value_checks
from crossgrad.backends import framework_of
from crossgrad.backends.base import Backend
from crossgrad.transforms import refusals


def check_leaves(transform: str, backend: Backend, leaves: list[Any]) -> None:
    """No array of the other framework, and nothing jax would silently truncate."""
    for leaf in leaves:
        owner = framework_of(leaf)
        if owner is not None and owner != backend.name:
            raise errors.MixedFrameworksError(
                transform,
                f"{backend.name} arrays for the {backend.name} backend",
                f"a {type(leaf).__module__}.{type(leaf).__name__}",
                f"Convert it with crossgrad.to_{backend.name}(x), or call the {owner} backend.",
            )
        if backend.arrays.float64_unavailable(leaf):
            raise errors.X64DisabledError(
                transform,
                "inputs jax can hold without losing precision",
                f"a {leaf.dtype} NumPy array while jax's x64 mode is off (jax would turn it into float32)",
                "Enable 64-bit jax for your program (JAX_ENABLE_X64=1, or jax.config.update('jax_enable_x64', True), "
                "or the scoped `with jax.enable_x64(True):`), or convert the input to float32 yourself.",
            )


def check_unchanged(transform: str, arrays: Any, watched: list[tuple[int, Any, int]], copies: bool = False) -> None:
    """Raise if a watched input was written (``arrays.written``: its version counter moved):
    the function wrote into it (into a copy of the caller's array with ``copies``, NOTE
    [input writes])."""
    written = arrays.written(watched)
    if written:
        what = "a copy; the caller's array is unchanged" if copies else "the caller's array has been changed"
        raise refusals.mutation_error(transform, f"argument {written[0]} modified in place ({what})")


def call_user(transform: str, backend: Backend, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``f(*args, **kwargs)``, with the framework's refusals of data-dependent control flow
    and of global randomness under a transform turned into named crossgrad errors."""
    try:
        return f(*args, **kwargs)
    except errors.CrossgradError:
        raise
    except Exception as exc:
        named = refusals.named(transform, backend, backend.primitives.failure_cause(exc), exc)
        if named is None:
            raise
        raise named from exc


def _array_hint(backend: Backend, leaf: Any) -> str:
    """How to fix a differentiated leaf that is not an array: a model inside a container is
    taken only as an argument of its own (NOTE [models as arguments])."""
    if backend.builtins.is_model(leaf):
        return ("A model is differentiated by its parameters when it is an argument of its own: pass the module "
                "itself as an argument (f(model, x)), not inside a tuple, list or dict.")
    return "Pass arrays of the backend's framework, or leave this argument out of argnums."


class Call:
    """One call ``f(*args, **kwargs)``, seen as a function of the leaves of ``args[argnums]``.

    ``primals`` are those leaves in order (argument by argument, dict keys sorted);
    ``flat(*leaves)`` evaluates ``f`` at them and returns the output leaves (and the
    aux when ``has_aux``); ``assemble`` turns per-(output leaf, input leaf) blocks into
    JAX's nesting: the output pytree outside, the argnums tuple inside.
    """

    def __init__(self, transform: str, backend: Backend, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[Any, Any],
                 argnums: Any, has_aux: bool, checked: bool = False):
        self.transform, self.backend, self.f, self.kwargs, self.has_aux = transform, backend, f, kwargs, has_aux
        self.nums, self.single = value_checks.normalize_argnums(transform, argnums, len(args))
        self.args = list(args)
        self.defs: list[pytree.TreeDef] = []
        self.bounds: list[tuple[int, int]] = []
        leaves: list[Any] = []
        for k in self.nums:
            arg_leaves, treedef = pytree.flatten(args[k])
            self.defs.append(treedef)
            self.bounds.append((len(leaves), len(leaves) + len(arg_leaves)))
            leaves.extend(arg_leaves)
        self.all_leaves = leaves
        # Leaves of a model that are not numbers (activation functions, flags, names) are
        # static: held in place, not differentiated, None at their place in a derivative,
        # as equinox's filtered transforms treat them.
        self.kept = [j for j, leaf in enumerate(leaves) if not is_static(leaf)]
        # jax takes Python numbers and NumPy arrays as inputs: differentiated, they are arrays.
        as_array = backend.arrays.as_array
        self.primals = tuple(as_array(leaves[j]) for j in self.kept)
        self.out_def: pytree.TreeDef | None = None
        self._output_shapes: list[tuple[tuple[int, ...], int, str]] | None = None
        if not checked:  # a signature already checked (the caller remembers) is not checked again
            self._check()

    def _check(self) -> None:
        """What depends on the arguments' types, dtypes and structure alone: no array of the
        other framework, differentiated leaves that are floating-point arrays."""
        transform, backend, leaves = self.transform, self.backend, self.all_leaves
        check_leaves(transform, backend, pytree.leaves((self.args, self.kwargs)))
        if leaves and not self.kept:
            raise errors.InputDtypeError(transform, f"{backend.name} arrays among the differentiated inputs",
                                         f"only a {type(leaves[0]).__name__} at argument {self.nums[0]}",
                                         _array_hint(backend, leaves[0]))
        for j in self.kept:
            leaf = leaves[j]
            k = next(i for i, (lo, hi) in enumerate(self.bounds) if lo <= j < hi)
            position = f"argument {self.nums[k]}" + (f", leaf {j - self.bounds[k][0]}" if self.defs[k].kind != "leaf" else "")
            if not backend.arrays.is_input(leaf):
                raise errors.InputDtypeError(transform, f"{backend.name} arrays as differentiated inputs",
                                             f"a {type(leaf).__name__} at {position}", _array_hint(backend, leaf))
            value_checks.check_float_input(transform, backend.arrays.dtype_name(leaf), position)

    def rebuild(self, leaves: tuple[Any, ...]) -> list[Any]:
        full = list(self.all_leaves)
        for j, v in zip(self.kept, leaves):
            full[j] = v
        args = list(self.args)
        for k, treedef, (lo, hi) in zip(self.nums, self.defs, self.bounds):
            args[k] = pytree.unflatten(treedef, full[lo:hi])
        return args

    def batch_layout(self, in_axes: Any) -> tuple[list[int | None], int]:
        """For a call of a batched transform with ``in_axes``: the batch axis of each
        differentiated (non-static) leaf, in the order of ``primals``, and the batch size."""
        args, shape = tuple(self.args), self.backend.arrays.shape
        axes = batch_axes.leaf_axes(self.transform, batch_axes.in_axes_form(in_axes), args, shape)
        return self.differentiated_axes(axes), batch_axes.batch_size(self.transform, args, axes, shape)

    def differentiated_axes(self, axes: list[int | None]) -> list[int | None]:
        """Of one batch axis per leaf of every argument (``batch_axes.leaf_axes``), those of the
        differentiated (non-static) leaves, in the order of ``primals``."""
        starts = [0]
        for arg in self.args:
            starts.append(starts[-1] + len(pytree.leaves(arg)))
        return self.kept_of([axes[starts[k] + j] for k in self.nums for j in range(starts[k + 1] - starts[k])])

    def kept_of(self, values: list[Any]) -> list[Any]:
        """Of per-leaf values over every leaf of the differentiated arguments, those of the
        differentiated (non-static) leaves."""
        return [values[j] for j in self.kept]

    def flat(self, *leaves: Any) -> Any:
        out = call_user(self.transform, self.backend, self.f, *self.rebuild(leaves), **self.kwargs)
        aux = None
        if self.has_aux:
            out, aux = value_checks.split_aux(self.transform, out)
        out_leaves, self.out_def = pytree.flatten(out)
        value_checks.check_some_output(self.transform, out, len(out_leaves))
        value_checks.check_output_leaves(self.transform, out_leaves, self.backend.arrays.is_array)
        return (tuple(out_leaves), aux) if self.has_aux else tuple(out_leaves)

    def flat_output(self, *leaves: Any) -> Any:
        """``flat`` without the aux."""
        out = self.flat(*leaves)
        return out[0] if self.has_aux else out

    def output_shapes(self) -> list[tuple[tuple[int, ...], int, str]]:
        """Shape, element size and dtype name of each output leaf, for the decisions made once per
        signature (``auto``'s mode and strategy), evaluated on copies of every array
        argument (the backend's ``output_shapes``): the caller's arrays never see this
        extra evaluation.  Evaluated once per call: the plan's choices ask it more than once."""
        if self._output_shapes is not None:
            return self._output_shapes
        leaves, treedef = pytree.flatten((self.args, self.kwargs))
        is_array = self.backend.arrays.is_array
        positions = [i for i, leaf in enumerate(leaves) if is_array(leaf)]

        def run(*arrays: Any) -> tuple[Any, ...]:
            full = list(leaves)
            for i, a in zip(positions, arrays):
                full[i] = a
            args, kwargs = pytree.unflatten(treedef, full)
            out = call_user(self.transform, self.backend, self.f, *args, **kwargs)
            if self.has_aux:
                out, _ = value_checks.split_aux(self.transform, out)
            return tuple(pytree.leaves(out))

        shapes: list[tuple[tuple[int, ...], int, str]] = self.backend.primitives.output_shapes(
            run, tuple(leaves[i] for i in positions))
        self._output_shapes = shapes
        return shapes

    def outputs_seen(self, outputs: Any) -> None:
        """Record the output leaves an evaluation of this call already computed (the adjoint
        check's jvp), so that :meth:`output_shapes` does not evaluate f again for them."""
        a = self.backend.arrays
        if self._output_shapes is None:
            self._output_shapes = [(tuple(a.shape(o)), a.itemsize(o), a.dtype_name(o)) for o in outputs]

    def per_argnum(self, values: list[Any]) -> Any:
        """Per-input-leaf values (one per differentiated leaf) grouped back into the argnums'
        pytrees (JAX's nesting), None at the places of static leaves."""
        full: list[Any] = [None] * len(self.all_leaves)
        for j, v in zip(self.kept, values):
            full[j] = v
        grouped = tuple(pytree.unflatten(d, full[lo:hi]) for d, (lo, hi) in zip(self.defs, self.bounds))
        return grouped[0] if self.single else grouped

    def output_structure(self) -> pytree.TreeDef:
        """The output's structure, known once the function has been evaluated."""
        assert self.out_def is not None, "the function has not been evaluated yet"
        return self.out_def

    def assemble(self, blocks: list[list[Any]]) -> Any:
        """``blocks[o][i]``, output leaf ``o`` by input leaf ``i``, as the nested result."""
        assert self.out_def is not None
        return pytree.unflatten(self.out_def, [self.per_argnum(row) for row in blocks])

    def has_no_elements(self) -> bool:
        """Whether the differentiated inputs hold no elements at all (an empty Jacobian)."""
        return bool(sum(self.backend.arrays.size(p) for p in self.primals) == 0)


def is_static(leaf: Any) -> bool:
    """A leaf that is neither an array nor a number (a function, a string, a flag): static
    in every transform."""
    if isinstance(leaf, bool):
        return True
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return False
    return not isinstance(leaf, numbers.Number)


class Memo:
    """Outcomes of checks and decisions that depend only on the arguments' types,
    shapes, dtypes and pytree structure, remembered per such signature, so a transformed
    function called again on like arguments skips them.  Arguments holding anything but
    arrays (Python numbers, objects) get no key and are checked on every call.

    :meth:`key` is the transforms' one notion of a signature (a plan depends on types,
    shapes, dtypes and structure); ``cg.jit``'s :func:`crossgrad.transforms.compiled.signature`
    is wider on purpose: a compiled program is specialised to devices, ``requires_grad`` and
    every Python value too."""

    MAXSIZE = 256

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def key(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        parts: list[Any] = []
        for a in args:
            shape = getattr(a, "shape", None)
            if shape is not None and not isinstance(a, (tuple, list, dict)):
                parts.append((type(a), tuple(shape), a.dtype))
                continue
            leaves, treedef = pytree.flatten(a)
            for leaf in leaves:
                leaf_shape = getattr(leaf, "shape", None)
                if leaf_shape is None:
                    return None  # a Python number or an object: checked on every call
                parts.append((type(leaf), tuple(leaf_shape), leaf.dtype))
            parts.append(treedef)
        return tuple(parts)

    def get(self, key: tuple[Any, ...] | None) -> Any:
        return None if key is None else self._seen.get(key)

    def put(self, key: tuple[Any, ...] | None, value: Any) -> Any:
        if key is not None:
            if len(self._seen) >= self.MAXSIZE:
                self._seen.clear()
            self._seen[key] = value
        return value


@dataclasses.dataclass(frozen=True)
class Route:
    """One signature's record in a transformed function's one cache: the plan it follows and
    the function that runs it, made once for the signature (the framework's built-in, or the
    composition the plan builds; None: the route is computed in place, or a built-in is
    made per call because keyword arguments are closed over)."""

    plan: Any
    run: Callable[..., Any] | None = None


def routed(planned: Callable[[tuple[Any, ...], dict[Any, Any]], Route]) -> Callable[..., Any]:
    """The transformed function of a transform whose every signature's :class:`Route` has
    its ``run``: the call runs it, ``.plan(*args)`` returns its plan (NOTE [plans])."""

    def transformed(*args: Any, **kwargs: Any) -> Any:
        return planned(args, kwargs).run(*args, **kwargs)  # type: ignore[misc]

    def plan(*args: Any, **kwargs: Any) -> Any:
        """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
        return planned(args, kwargs).plan

    transformed.plan = plan  # type: ignore[attr-defined]
    return transformed
