"""One call of a function traced into a torch graph, for ``cg.jit``'s traced routes.

NOTE [one traced call]: the trace *is* the first call.  ``make_fx`` runs the function once,
for real (its side effects on closed-over state happen once, and the outputs it computes
are eager execution's, autograd history included): they are the first call's result.  The
graph recorded, simplified (NOTE [identity products]), is what later calls replay.  What
makes a replay differ from a call, and how it is met:

* random generators: a generator the function makes itself (``torch.Generator()
  .manual_seed(s)`` inside ``f``, crossgrad's int ``key``) is made anew on every eager
  call, so each replay restarts it from the state it had at its first draw; the global
  generators and the caller's generators advance on each replay as on each call.  A
  generator is the caller's where it is one of those the caller can reach (the arguments,
  what the function refers to: ``crossgrad.transforms.guards``; the default generators),
  else the function's own.
* checking a route against the traced call: :meth:`Trace.isolated` restores, on exit,
  everything the graph writes (its inputs and the closed-over tensors written in place,
  NOTE [graph aliasing]) and every generator it draws from, and starts the generators
  where the traced call started them (the same draws), so a check leaves the state as the
  one call left it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.fx
from torch.utils import _pytree as tree_util
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from crossgrad.backends.torch import simplify


class _Watch(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's class is unannotated
    """Each generator an operation draws from, with its state before its first draw, and
    each tensor from outside the call (an input, a closed-over tensor) that an operation
    writes into.  Writes are seen by their values, not only by the schemas or version
    counters: ``native_batch_norm`` updates its running statistics with neither saying so."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.first: dict[int, tuple[torch.Generator, torch.Tensor]] = {}
        self.written: set[int] = set()
        self._made: set[int] = set()  # the tensors the call computed (held below, so no id is reused)
        self._held: list[Any] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[Any, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        g = kwargs.get("generator")
        if isinstance(g, torch.Generator) and id(g) not in self.first:
            self.first[id(g)] = (g, g.get_state())
        outside = [t for t in tree_util.tree_leaves((args, kwargs))
                   if isinstance(t, torch.Tensor) and id(t) not in self._made and id(t) not in self.written]
        view = any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)
        with _disable_current_modes():  # the watch's own operations stay out of the trace
            before = [] if view else [(t, t._version, t.detach().clone()) for t in outside]
        out = func(*args, **kwargs)
        with _disable_current_modes():
            for t, version, value in before:
                if t._version != version or not torch.equal(t.detach(), value):
                    self.written.add(id(t))
        made = [t for t in tree_util.tree_leaves(out) if isinstance(t, torch.Tensor)]
        self._made.update(id(t) for t in made)
        self._held.append(made)
        return out


def _global_states(devices: list[torch.device]) -> list[Any]:
    states: list[Any] = [torch.get_rng_state()]
    states += [torch.cuda.get_rng_state(d) for d in devices]
    return states


def _set_global_states(devices: list[torch.device], states: list[Any]) -> None:
    torch.set_rng_state(states[0])
    for d, s in zip(devices, states[1:]):
        torch.cuda.set_rng_state(s, d)


def _same_generator(a: torch.Generator, b: torch.Generator) -> bool:
    """Whether two generator objects draw from one generator (torch hands out several
    Python objects for one): a draw from ``a`` moves ``b``.  Both are left as found."""
    if a is b:
        return True
    if a.device != b.device:
        return False
    sa, sb = a.get_state(), b.get_state()
    if not torch.equal(sa, sb):
        return False
    torch.empty(1, device=a.device).uniform_(generator=a)
    moved = not torch.equal(b.get_state(), sb)
    a.set_state(sa)
    b.set_state(sb)
    return moved


def _kept(tensors: list[Any]) -> Callable[[], None]:
    """Copies of ``tensors`` now, and a function that writes them back (the one way this
    module undoes a replay's writes)."""
    saved = [x.detach().clone() for x in tensors]

    def put_back() -> None:
        with torch.no_grad():
            for x, v in zip(tensors, saved):
                x.copy_(v)

    return put_back


def _default_generators(devices: list[torch.device]) -> list[torch.Generator]:
    gens = [torch.default_generator]
    gens += [torch.cuda.default_generators[d.index or 0] for d in devices]
    return gens


