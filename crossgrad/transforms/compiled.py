"""jit: a transform compiled once per argument signature, by the route that is fastest on
the device, never worse than eager.

NOTE [jit routes]: ``route`` names how a function is compiled:

* ``"compile"``: the framework's compiler on the function (``torch.compile``,
  ``jax.jit``).  ``torch.compile`` of ``vmap(hessian(f))`` fails on torch 2.11 and 2.13
  (forward-over-reverse under fake tensors), and of ``vmap(jacfwd(jacfwd(f)))`` kills
  the process with a segmentation fault on torch 2.13 (no Python fallback can catch
  that): torch's ``auto`` never takes this route.
* ``"trace"`` (torch): the function, crossgrad's transforms and torch.func inside it
  included, run once per argument signature under ``make_fx`` with real tensors; the
  aten operations it dispatched form a graph, replayed on later calls without
  torch.func's per-operation interpretation.  Tensors the function closes over are
  graph inputs held by reference (a weight updated in place between calls changes the
  result); Python values are fixed at trace time, as under ``torch.compile``.  A
  Python branch on a traced value (``if x.sum() > 0``) makes the trace fail, so a
  branch is never baked in: that signature runs eagerly.
* ``"trace-compile"`` (torch): that graph compiled by ``torch.compile`` (inductor
  unless ``options`` say otherwise).  Compiling the traced graph works where compiling
  the function fails or crashes.
* ``"trace-cudagraph"`` (torch on a GPU): that compiled graph captured once into a CUDA
  graph and replayed with one launch per call (inputs copied into the graph's buffers,
  outputs copied out, so results stay ordinary tensors).  Refused where autograd must
  record through the call (an input or closed-over tensor requires grad).

``"auto"`` tries the routes of :func:`crossgrad.transforms.policy.jit_routes` for the
device in turn.  A route that fails for a signature warns once
(:class:`crossgrad.errors.CompileFallbackWarning`, naming the error) and the next is
tried; when none works, that signature runs eagerly from then on.  An error that
eager execution raises too is the user's and propagates unchanged.  With
``check=True`` the first result of each signature is compared with an eager one
(relative tolerance per dtype, :data:`CHECK_RTOL`); a disagreement warns and falls
back to eager execution.  The ``crossgrad`` logger says which route runs.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

from crossgrad import errors, pytree, spec
from crossgrad.backends.base import Backend
from crossgrad.transforms import policy
from crossgrad.transforms.call import check_leaves

log = logging.getLogger("crossgrad")

# Compiled code may fuse and reorder floating-point operations: agreement with eager
# execution is judged relative to the largest eager magnitude of each leaf.
CHECK_RTOL = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}


def agree(backend: Backend, compiled_out: Any, eager_out: Any) -> str | None:
    """None when the two results agree, else what differs."""
    import numpy as np

    arrays = backend.arrays
    a_leaves, a_def = pytree.flatten(compiled_out)
    b_leaves, b_def = pytree.flatten(eager_out)
    if a_def != b_def:
        return "the output structure"
    for k, (a, b) in enumerate(zip(a_leaves, b_leaves)):
        if not (arrays.is_array(a) and arrays.is_array(b)):
            continue
        if arrays.shape(a) != arrays.shape(b):
            return f"output leaf {k}'s shape: {arrays.shape(a)} vs {arrays.shape(b)}"
        x, y = arrays.to_numpy(a).astype(np.float64), arrays.to_numpy(b).astype(np.float64)
        scale = max(float(np.max(np.abs(y), initial=0.0)), np.finfo(np.float64).tiny)
        err = float(np.max(np.abs(x - y), initial=0.0)) / scale
        if not err <= CHECK_RTOL.get(arrays.dtype_name(b), 1e-4):  # NaN fails too
            return f"output leaf {k}: relative difference {err:.2e}"
    return None


def signature(backend: Backend, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Any, ...]:
    """What a compiled or traced program is specialised to: the pytree structure, each
    array's type, shape, dtype and device (and, on torch, whether it requires grad),
    and every other leaf's value (its identity when it cannot be hashed)."""
    is_array = backend.arrays.is_array
    if not kwargs and all(is_array(a) for a in args):  # the common call, kept cheap
        return tuple(backend.arrays.signature(a) for a in args)
    leaves, treedef = pytree.flatten((args, kwargs))
    parts: list[Any] = [treedef]
    for leaf in leaves:
        if is_array(leaf):
            parts.append(backend.arrays.signature(leaf))
            continue
        try:
            hash(leaf)
            parts.append(("value", type(leaf), leaf))
        except TypeError:
            parts.append(("id", id(leaf)))
    return tuple(parts)


