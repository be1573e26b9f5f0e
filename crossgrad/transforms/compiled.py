"""jit: a transform compiled once per argument signature, by the route a measured rule
picks for the device, never giving other numbers than eager.

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
  result); Python values are fixed at trace time and guarded (NOTE [jit guards]: a
  rebinding traces again).  A Python branch on a traced value (``if x.sum() > 0``)
  makes the trace fail, so a branch is never baked in: that signature runs eagerly.
  The trace is the first call itself (NOTE [one traced call],
  :mod:`crossgrad.backends.torch.tracing`).
* ``"trace-compile"`` (torch): that graph compiled by ``torch.compile`` (inductor
  unless ``options`` say otherwise).  Compiling the traced graph works where compiling
  the function fails or crashes.
* ``"trace-cudagraph"`` (torch on a GPU): that compiled graph captured once into a CUDA
  graph and replayed with one launch per call (inputs copied into the graph's buffers,
  outputs copied out, so results stay ordinary tensors).  Refused where autograd must
  record through the call (an input or closed-over tensor requires grad).

``"auto"`` takes the routes of :func:`crossgrad.transforms.policy.jit_routes` in the
rule's order, decided from the device and the traced graph (deterministic: the same call
takes the same route in every run): the first that builds and agrees with the traced
call's own result (:func:`agree`, relative tolerance per dtype, :mod:`crossgrad.tolerances`;
non-finite values must match), run once with everything it writes and draws restored
around that run, is kept; nothing else is built or timed.  One that fails or differs warns
once (:class:`crossgrad.errors.CompileFallbackWarning`, saying why) and is never kept;
when none works, that signature runs eagerly from then on.  ``"measure"`` builds and
checks every route of the rule and keeps the fastest of a few isolated, synchronized
calls (a stopwatch: its choice may differ between runs).  An error that eager execution
raises too is the user's and propagates unchanged.  With ``check=True`` the
``"compile"`` route's first result is compared with an eager call too.  The
``crossgrad`` logger says which route runs.

Why one module of ~520 lines: ``jit``'s first call (trace, check, route choice), its
guards' use and its steady call share one per-signature record of the routes; the guards
themselves are :mod:`crossgrad.transforms.guards`, the traced routes the torch backend's.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from crossgrad import errors, option_checks, pytree, spec, tolerances
from crossgrad.backends.base import Backend
from crossgrad.transforms import guards, models, policy
from crossgrad.transforms.call import check_leaves

log = logging.getLogger("crossgrad")

# Compiled code may fuse and reorder floating-point operations: agreement with eager
# execution is judged relative to the largest eager magnitude of each leaf.


def agree(backend: Backend, compiled_out: Any, eager_out: Any) -> str | None:
    """None when the two results agree, else what differs.  Non-finite values must match
    (a NaN where eager has a NaN, the same infinity); the finite ones agree to
    the dtype's identity tolerance (:mod:`crossgrad.tolerances`) relative to the largest finite eager magnitude of the leaf."""
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
        x, y = arrays.to_numpy(a), arrays.to_numpy(b)
        if x.dtype.kind not in "fc" or y.dtype.kind not in "fc":
            if not np.array_equal(x, y):
                return f"output leaf {k}: values differ"
            continue
        wide = np.complex128 if np.iscomplexobj(x) or np.iscomplexobj(y) else np.float64
        x, y = x.astype(wide), y.astype(wide)
        finite_x, finite_y = np.isfinite(x), np.isfinite(y)
        if not np.array_equal(finite_x, finite_y):
            return f"output leaf {k}: non-finite values where the other has finite ones"
        if not np.array_equal(np.isnan(x), np.isnan(y)) or not np.array_equal(x[~finite_x & ~np.isnan(x)],
                                                                              y[~finite_y & ~np.isnan(y)]):
            return f"output leaf {k}: non-finite values differ"
        scale = max(float(np.max(np.abs(y[finite_y]), initial=0.0)), np.finfo(np.float64).tiny)
        err = float(np.max(np.abs(x[finite_x] - y[finite_y]), initial=0.0)) / scale
        if not err <= tolerances.of(arrays.dtype_name(b)).identity:
            return f"output leaf {k}: relative difference {err:.2e}"
    return None