class Trace:
    """``f`` traced at its example inputs (flat tensors).

    ``outputs`` are the traced call's own results; ``graph`` the simplified graph;
    :meth:`run` replays it with the function's own generators restarted.
    """

    def __init__(self, f: Callable[..., Any], args: tuple[Any, ...]):
        from torch.fx.experimental.proxy_tensor import make_fx

        results: list[Any] = []
        generators = _Watch()
        devices = sorted({a.device for a in args if isinstance(a, torch.Tensor) and a.is_cuda}, key=str)
        self._devices = devices
        self._start = _global_states(devices)

        def recorded(*xs: Any) -> Any:
            with generators:
                out = f(*xs)
            results[:] = [out]
            return out

        before = [a.detach().clone() for a in args]  # the inputs as the call found them
        traced = make_fx(recorded, tracing_mode="real")(*args)
        self.example = args
        self.outputs: tuple[Any, ...] = tuple(results[0])
        self._end = _global_states(devices)
        self.graph = simplified(traced, args, generators)
        # NOTE [non-finite guard]: a call whose flag is set is computed by the graph as traced.
        self._flag = getattr(self.graph, simplify.NON_FINITE_FLAG, None) if self.graph is not traced else None
        self._as_traced = traced if self._flag is not None else None
        self._firsts = list(generators.first.values())
        generators._held.clear()
        self._own: list[tuple[torch.Generator, Any]] = []
        self._theirs: list[tuple[torch.Generator, Any, Any]] = [(g, s, g.get_state()) for g, s in self._firsts]
        self._written = _written_inputs(self.graph, {k for k, a in enumerate(args) if id(a) in generators.written},
                                        generators.written)
        self._inputs_before = {i: before[i] for i in self._written[0]}  # only those the call writes

    def output_share(self) -> float:
        """The share of the elements the graph computes that are its outputs: near 1 where
        the graph writes its answer in a few operations (a Jacobian's basis product), small
        where it computes intermediates it could fuse (NOTE [jit routes] in
        :mod:`crossgrad.transforms.policy`)."""
        returned: list[Any] = []
        computed = 0
        for node in self.graph.graph.nodes:
            if node.op == "output":
                torch.fx.node.map_arg(node.args, returned.append)
            value = node.meta.get("val")
            schema = getattr(node.target, "_schema", None)
            if node.op == "call_function" and isinstance(value, torch.Tensor) and schema is not None \
                    and not any(r.alias_info is not None for r in schema.returns):  # views compute nothing
                computed += value.numel()
        written = sum(v.numel() for n in returned if isinstance(v := n.meta.get("val"), torch.Tensor))
        return min(1.0, written / computed) if computed else 1.0

    def records_grad(self) -> bool:
        """Whether autograd records through a replay: grad mode on and an input or a tensor
        the graph holds requires grad (a training step's loss)."""
        held = [getattr(self.graph, n.target) for n in self.graph.graph.nodes if n.op == "get_attr"]
        return torch.is_grad_enabled() and any(
            isinstance(t, torch.Tensor) and t.requires_grad for t in (*self.example, *held))

    def adopt(self, known: list[Any]) -> None:
        """Tell the caller's generators (``known``: those found in the arguments and in what
        the function refers to; the default ones join them) from the function's own."""
        known = [g for g in known if isinstance(g, torch.Generator)] + _default_generators(self._devices)
        self._own, self._theirs = [], []
        for g, start in self._firsts:
            if any(_same_generator(g, k) for k in known):
                self._theirs.append((g, start, g.get_state()))
            else:
                self._own.append((g, start))

    def restart(self) -> None:
        """The function's own generators back at their first draw (each call makes them anew)."""
        for g, state in self._own:
            g.set_state(state)

    def wrap(self, run: Callable[..., Any]) -> Callable[..., Any]:
        """``run`` (the graph or its compiled form) with :meth:`restart` before each call,
        and computed again by the graph as traced where the simplified graph's flag says a
        factor it no longer reads was not finite (NOTE [non-finite guard]): the draws
        replayed, and every tensor the graph writes as the call found it."""
        if not self._own and self._flag is None:
            return run
        flag, as_traced = self._flag, self._as_traced
        assert flag is None or as_traced is not None  # both set together

        def restarted(*xs: Any) -> Any:
            self.restart()
            if flag is None:
                return run(*xs)
            with self._rerun_point(xs) as again:
                out = run(*xs)
                if not bool(flag):
                    return out
                again()
            self.restart()
            assert as_traced is not None
            return as_traced(*xs)

        return restarted

    def _writes(self, args: tuple[Any, ...]) -> list[Any]:
        """The tensors a replay with ``args`` writes: its inputs and closed-over tensors
        (the non-finite flag aside, which every replay sets anew)."""
        written = [x for i, x in enumerate(args) if i in self._written[0]]
        return written + [getattr(self.graph, name) for name in self._written[1] if name != simplify.NON_FINITE_FLAG]

    @contextlib.contextmanager
    def _rerun_point(self, args: tuple[Any, ...]) -> Iterator[Callable[[], None]]:
        """Yields a function that puts the generators and the tensors the graph writes back
        where this call found them."""
        put_back = _kept(self._writes(args))
        states = _global_states(self._devices), [g.get_state() for g, _, _ in self._theirs]

        def again() -> None:
            put_back()
            _set_global_states(self._devices, states[0])
            for (g, _, _), st in zip(self._theirs, states[1]):
                g.set_state(st)

        yield again

    @contextlib.contextmanager
    def isolated(self, args: tuple[Any, ...]) -> Iterator[None]:
        """A replay inside leaves no trace: the draws start where the traced call's did, the
        inputs it writes hold what the traced call found in them, and on exit every tensor
        the graph writes and every generator is as the traced call left it (NOTE [one
        traced call]).  Closed-over tensors the graph writes start where the call left
        them: a result that depends on them differs, and that route is not kept."""
        put_back = _kept(self._writes(args))
        with torch.no_grad():
            for i, x in self._inputs_before.items():
                args[i].copy_(x)
        _set_global_states(self._devices, self._start)
        for g, start, _ in self._theirs:
            g.set_state(start)
        try:
            yield
        finally:
            put_back()
            _set_global_states(self._devices, self._end)
            for g, _, end in self._theirs:
                g.set_state(end)