def traced(backend: Backend, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[Any, Any], options: dict[Any, Any] | None,
           replay: bool = False) -> Callable[..., Any]:
    """``f`` traced at ``args`` into a graph of the framework's operations (compiled with
    ``options`` unless None, and captured for replay with ``replay``): a function of
    arguments of the same signature."""
    leaves, treedef = pytree.flatten((args, kwargs))
    positions = [i for i, leaf in enumerate(leaves) if backend.arrays.is_array(leaf)]
    # Only the non-array leaves are kept: they are fixed by the signature.
    mapped = set(positions)
    fixed = [None if i in mapped else leaf for i, leaf in enumerate(leaves)]
    out_def: list[pytree.TreeDef] = []

    def flat_f(*arrays_in: Any) -> tuple[Any, ...]:
        full = list(fixed)
        for i, a in zip(positions, arrays_in):
            full[i] = a
        call_args, call_kwargs = pytree.unflatten(treedef, full)
        out_leaves, out_treedef = pytree.flatten(f(*call_args, **call_kwargs))
        other = [type(o).__name__ for o in out_leaves if not backend.arrays.is_array(o)]
        if other:
            raise TypeError(f"a trace returns arrays only; the function returned a {other[0]} leaf")
        out_def[:] = [out_treedef]
        return tuple(out_leaves)

    example = tuple(leaves[i] for i in positions)
    graph = trace = backend.builtins.trace(flat_f, example)
    if options is not None:
        graph = backend.builtins.compile(graph, options)
    if replay:
        graph = backend.builtins.replay(trace, graph, example)

    def run(*call_args: Any, **call_kwargs: Any) -> Any:
        call_leaves = pytree.leaves((call_args, call_kwargs))
        return pytree.unflatten(out_def[0], list(graph(*(call_leaves[i] for i in positions))))

    return run


# Measuring the candidates of route="auto": calls per candidate, and the time after
# which a candidate gets no more (a slow function is measured once).
MEASURE_CALLS = 3
MEASURE_SECONDS = 0.5


def _measure(backend: Backend, fns: list[Callable[..., Any]], fresh: Callable[[], tuple[tuple[Any, ...], dict[Any, Any]]]) -> list[float]:
    """The fastest of up to :data:`MEASURE_CALLS` synchronized calls of each function on
    ``fresh()`` arguments (made before the clock starts), taken in turns so that a drift
    of the machine hits all alike."""
    best = [float("inf")] * len(fns)
    spent = [0.0] * len(fns)
    for _ in range(MEASURE_CALLS):
        for k, fn in enumerate(fns):
            if spent[k] > MEASURE_SECONDS and best[k] < float("inf"):
                continue
            args, kwargs = fresh()
            t0 = time.perf_counter()
            backend.arrays.synchronize(fn(*args, **kwargs))
            elapsed = time.perf_counter() - t0
            best[k], spent[k] = min(best[k], elapsed), spent[k] + elapsed
    return best


