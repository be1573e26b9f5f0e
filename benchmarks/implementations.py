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

STRATEGIES = ("fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd")


@dataclass(frozen=True)
class Impl:
    label: str
    build: Callable[[Callable, Any, tuple], Callable]
    compiled: bool = False  # torch.compile (torch) or jax.jit (jax)
    tags: tuple[str, ...] = field(default=())  # "raw", "auto", "builtin", "loop"
    peers: tuple[Impl, ...] = field(default=())  # for "auto-check": the implementations auto competes with
    skip: str = ""  # why it cannot run on this machine (reported as skipped)


def _cg(framework: str, kind: str, **options: Any) -> Callable:
    """crossgrad's transform of ``kind`` with ``options``, for one problem."""

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        ns = cg.backend(framework)
        if kind == "hvp":
            # The direction is the parameter pytree itself: no constant is captured.
            return lambda *a: ns.hvp(f, a, (a[0],), problem.argnums, **options)
        if kind.startswith("batched"):
            # A batched transform names its per-sample chunks basis_chunk_size.
            named = {("basis_chunk_size" if k == "chunk_size" else k): v for k, v in options.items()}
            return getattr(ns, kind)(f, problem.argnums, problem.in_axes, **named)
        return getattr(ns, kind)(f, problem.argnums, **options)

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


def _framework(name: str) -> dict[str, Callable]:
    """The raw framework transforms a user would call, under one set of names."""
    if name == "torch":
        import torch.func as tf

        return {"jacrev": tf.jacrev, "jacfwd": tf.jacfwd, "hessian": tf.hessian, "grad": tf.grad, "jvp": tf.jvp,
                "vmap": lambda f, axes: tf.vmap(f, in_dims=axes)}
    import jax

    return {"jacrev": jax.jacrev, "jacfwd": jax.jacfwd, "hessian": jax.hessian, "grad": jax.grad, "jvp": jax.jvp,
            "vmap": lambda f, axes: jax.vmap(f, in_axes=axes)}


def _raw(framework: str, kind: str, mode: str = "rev") -> Callable:
    """The framework's own call for ``kind``, without crossgrad."""

    def build(f: Callable, problem: Any, args: tuple) -> Callable:
        fw = _framework(framework)
        if kind == "batched_laplacian":
            # The nested baseline: the trace of the framework's batched Hessian.
            hess = fw["vmap"](fw["hessian"](f, argnums=problem.argnums), problem.in_axes)

            def trace(*a: Any) -> Any:
                h = hess(*a)
                n = h.shape[-1]
                return (h * _eye_like(framework, n, h)).sum((-2, -1))

            return trace
        if kind == "hvp":
            return lambda p, *rest: fw["jvp"](lambda q: fw["grad"](f)(q, *rest), (p,), (p,))[1]
        transform = fw["jac" + mode] if "jacobian" in kind else fw["hessian"]
        fn = transform(f, argnums=problem.argnums)
        return fw["vmap"](fn, problem.in_axes) if kind.startswith("batched") else fn

    return build


