"""What is timed: per case and framework, the raw framework call, crossgrad's built-in
and composed implementations, each Hessian strategy, ``auto``, chunked, the loop, and
compiled variants.  Each entry is ``(label, options, build)``; ``build(f, problem)``
returns the function of the problem's arguments to time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import crossgrad as cg
from benchmarks.cases import Case
from benchmarks.kinds import KINDS
from benchmarks.labels import AUTO, EAGER, JIT


@dataclass(frozen=True)
class Impl:
    label: str
    build: Callable[[Callable, Any, tuple], Callable]
    compiled: bool = False  # torch.compile (torch) or jax.jit (jax)
    tags: tuple[str, ...] = field(default=())  # what the row is, for the report: "raw", "auto", "builtin", "loop"
    peers: tuple[Impl, ...] = field(default=())  # for "auto-check": the implementations auto competes with
    skip: str = ""  # why it cannot run on this machine (reported as skipped)
    # How the row is measured (test_bench.MEASURES): timed alone, or a pair alternated call by
    # call ("paired": the overhead of one route over another; "auto-check": auto against the
    # fastest of its peers; "versus": torch's cg.jit against jax's).
    measure: str = "timed"

    def __post_init__(self) -> None:
        if self.measure != "timed" and self.measure not in self.tags:  # the report reads rows by their tags
            object.__setattr__(self, "tags", (*self.tags, self.measure))


def _cg(framework: str, kind: str, **options: Any) -> Callable:
    """crossgrad's transform of ``kind`` with ``options``, for one problem."""

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        return KINDS[kind].transform(framework, f, problem, **options)

    return build


def _jit(framework: str, kind: str, route: str = "auto") -> Callable:
    """``cg.jit`` around crossgrad's auto transform: the compiled route a user takes."""
    inner = _cg(framework, kind)

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        return cg.backend(framework).jit(inner(f, problem, args), route=route)

    return build


def _jax_jit(kind: str) -> Callable:
    """``jax.jit`` around crossgrad's auto transform: what ``cg.jit`` is measured against."""
    inner = _cg("jax", kind)

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        import jax

        return jax.jit(inner(f, problem, args))

    return build


def _raw(framework: str, kind: str, variant: str = "") -> Callable:
    """The framework's own call for ``kind`` (``variant``: the kind's, e.g. a Jacobian's mode), without crossgrad."""

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        return KINDS[kind].raw(framework, f, problem, variant)

    return build


def _notebook_loop_torch(f: Callable, problem: Any, args: tuple) -> Callable:
    """The seed notebook's method: one ``torch.autograd.grad`` per output row (and per
    sample, for a batch), no vectorization."""
    import torch

    k = problem.argnums

    def jacobian_of(sample_args: list) -> Any:
        x = sample_args[k].detach().requires_grad_()
        sample_args = list(sample_args)
        sample_args[k] = x
        out = f(*sample_args).reshape(-1)
        rows = [torch.autograd.grad(out, x, e, retain_graph=True)[0] for e in torch.eye(out.numel(), dtype=out.dtype, device=out.device)]
        return torch.stack(rows).reshape(*f(*sample_args).shape, *x.shape)

    def run(*a: Any) -> Any:
        if problem.in_axes is None:
            return jacobian_of(list(a))
        axes = problem.in_axes
        size = next(x.shape[0] for x, ax in zip(a, axes) if ax is not None)
        return torch.stack([jacobian_of([x if ax is None else x[b] for x, ax in zip(a, axes)]) for b in range(size)])

    return run


def _pair(first: Callable, second: Callable) -> Callable:
    def build(f: Callable, problem: Any, args: tuple) -> tuple[Callable, Callable]:
        return first(f, problem, args), second(f, problem, args)

    return build


def _spread(framework: str, kind: str, count: int) -> Callable:
    """crossgrad's auto transform with the batch spread over ``count`` devices: jax keeps
    the result sharded; torch gathers it on every rank (its cost included)."""

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        ns = cg.backend(framework)
        if framework == "jax":
            import jax

            devices = jax.devices()[:count]
            return getattr(ns, kind)(f, problem.argnums, problem.in_axes, devices=devices)
        if count == 1:
            return getattr(ns, kind)(f, problem.argnums, problem.in_axes)
        return getattr(ns, kind)(f, problem.argnums, problem.in_axes, devices="all", gather=True)

    return build