def signature(backend: Backend, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Any, ...]:
    """What a compiled or traced program is specialised to: the pytree structure, each
    array's type, shape, dtype and device (and, on torch, whether it requires grad),
    and every other leaf's value (its identity when it cannot be hashed)."""
    is_array = backend.arrays.is_array
    if not kwargs:
        steady = steady_signature(backend, args)  # the common calls, kept cheap
        if steady is not None:
            return steady
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


def _fixed_leaves(backend: Backend, f: Callable[..., Any], options: dict[Any, Any] | None, args: tuple[Any, ...],
                  kwargs: dict[Any, Any]) -> Callable[..., Any]:
    """``f`` compiled as a function of the leaves the framework takes as arguments, the others
    (functions, strings, objects) fixed at their values in ``args`` and ``kwargs``: for calls of
    the same :func:`signature` (which names those leaves)."""
    leaves, treedef = pytree.flatten((args, kwargs))
    taken = [i for i, x in enumerate(leaves) if backend.arrays.is_input(x)]
    given = set(taken)
    fixed = [None if i in given else x for i, x in enumerate(leaves)]  # the first call's arrays are not kept

    def of_taken(*xs: Any) -> Any:
        full = list(fixed)
        for i, x in zip(taken, xs):
            full[i] = x
        call_args, call_kwargs = pytree.unflatten(treedef, full)
        return f(*call_args, **call_kwargs)

    of_taken.__name__ = of_taken.__qualname__ = getattr(f, "__name__", "f")
    compiled = backend.builtins.compile(of_taken, options or {})

    def run(*call_args: Any, **call_kwargs: Any) -> Any:
        now = pytree.leaves((call_args, call_kwargs))
        return compiled(*(now[i] for i in taken))

    return run