def _eye_like(framework: str, n: int, like: Any) -> Any:
    if framework == "torch":
        import torch

        return torch.eye(n, dtype=like.dtype, device=like.device)
    import jax.numpy as jnp

    return jnp.eye(n, dtype=like.dtype)


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
    out = [Impl("raw hessian" if "hessian" in case.kind else "raw rev", _raw(framework, case.kind), jit, ("raw",))]
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
    if case.scaling:
        return scaling(case, framework)
    kind = case.kind
    def raw(kind: str, mode: str = "rev") -> Callable:
        return _raw(framework, kind, mode)

    jit = framework == "jax"  # jax implementations are timed under jax.jit
    out: list[Impl] = []
    chunk = max(1, basis // 4)
    if "jacobian" in kind:
        out += [Impl(f"raw {m}", raw(kind, m), jit, ("raw",)) for m in ("rev", "fwd")]
        for m in ("rev", "fwd"):
            for impl in ("builtin", "composed"):
                out.append(Impl(f"cg {m} {impl}", _cg(framework, kind, mode=m, impl=impl), jit, (impl,)))
        out.append(Impl("cg auto", _cg(framework, kind), jit, ("auto",)))
        out.append(Impl(f"cg auto chunk={chunk}", _cg(framework, kind, chunk_size=chunk), jit, ("chunked",)))
        if case.loop:
            out.append(Impl("cg loop", _cg(framework, kind, mode="loop"), jit, ("loop",)))
            if framework == "torch":
                out.append(Impl("notebook loop", _notebook_loop_torch, False, ("loop", "raw")))
    elif kind == "batched_laplacian":
        out.append(Impl("raw trace(hessian)", raw(kind), jit, ("raw",)))
        out += [Impl(f"cg {impl}", _cg(framework, kind, impl=impl), jit, (impl,)) for impl in ("builtin", "composed")]
        out.append(Impl("cg auto", _cg(framework, kind), jit, ("auto",)))
        out.append(Impl(f"cg auto chunk={chunk}", _cg(framework, kind, chunk_size=chunk), jit, ("chunked",)))
    elif kind == "hvp":
        out += [Impl("raw jvp(grad)", raw(kind), jit, ("raw",))]
        out += [Impl(f"cg {impl}", _cg(framework, kind, impl=impl), jit, (impl,)) for impl in ("builtin", "composed")]
        out.append(Impl("cg auto", _cg(framework, kind), jit, ("auto",)))
    else:
        out.append(Impl("raw hessian", raw(kind), jit, ("raw",)))
        out.append(Impl("cg fwd-rev builtin", _cg(framework, kind, strategy="fwd-rev", impl="builtin"), jit, ("builtin",)))
        out += [Impl(f"cg {s} composed", _cg(framework, kind, strategy=s, impl="composed"), jit, ("composed",))
                for s in STRATEGIES]
        out.append(Impl("cg auto", _cg(framework, kind), jit, ("auto",)))
        out.append(Impl(f"cg auto chunk={chunk}", _cg(framework, kind, chunk_size=chunk), jit, ("chunked",)))
    # crossgrad's overhead, measured as paired differences: the raw call and crossgrad's
    # route to the same built-in, alternated call by call (see test_bench.py).
    raw_first = next(i for i in out if "raw" in i.tags)
    builtin_first = next(i for i in out if "builtin" in i.tags)
    out.append(Impl(f"overhead: {builtin_first.label} vs {raw_first.label}", _pair(raw_first.build, builtin_first.build),
                    jit, ("paired",)))
    # auto against the fastest of its peers (same regime), alternated call by call once
    # every peer has been timed: the check "auto within 1.1x of the fastest".
    peers = tuple(i for i in out if not {"loop", "chunked", "paired", "jit"} & set(i.tags))
    out.append(Impl("auto vs the fastest", _cg(framework, kind), jit, ("auto-check",), peers))
    # cg.jit compiles by itself (its first call includes tracing and compiling).
    out.append(Impl("cg jit", _jit(framework, kind), False, ("jit",)))
    if framework == "jax":
        # What cg.jit adds to jax.jit of the same transform, alternated call by call.
        out.append(Impl("jit overhead: cg jit vs jax.jit", _pair(_jax_jit(kind), _jit(framework, kind)), False,
                        ("paired", "jit-overhead")))
        out.append(Impl("cg auto (eager, no jit)", _cg(framework, kind), False, ("eager",)))
        # The user's question "which backend": torch's cg.jit against jax's, alternated call by call.
        out.append(Impl("torch cg jit vs jax cg jit", _jit(framework, kind), False, ("versus",)))
        return out
    out.append(Impl("cg jit route=trace", _jit(framework, kind, "trace"), False, ("jit",)))
    if case.compile or (on_gpu and case.compile_gpu):
        # What a torch user gets from torch.compile of torch.func (crossgrad's own compiled
        # route is cg jit: torch.compile of a forward-over-forward Hessian can kill the
        # process, NOTE [jit routes]).
        first_raw = next(i for i in out if "raw" in i.tags)
        out.append(Impl(first_raw.label + " + torch.compile", first_raw.build, True, ("raw", "compiled")))
    return out