def scaling(case: Case, framework: str) -> list[Impl]:
    """The raw call (the reference), then the batch over 1, 2, 4 ... and all devices."""
    jit = framework == "jax"
    label, variant = KINDS[case.kind].raw_variants[0]
    out = [Impl(label, _raw(framework, case.kind, variant), jit, ("raw",))]
    available = cg.backend(framework).backend.distributed.participants("all")
    counts = sorted({1, available, *(2 ** k for k in range(1, 10) if 2 ** k < available)})
    if available == 1:
        counts.append(2)
    why = ("only one jax device (more GPUs, or XLA_FLAGS=--xla_force_host_platform_device_count=N for "
           "virtual CPU devices sharing the same cores)" if framework == "jax" else
           "one process: torch spreads over torch.distributed ranks, run under torchrun --nproc-per-node=N")
    for n in counts:
        # jax's spread compiles inside (jit partitioning); timed as called.
        out.append(Impl(f"cg auto devices={n}", _spread(framework, case.kind, n), False, ("scaling",),
                        skip=why if n > available else ""))
    return out


def implementations(case: Case, framework: str, basis: int, on_gpu: bool) -> list[Impl]:
    """The rows of one case on one framework: the kind's raw calls and crossgrad variants
    (:data:`benchmarks.kinds.KINDS`), ``auto``, chunked and loop where the kind has them,
    then the rows every kind has (overhead pairs, the auto check, ``cg.jit``...)."""
    if case.scaling:
        return scaling(case, framework)
    kind = KINDS[case.kind]
    jit = framework == "jax"  # jax implementations are timed under jax.jit
    out = [Impl(label, _raw(framework, case.kind, variant), jit, ("raw",)) for label, variant in kind.raw_variants]
    out += [Impl(label, _cg(framework, case.kind, **options), jit, (tag,)) for label, options, tag in kind.variants]
    out.append(Impl(AUTO, _cg(framework, case.kind), jit, ("auto",)))
    if kind.chunked:
        chunk = max(1, basis // 4)
        out.append(Impl(f"{AUTO} chunk={chunk}", _cg(framework, case.kind, chunk_size=chunk), jit, ("chunked",)))
    if kind.loop and case.loop:
        out.append(Impl("cg loop", _cg(framework, case.kind, mode="loop"), jit, ("loop",)))
        if framework == "torch":
            out.append(Impl("notebook loop", _notebook_loop_torch, False, ("loop", "raw")))
    # crossgrad's overhead, measured as paired differences: the raw call and crossgrad's
    # route to the same built-in, alternated call by call (see test_bench.py).
    raw_first = next(i for i in out if "raw" in i.tags)
    builtin_first = next(i for i in out if "builtin" in i.tags)
    out.append(Impl(f"overhead: {builtin_first.label} vs {raw_first.label}", _pair(raw_first.build, builtin_first.build),
                    jit, measure="paired"))
    # auto against the fastest of its peers (same regime), alternated call by call once
    # every peer has been timed: the check "auto within 1.1x of the fastest".
    peers = tuple(i for i in out if i.measure == "timed" and not {"loop", "chunked", "jit"} & set(i.tags))
    out.append(Impl("auto vs the fastest", _cg(framework, case.kind), jit, (), peers, measure="auto-check"))
    # cg.jit compiles by itself (its first call includes tracing and compiling).
    out.append(Impl(JIT, _jit(framework, case.kind), False, ("jit",)))
    if framework == "jax":
        # What cg.jit adds to jax.jit of the same transform, alternated call by call.
        out.append(Impl(f"jit overhead: {JIT} vs jax.jit", _pair(_jax_jit(case.kind), _jit(framework, case.kind)), False,
                        ("jit-overhead",), measure="paired"))
        out.append(Impl(EAGER, _cg(framework, case.kind), False, ("eager",)))
        # The user's question "which backend": torch's cg.jit against jax's, alternated call by call.
        out.append(Impl(f"torch {JIT} vs jax {JIT}", _jit(framework, case.kind), False, measure="versus"))
        return out
    out.append(Impl(f"{JIT} route=trace", _jit(framework, case.kind, "trace"), False, ("jit",)))
    if case.compile or (on_gpu and case.compile_gpu):
        # What a torch user gets from torch.compile of torch.func (crossgrad's own compiled
        # route is cg jit: torch.compile of a forward-over-forward Hessian can kill the
        # process, NOTE [jit routes]).
        first_raw = next(i for i in out if "raw" in i.tags)
        out.append(Impl(first_raw.label + " + torch.compile", first_raw.build, True, ("raw", "compiled")))
    return out