def jit(backend: Backend, f: Callable[..., Any], check: bool = False, options: dict[Any, Any] | None = None, *, route: str = "auto") -> Callable[..., Any]:
    """``f`` compiled once per argument signature, never worse than eager.

    Returns a function with ``f``'s arguments and results.  ``route`` (NOTE [jit
    routes], :mod:`crossgrad.transforms.compiled`): ``"compile"`` is the framework's
    compiler (``torch.compile`` / ``jax.jit``); on torch, ``"trace"`` replays the
    operations ``f`` dispatched, traced once per signature (shapes, dtypes,
    devices, pytree structure, Python values), and ``"trace-compile"`` compiles that
    graph; ``"auto"`` takes the fastest measured route for the device
    (:func:`crossgrad.transforms.policy.jit_routes`).  When a route fails for a
    signature it warns once (:class:`crossgrad.errors.CompileFallbackWarning`) and
    tries the next, then eager execution; errors that eager execution raises too
    propagate unchanged.  ``check=True`` compares the first result of each
    signature with an eager one and falls back to eager when they disagree.
    ``options`` go to the compiler (e.g. ``{"backend": "aot_eager"}`` or
    ``{"mode": "max-autotune"}`` for torch, ``{"static_argnums": 1}`` for jax).
    Compose it around any transform: ``cg.jit(cg.batched_hessian(f))``.

    Example:
        >>> import jax.numpy as jnp, crossgrad as cg
        >>> fast = cg.jax.jit(cg.jax.hessian(lambda x: jnp.sum(x ** 3)), check=True)
        >>> fast(jnp.array([1.0, 2.0])).tolist()
        [[6.0, 0.0], [0.0, 12.0]]
    """
    name = "jit"
    spec.check_callable(name, f)
    spec.validate_options(name, check=check, options=options, route=route)
    spec.check_route(name, backend.name, route, backend.builtins.JIT_ROUTES)
    options = dict(options or {})
    fname = getattr(f, "__name__", "the function")
    runs: dict[tuple[Any, ...], tuple[str, Callable[..., Any]]] = {}
    made: dict[str, Callable[..., Any]] = {}
    warned: list[bool] = []

    def warn(why: str, instead: str) -> None:
        if not warned:
            warned.append(True)
            warnings.warn(f"jit: {why}; running {fname} {instead} for these argument shapes.",
                          errors.CompileFallbackWarning, stacklevel=3)

    def routes_for(args: tuple[Any, ...], kwargs: dict[Any, Any], like: Any) -> tuple[str, ...]:
        if route != "auto":
            return (route,)
        return policy.jit_routes(backend.name, like is not None and backend.arrays.on_accelerator(like))

    def build(r: str, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Callable[..., Any]:
        if r == "eager":
            return f
        if r == "compile":
            if r not in made:
                made[r] = backend.builtins.compile(f, options)
            return made[r]
        compiled = r in ("trace-compile", "trace-cudagraph")
        return traced(backend, f, args, kwargs, options if compiled else None, replay=r == "trace-cudagraph")

    def first_call(key: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Any:
        # Once per signature: nothing the framework would silently truncate (jax, x64 off).
        check_leaves(name, backend, pytree.leaves((args, kwargs)))
        like = next((leaf for leaf in pytree.leaves((args, kwargs)) if backend.arrays.is_array(leaf)), None)
        candidates = routes_for(args, kwargs, like)
        failures: list[str] = []
        working: list[tuple[str, Callable[..., Any], Any]] = []
        # Building, measuring and checking run f several times: on copies of the
        # arrays, with the generators restored afterwards, so that the caller's arrays
        # and the random state end as one call leaves them.
        def fresh() -> Any:
            return pytree.map_leaves(lambda leaf: backend.arrays.copy(leaf) if backend.arrays.is_array(leaf) else leaf,
                                     (args, kwargs))

        with backend.arrays.preserved_random_state(like):
            for r in candidates:
                try:
                    copy_args, copy_kwargs = fresh()
                    fn = build(r, copy_args, copy_kwargs)
                    out = backend.arrays.synchronize(fn(*copy_args, **copy_kwargs))
                except Exception as exc:
                    if r == "eager":
                        raise  # the error is f's own
                    text = (str(exc).strip().splitlines() or [""])[0][:200]
                    failures.append(f"route {r!r}: {type(exc).__name__}: {text}")
                    log.info("jit: route %r failed for %s: %s", r, fname, failures[-1])
                    continue
                working.append((r, fn, out))
            timings = _measure(backend, [fn for _, fn, _ in working], fresh) if len(working) > 1 else []
        if not working:
            result = f(*args, **kwargs)  # raises here if eager fails too: the error is f's own
            runs[key] = ("eager", f)
            warn(f"{backend.name} compilation failed ({'; '.join(failures)})",
                 "eagerly (the result is eager execution's)")
            return result
        pick = min(range(len(working)), key=lambda k: timings[k]) if timings else 0
        r, fn, _ = working[pick]
        if timings:
            log.info("jit: %s measured %s; runs by route %r", fname,
                     ", ".join(f"{w[0]} {1e3 * t:.3g} ms" for w, t in zip(working, timings)), r)
        else:
            log.info("jit: %s runs by route %r", fname, r)
        if failures:
            warn(f"{backend.name} compilation failed ({'; '.join(failures)})", f"by route {r!r}")
        if check and r != "eager":
            copy_args, copy_kwargs = fresh()
            with backend.arrays.preserved_random_state(like):  # the same draws as the call below
                eager = f(*copy_args, **copy_kwargs)
        out = fn(*args, **kwargs)
        if check and r != "eager":
            differs = agree(backend, out, eager)
            if differs is not None:
                runs[key] = ("eager", f)
                warn(f"the compiled result (route {r!r}) differs from eager execution in {differs}",
                     "eagerly (the result is eager execution's)")
                return eager
        runs[key] = (r, fn)
        return out

    def jitted(*args: Any, **kwargs: Any) -> Any:
        key = signature(backend, args, kwargs)
        known = runs.get(key)
        if known is None:
            return first_call(key, args, kwargs)
        return known[1](*args, **kwargs)

    return jitted