def steady_signature(backend: Backend, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """:func:`signature` of positional arguments that are arrays, or plain tuples, lists and
    dicts of them (a model's parameters), without flattening (it runs on every call); None
    for anything else (then flattened)."""
    sig = backend.arrays.signature
    if all(backend.arrays.is_array(a) for a in args):
        return tuple(sig(a) for a in args)
    return _nested_signature(backend, args)


def _nested_signature(backend: Backend, tree: Any) -> tuple[Any, ...] | None:
    parts: list[Any] = []
    for x in tree:
        if backend.arrays.is_array(x):
            parts.append(backend.arrays.signature(x))
        elif type(x) is tuple or type(x) is list:
            inner = _nested_signature(backend, x)
            if inner is None:
                return None
            parts.append((type(x), inner))
        elif type(x) is dict:  # keys in the order given: another order is another signature
            inner = _nested_signature(backend, list(x.values()))
            if inner is None:
                return None
            parts.append((dict, tuple(x), inner))
        else:
            return None
    return ("nested", *parts)


class Traced:
    """One call of ``f`` traced by the backend (NOTE [one traced call] in
    :mod:`crossgrad.backends.torch.tracing`): ``result`` is that call's own result, and
    :meth:`route` the graph (compiled with ``options`` unless None, captured for replay with
    ``replay``) as a function of arguments of the same signature."""

    def __init__(self, backend: Backend, f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[Any, Any]):
        leaves, treedef = pytree.flatten((args, kwargs))
        self.backend = backend
        self.positions = [i for i, leaf in enumerate(leaves) if backend.arrays.is_array(leaf)]
        # The common call, positional arrays only: later calls of the signature pass them as they are.
        self.plain = not kwargs and all(backend.arrays.is_array(a) for a in args)
        # Only the non-array leaves are kept: they are fixed by the signature.
        mapped = set(self.positions)
        fixed = [None if i in mapped else leaf for i, leaf in enumerate(leaves)]
        out_def: list[pytree.TreeDef] = []

        def flat_f(*arrays_in: Any) -> tuple[Any, ...]:
            full = list(fixed)
            for i, a in zip(self.positions, arrays_in):
                full[i] = a
            call_args, call_kwargs = pytree.unflatten(treedef, full)
            out_leaves, out_treedef = pytree.flatten(f(*call_args, **call_kwargs))
            other = [type(o).__name__ for o in out_leaves if not backend.arrays.is_array(o)]
            if other:
                raise TypeError(f"a trace returns arrays only; the function returned a {other[0]} leaf")
            out_def[:] = [out_treedef]
            return tuple(out_leaves)

        self.trace = backend.builtins.trace(flat_f, self.arrays(args, kwargs))
        self.out_def = out_def[0]
        self.result = pytree.unflatten(self.out_def, list(self.trace.outputs))

    def arrays(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Any, ...]:
        if self.plain:  # the signature matched: positional arrays, no kwargs
            return args
        leaves = pytree.leaves((args, kwargs))
        return tuple(leaves[i] for i in self.positions)

    def route(self, options: dict[Any, Any] | None, replay: bool = False) -> Callable[..., Any]:
        builtins = self.backend.builtins
        graph = self.trace.graph
        if options is not None:
            graph = builtins.compile_traced(graph, options, self.trace.example)
        if replay:
            graph = builtins.replay(self.trace.graph, graph, self.trace.example)
        graph = self.trace.wrap(graph)

        if self.out_def.kind == "leaf":
            def run(*call_args: Any, **call_kwargs: Any) -> Any:
                return graph(*self.arrays(call_args, call_kwargs))[0]
        else:
            def run(*call_args: Any, **call_kwargs: Any) -> Any:
                return pytree.unflatten(self.out_def, list(graph(*self.arrays(call_args, call_kwargs))))

        return run


# Measuring the candidates of route="auto": calls per candidate, and the time after
# which a candidate gets no more (a slow function is measured once).
MEASURE_CALLS = 3
MEASURE_SECONDS = 0.5

# Retraces of one signature after its guard failed (NOTE [jit guards]) before that
# signature runs eagerly for good.
MAX_RETRACES = 8


class Kept(NamedTuple):
    """The route kept for one signature: its name, the function that runs it, the guard on
    what ``f`` reads besides its arguments, and why it was kept."""

    route: str
    fn: Callable[..., Any]
    guard: guards.Guard
    why: str


@dataclasses.dataclass
class _Seen:
    """What ``cg.jit`` knows of one signature, its one record: the route kept (None before the
    first call settles), how often its guard failed and it was traced again, and how often a
    call changed what ``f`` reads besides its arguments."""

    kept: Kept | None = None
    retraced: int = 0
    impure: int = 0


@dataclasses.dataclass(frozen=True)
class JitPlan:
    """The route ``cg.jit`` runs a signature by (NOTE [plans] in
    :mod:`crossgrad.transforms.jacobians`; NOTE [jit routes]): decided by the signature's
    first call (the trace, the check against eager execution, the rule or the
    measurement), so before it ``decided`` is False and ``route`` the rule's first candidate."""

    function: str
    route: str
    decided: bool
    why: str

    def __str__(self) -> str:
        state = "runs by" if self.decided else "not called yet with this signature; its first call tries"
        return f"jit of {self.function}: {state} route {self.route!r}; {self.why}"


def _measure(backend: Backend, fns: list[Callable[..., Any]], run: Callable[[Callable[..., Any]], Any]) -> list[float]:
    """The fastest of up to :data:`MEASURE_CALLS` synchronized calls ``run(fn)`` of each
    function, taken in turns so that a drift of the machine hits all alike."""
    best = [float("inf")] * len(fns)
    spent = [0.0] * len(fns)
    for _ in range(MEASURE_CALLS):
        for k, fn in enumerate(fns):
            if spent[k] > MEASURE_SECONDS and best[k] < float("inf"):
                continue
            t0 = time.perf_counter()
            backend.arrays.synchronize(run(fn))
            elapsed = time.perf_counter() - t0
            best[k], spent[k] = min(best[k], elapsed), spent[k] + elapsed
    return best


# How to avoid a fallback, said with every compilation failure.
AVOID_FALLBACK = ("The usual causes: a Python branch on an array's value (use where(cond, a, b)), a conversion to "
                  "NumPy or Python numbers inside the function, or an argument the framework cannot trace (pass it "
                  "as a fixed leaf of a pytree, or close over it); the logger 'crossgrad' at INFO shows each route "
                  "tried")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


class _Jit:
    """One ``cg.jit``'s state and its general path: its one cache, a :class:`_Seen` per
    signature (the route kept, the retrace and side-effect counts), the framework's compiled function,
    the lifted forms of models passed as arguments; the first call of a signature (trace,
    check, choice) and the untraced call.  The steady call is :func:`jit`'s closure."""

    def __init__(self, backend: Backend, f: Callable[..., Any], check: bool, options: dict[Any, Any],
                 route: str) -> None:
        self.backend, self.f, self.check, self.options, self.route = backend, f, check, options, route
        self.fname = getattr(f, "__name__", "the function")
        self.signatures: dict[tuple[Any, ...], _Seen] = {}
        self.compiled: Callable[..., Any] | None = None  # the framework's compiler on f, made when a route needs it
        self.warned: list[bool] = []
        self.arrays = backend.arrays
        self.lifted = models.Lifted(backend, f, statistics="update")  # the traced program keeps the write

    def warn(self, why: str, instead: str) -> None:
        if not self.warned:
            self.warned.append(True)
            warnings.warn(f"jit: {why}; running {self.fname} {instead} for these argument shapes.",
                          errors.CompileFallbackWarning, stacklevel=4)

    def routes_for(self, like: Any) -> tuple[str, ...]:
        if self.route not in ("auto", "measure"):
            return (self.route,)
        return policy.jit_routes(self.backend.name, like is not None and self.arrays.on_accelerator(like))

    def compiled_f(self) -> Callable[..., Any]:
        if self.compiled is None:
            # A new function object each time: the framework's compiler caches its traces by
            # function, and a guard that failed needs a new trace.
            @functools.wraps(self.f)
            def fresh(*args: Any, **kwargs: Any) -> Any:
                return self.f(*args, **kwargs)

            self.compiled = self.backend.builtins.compile(fresh, self.options)
        return self.compiled

    def seen(self, key: tuple[Any, ...]) -> _Seen:
        """The signature's record, made on its first call."""
        seen = self.signatures.get(key)
        if seen is None:
            seen = self.signatures[key] = _Seen()
        return seen

    def keep(self, key: tuple[Any, ...], route: str, fn: Callable[..., Any], guard: guards.Guard, why: str) -> None:
        self.seen(key).kept = Kept(route, fn, guard, why)

    def guard_for(self) -> guards.Guard:
        return guards.Guard(self.f, self.arrays.is_array, self.arrays.is_random_key)

    def settled(self, key: tuple[Any, ...], before: guards.Guard) -> bool:
        """Whether the call just made left what ``f`` reads besides its arguments as it found
        it.  A call that changes it (a counter in a closure, a list appended to) has a Python
        side effect a compiled program would not repeat: its signature is traced again on
        the next call (a lazily built constant settles there), and runs eagerly once a
        second call changes it too."""
        if before.holds():
            return True
        self.compiled = None  # a compiled function traced again, not served from its cache
        seen = self.seen(key)
        seen.impure += 1
        if seen.impure >= 2:
            self.keep(key, "eager", self.f, self.guard_for(), "f changes what it reads besides its arguments "
                      "on each call (a Python side effect a compiled program does not repeat)")
            self.warn(f"{self.fname} changes what it reads besides its arguments (a closed-over value or list) on each "
                      "call, a Python side effect a compiled program does not repeat",
                      "eagerly (the result is eager execution's)")
        return False

    def untraced_call(self, key: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[Any, Any], failures: list[str],
                      compile_first: bool, like: Any) -> Any:
        """The first call without a trace: the framework's compiler on ``f`` (its first run
        is the call's result), else eager execution."""
        before = self.guard_for()
        if compile_first:
            leaves = pytree.leaves((args, kwargs))
            # A model's leaves the framework cannot take as arguments (an Equinox module's
            # activation function) are held fixed, as eqx.filter_jit does: the signature
            # already names them.
            fn = self.compiled_f() if all(self.arrays.is_input(x) for x in leaves) else \
                _fixed_leaves(self.backend, self.f, self.options, args, kwargs)
            if self.check:  # eager first, on copies, with the draws the compiled call then makes
                a = self.arrays
                copy_args, copy_kwargs = pytree.map_leaves(lambda x: a.copy(x) if a.is_array(x) else x, (args, kwargs))
                with self.arrays.preserved_random_state(like):
                    eager = self.f(*copy_args, **copy_kwargs)
            try:
                out = self.arrays.synchronize(fn(*args, **kwargs))
            except Exception as exc:
                failures.append(f"route 'compile': {type(exc).__name__}: {_first_line(exc)}")
                log.info("jit: %s", failures[-1])
            else:
                if not self.settled(key, before):
                    return out
                guard = self.guard_for()
                self.keep(key, "compile", fn, guard, "the framework's compiler on f (checked against eager "
                          "execution)" if self.check else "the framework's compiler on f")
                log.info("jit: %s runs by route 'compile'", self.fname)
                if self.check:
                    differs = agree(self.backend, out, eager)
                    if differs is not None:
                        self.keep(key, "eager", self.f, guard, "the compiled result differed from eager "
                                  f"execution in {differs}")
                        self.warn(f"the compiled result (route 'compile') differs from eager execution in {differs}",
                                  "eagerly (the result is eager execution's)")
                        return eager
                return out
        result = self.f(*args, **kwargs)  # raises here if eager fails too: the error is f's own
        self.keep(key, "eager", self.f, self.guard_for(), f"compilation failed ({'; '.join(failures)})")
        self.warn(f"{self.backend.name} compilation failed ({'; '.join(failures)}). {AVOID_FALLBACK}",
                  "eagerly (the result is eager execution's)")
        return result

    def first_call(self, key: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Any:
        # Once per signature: nothing the framework would silently truncate (jax, x64 off).
        check_leaves("jit", self.backend, pytree.leaves((args, kwargs)))
        like = next((leaf for leaf in pytree.leaves((args, kwargs)) if self.arrays.is_array(leaf)), None)
        candidates = self.routes_for(like)
        failures: list[str] = []
        if not any(r.startswith("trace") for r in candidates):
            return self.untraced_call(key, args, kwargs, failures, "compile" in candidates, like)
        before = self.guard_for()
        started = time.perf_counter()
        try:
            trace = Traced(self.backend, self.f, args, kwargs)  # the call itself, run once for real
        except Exception as exc:
            failures.append(f"tracing: {type(exc).__name__}: {_first_line(exc)}")
            log.info("jit: %s for %s", failures[-1], self.fname)
            return self.untraced_call(key, args, kwargs, failures, False, like)
        if not self.settled(key, before):
            return trace.result
        log.info("jit: %s traced in %.2f s", self.fname, time.perf_counter() - started)
        if self.route in ("auto", "measure"):  # the rule reads the traced graph (NOTE [jit routes])
            candidates = policy.jit_routes(self.backend.name, like is not None and self.arrays.on_accelerator(like),
                                           trace.trace.output_share(), trace.trace.records_grad())
        guard = self.guard_for()
        trace.trace.adopt(guard.generators + [x for x in pytree.leaves((args, kwargs)) if self.arrays.is_random_key(x)])
        flat = trace.arrays(args, kwargs)
        working = self.working_routes(trace, candidates, flat, args, kwargs, failures)
        r, fn, why = self.pick(working, trace, flat, args, kwargs, like, candidates)
        if failures:
            refused = "; ".join(failures)
            why += f"; refused: {refused}"
            self.warn(f"{self.backend.name} compilation failed or was refused ({refused}). {AVOID_FALLBACK}",
                      f"by route {r!r}" if r != "eager" else "eagerly (the result is eager execution's)")
        log.info("jit: %s runs by route %r", self.fname, r)
        self.keep(key, r, fn, guard, why)
        return trace.result

    def working_routes(self, trace: Traced, candidates: Sequence[str], flat: Any, args: tuple[Any, ...],
                       kwargs: dict[Any, Any], failures: list[str]) -> list[tuple[str, Callable[..., Any]]]:
        """The candidate routes that build, run and agree with the traced call's result, in
        the rule's order (all of them for ``route="measure"``, else the first); what failed
        is added to ``failures``."""
        working: list[tuple[str, Callable[..., Any]]] = []
        for r in candidates:
            if r == "eager":
                working.append((r, self.f))
                continue
            built_at = time.perf_counter()
            try:
                fn = trace.route(self.options if r in ("trace-compile", "trace-cudagraph") else None,
                                 replay=r == "trace-cudagraph")
                with trace.trace.isolated(flat):  # the same draws; leaves the state as the call left it
                    out = self.arrays.synchronize(fn(*args, **kwargs))
            except Exception as exc:
                why = f"route {r!r}: {type(exc).__name__}: {_first_line(exc)}"
                log.info("jit: %s for %s", why, self.fname)
                if not (r == "trace-cudagraph" and self.route == "auto" and isinstance(exc, ValueError)):
                    failures.append(why)  # a replay refused by design (autograd records) is the rule's, not news
                continue
            log.info("jit: %s: route %r built and run in %.2f s", self.fname, r, time.perf_counter() - built_at)
            differs = agree(self.backend, out, trace.result)
            if differs is not None:
                failures.append(f"route {r!r} computed a result that differs from eager execution in {differs}")
                log.info("jit: %s for %s", failures[-1], self.fname)
                continue
            working.append((r, fn))
            if self.route != "measure":  # the rule's order: the first route that works and agrees is kept
                break
        return working

    def pick(self, working: list[tuple[str, Callable[..., Any]]], trace: Traced, flat: Any, args: tuple[Any, ...],
             kwargs: dict[Any, Any], like: Any, candidates: Sequence[str]) -> tuple[str, Callable[..., Any], str]:
        """The route kept among the working ones (the fastest, measured, where several are),
        its function and why."""
        if not working:
            return "eager", self.f, "no route worked"
        if len(working) == 1:
            return (*working[0], f"the first route of the rule's order ({', '.join(candidates)}) that traced, ran "
                    "and agreed with eager execution")

        def timed(fn: Callable[..., Any]) -> Any:
            with trace.trace.isolated(flat):
                return fn(*args, **kwargs)

        with self.arrays.preserved_random_state(like):
            timings = _measure(self.backend, [fn for _, fn in working], timed)
        pick = min(range(len(working)), key=lambda k: timings[k])
        measured = ", ".join(f"{w[0]} {1e3 * t:.3g} ms" for w, t in zip(working, timings))
        log.info("jit: %s measured %s; runs by route %r", self.fname, measured, working[pick][0])
        return (*working[pick], f"measured: {measured}")

    def ready(self, key: tuple[Any, ...]) -> Callable[..., Any] | None:
        """The route kept for ``key``, where what ``f`` reads besides its arguments is as it was."""
        seen = self.signatures.get(key)
        known = None if seen is None else seen.kept
        return known.fn if known is not None and (known.route == "eager" or known.guard.holds()) else None

    def call(self, *args: Any, **kwargs: Any) -> Any:
        key = signature(self.backend, args, kwargs)
        fn = self.ready(key)
        if fn is not None:
            return fn(*args, **kwargs)
        seen = self.signatures.get(key)
        if seen is not None and seen.kept is not None:  # kept, but what f reads besides its arguments changed
            seen.retraced += 1
            if seen.retraced > MAX_RETRACES:
                self.keep(key, "eager", self.f, self.guard_for(), "what f reads besides its arguments "
                          f"changed on {MAX_RETRACES} calls (NOTE [jit guards])")
                self.warn(f"what {self.fname} reads besides its arguments changed on {MAX_RETRACES} calls "
                          "(NOTE [jit guards])", "eagerly from now on")
                return self.f(*args, **kwargs)
            self.compiled = None  # the framework's compiler caches by function: traced again
            log.info("jit: what %s reads besides its arguments changed: traced again", self.fname)
        return self.first_call(key, args, kwargs)



def jit(backend: Backend, f: Callable[..., Any], check: bool = False, options: dict[Any, Any] | None = None, *, route: spec.JitRoute = "auto") -> Callable[..., Any]:
    """``f`` compiled once per argument signature, never wrong where eager is right.

    Returns a function with ``f``'s arguments and results.  ``route`` (NOTE [jit
    routes], :mod:`crossgrad.transforms.compiled`): ``"compile"`` is the framework's
    compiler (``torch.compile`` / ``jax.jit``); on torch, ``"trace"`` replays the
    operations ``f`` dispatched, traced once per signature (shapes, dtypes,
    devices, pytree structure, Python values), and ``"trace-compile"`` compiles that
    graph; ``"auto"`` takes the route the rule picks for the device and the traced graph
    (:func:`crossgrad.transforms.policy.jit_routes`), ``"measure"`` the fastest of them
    timed on the first call.  The first call of a signature
    is the traced call itself (its side effects happen once, its result is eager
    execution's); a traced route whose result differs from it is never kept.  What
    ``f`` reads besides its arguments is guarded: rebinding a closed-over array or
    changing a Python value traces again (NOTE [jit guards]).  When a route fails
    for a signature it warns once (:class:`crossgrad.errors.CompileFallbackWarning`)
    and tries the next, then eager execution; errors that eager execution raises too
    propagate unchanged.  ``check=True`` also compares the ``"compile"`` route's
    first result with an eager one and falls back to eager when they disagree.
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
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, check=check, options=options, route=route)
    option_checks.check_route(name, backend.name, route, backend.builtins.JIT_ROUTES)
    options = dict(options or {})
    split = getattr(f, "_crossgrad_finish", None)
    if split is not None and backend.name == "torch":
        # NOTE [sparse results under jit]: the entries compiled, the sparse tensor built after.
        entries, finish = split
        compiled_entries = jit(backend, entries, check, options, route=route)

        @functools.wraps(f)
        def finished(*args: Any, **kwargs: Any) -> Any:
            return finish(compiled_entries(*args, **kwargs), args, kwargs)

        finished.plan = compiled_entries.plan  # type: ignore[attr-defined]
        return finished
    state = _Jit(backend, f, check, options, route)
    ready, lifted, arrays = state.ready, state.lifted, backend.arrays

    def jitted(*args: Any, **kwargs: Any) -> Any:
        # The steady call, kept to a signature and a guard (a tenth of a small compiled
        # Laplacian's time went to the general path): arrays and containers of them only,
        # so no model to lift; ``signature`` gives this key for such calls.
        key = None if kwargs else steady_signature(backend, args)
        fn = None if key is None else ready(key)
        if fn is not None:
            with pytree.dict_order(backend.name):  # dicts walked in the framework's order
                return fn(*args)
        at = models.positions(backend, args)
        if at:  # NOTE [models as arguments]: the model's parameters are the program's inputs
            jitted_g, args = lifted.of(args, at, lambda g: jit(backend, g, check, options, route=route))
            return jitted_g(*args, **kwargs)
        with pytree.dict_order(backend.name):  # dicts walked in the framework's order, as the transforms do
            return state.call(*args, **kwargs)

    def plan(*args: Any, **kwargs: Any) -> JitPlan:
        """The route a call with these arguments runs by (NOTE [plans]); nothing is computed."""
        at = models.positions(backend, args)
        if at:  # the model's parameters are the program's inputs: the lifted function's plan
            jitted_g, lifted_args = lifted.of(args, at, lambda g: jit(backend, g, check, options, route=route))
            return jitted_g.plan(*lifted_args, **kwargs)  # type: ignore[no-any-return]
        with pytree.dict_order(backend.name):
            key = signature(backend, args, kwargs)
        seen = state.signatures.get(key)
        if seen is not None and seen.kept is not None:
            return JitPlan(state.fname, seen.kept.route, True, seen.kept.why)
        like = next((leaf for leaf in pytree.leaves((args, kwargs)) if arrays.is_array(leaf)), None)
        candidates = state.routes_for(like)
        order = ", ".join(candidates)
        return JitPlan(state.fname, candidates[0], False, f"the rule's order: {order} (policy.jit_routes; on torch "
                       "the traced graph may reorder it)")

    jitted.plan = plan  # type: ignore[attr-defined]
    return jitted