def _written_inputs(gm: torch.fx.GraphModule, positions: set[int] | None = None,
                    ids: set[int] | None = None) -> tuple[set[int], list[str]]:
    """The positions of the graph's inputs and the names of its constants that it writes
    into (through any view): by the schemas (NOTE [graph aliasing]), and those the traced
    call was seen to write (``positions`` of the inputs, ``ids`` of tensors)."""
    aliases = simplify.Aliases(gm.graph)
    positions, ids = set(positions or ()), ids or set()
    names = []
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for k, node in enumerate(placeholders):
        if aliases.written(node):
            positions.add(k)
    for node in gm.graph.nodes:
        value = getattr(gm, str(node.target), None) if node.op == "get_attr" else None
        if isinstance(value, torch.Tensor) and (aliases.written(node) or id(value) in ids):
            names.append(str(node.target))
    return positions, names


def simplified(traced: Any, args: tuple[Any, ...], watch: _Watch) -> Any:
    """``traced`` with its products with identity, diagonal and zero matrices rewritten
    (NOTE [identity products], :mod:`crossgrad.backends.torch.simplify`), where the
    rewritten graph reproduces ``traced``'s outputs at ``args``; else ``traced``.  Both
    run with every generator at the same state,
    and every tensor either writes restored afterwards (``watch``: what the traced call
    drew from and wrote)."""
    import torch.fx

    graph = torch.fx.Graph()
    graph._codegen = traced.graph._codegen  # the calling convention (pytree arguments and outputs)
    graph.output(graph.graph_copy(traced.graph, {}))
    candidate = torch.fx.GraphModule(traced, graph)
    if not simplify.simplify(candidate):
        return traced
    positions, names = _written_inputs(traced, {k for k, a in enumerate(args) if id(a) in watch.written},
                                       watch.written)
    put_back = _kept([x for i, x in enumerate(args) if i in positions] + [getattr(traced, n) for n in names])
    pairs = list(watch.first.values())
    devices = sorted({a.device for a in args if isinstance(a, torch.Tensor) and a.is_cuda}, key=str)
    before = _global_states(devices), [g.get_state() for g, _ in pairs]

    def run(gm: Any) -> Any:
        _set_global_states(devices, before[0])
        for (g, _), s in zip(pairs, before[1]):
            g.set_state(s)
        try:
            with torch.no_grad():
                return gm(*args)
        finally:
            put_back()

    try:
        expected = run(traced)
        got = run(candidate)
    except Exception:  # a rewrite this pass got wrong: the traced graph as recorded
        return traced
    finally:
        _set_global_states(devices, before[0])
        for (g, _), s in zip(pairs, before[1]):
            g.set_state(s)
    return candidate if simplify.agree(expected, got) else traced
