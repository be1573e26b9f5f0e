"""The differential-operator benchmark: Laplacians against folx, the biharmonic against
nested Laplacians, trace estimators against traceax.

``python -m benchmarks.operators`` (``make operators-bench``; ``make bench`` runs it after
the cases).  One thread per framework (``XLA_FLAGS`` single-threaded Eigen, torch one
intra-op thread), fp32, functions written once per framework:

- Exact batched Laplacian of tanh MLPs (the issue's four; two also written ``x @ W.T`` and
  ``einsum``): ``jax.jit(vmap(trace(jax.hessian)))`` (nested), folx's forward Laplacian
  (``jax.jit(vmap(folx.forward_laplacian(f)))``, where installed), ``cg.jit(cg.batched_laplacian)``
  on jax and on torch.  Goals: crossgrad jax <= 1.0x folx; torch <= 1.2x crossgrad jax.
- Biharmonic of a tanh MLP 5-64-64-1 at B64: nested ``trace(hessian(x -> trace(hessian(u)(x))))``
  (jax.jit; torch.func eager, torch.compile where it compiles) against
  ``cg.jit(cg.batched_biharmonic)``.  Goal: >= 5x faster on both backends.
- Trace estimators at 24 Hessian-vector products, N = 1000, eigenvalues 0.7^i (a random
  rotation): median relative error over 40 seeds (XTrace, XNysTrace, Hutchinson; traceax's
  XTrace where installed), and over 200 seeds how often the truth lies within 1 and 2 reported
  standard errors, and the mean standard error over the spread of the estimates.  Goals:
  XTrace <= 0.7%; coverage within binomial bounds of 68% and 95%; ratio in [0.8, 1.25].

Timings: every route of a case in blocks of calls (about 20 ms each) after two untimed calls,
the routes alternated over ``ROUNDS`` rounds, medians; agreement with the nested route checked
first.  The process is pinned to one core (``pin_one_core``).  ``-k TEXT`` keeps the cases whose name contains TEXT.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import numpy as np

ROUNDS = 7
BLOCKS = 5
LAPLACIANS = {  # name: (sizes, batch, forms)
    "mlp50-192x2-128x2-1-B16": ([50, 192, 192, 128, 128, 1], 16, ("W @ x",)),
    "mlp50-768x2-512x2-1-B8": ([50, 768, 768, 512, 512, 1], 8, ("W @ x",)),
    "mlp16-64-64-1-B64": ([16, 64, 64, 1], 64, ("W @ x", "x @ W.T", "einsum")),
    "pinn2-128x6-3-B256": ([2] + [128] * 6 + [3], 256, ("W @ x", "x @ W.T")),
}


def _weights(sizes: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    ws = [(rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32) for i, o in itertools.pairwise(sizes)]
    bs = [(0.1 * rng.standard_normal(o)).astype(np.float32) for o in sizes[1:]]
    return ws, bs


def mlp(framework: str, sizes: list[int], form: str) -> Callable[..., Any]:
    """A tanh MLP of one point, its layers written ``form``; a scalar for one output."""
    ws, bs = _weights(sizes)
    if framework == "torch":
        import torch

        W = [torch.tensor(w) for w in ws]
        b = [torch.tensor(v) for v in bs]
        tanh, einsum = torch.tanh, torch.einsum
    else:
        import jax.numpy as jnp

        W = [jnp.asarray(w) for w in ws]
        b = [jnp.asarray(v) for v in bs]
        tanh, einsum = jnp.tanh, jnp.einsum
    layer = {"W @ x": lambda w, x: w @ x, "x @ W.T": lambda w, x: x @ w.T,
             "einsum": lambda w, x: einsum("oi,i->o", w, x)}[form]

    def f(x: Any) -> Any:
        for i, (w, c) in enumerate(zip(W, b)):
            x = layer(w, x) + c
            if i < len(W) - 1:
                x = tanh(x)
        return x[0] if x.shape[0] == 1 else x

    return f


def _median_ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    reps = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(BLOCKS):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - t0) / reps)
    return statistics.median(times) * 1e3


def timed(routes: dict[str, Callable[[], Any]], first: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """Median ms per route (alternated rounds) and the first call's seconds (``first``: those
    measured where the route was first called, its compilation included)."""
    first = dict(first or {})
    for name, fn in routes.items():
        t0 = time.perf_counter()
        fn()
        first.setdefault(name, time.perf_counter() - t0)
        fn()
    samples: dict[str, list[float]] = {k: [] for k in routes}
    for _ in range(ROUNDS):
        for name, fn in routes.items():
            samples[name].append(_median_ms(fn))
    return {k: {"ms": statistics.median(v), "spread": (max(v) - min(v)) / 2, "first_s": first[k]}
            for k, v in samples.items()}


def _first(first: dict[str, float], name: str, call: Callable[[], Any]) -> Any:
    """``call()``, its seconds kept as the route's first call (compilation included)."""
    t0 = time.perf_counter()
    out = call()
    first[name] = time.perf_counter() - t0
    return out


def _agree(name: str, got: Any, want: np.ndarray) -> float:
    err = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - want)) / max(np.max(np.abs(want)), 1e-30))
    if err > 2e-3:
        raise AssertionError(f"{name} disagrees with the nested route: relative error {err:.2e}")
    return err


def laplacian_flops(sizes: list[int], batch: int) -> float:
    """The collapsed Taylor route's matmul FLOPs for an MLP's batched Laplacian: every layer
    carries the value, ``n`` first-order rows and the summed second-order row, except the
    first, whose rows are its weight matrix itself (the basis is the identity)."""
    n = sizes[0]
    total = 0.0
    for layer, (i, o) in enumerate(itertools.pairwise(sizes)):
        total += 2.0 * i * o * ((0 if layer == 0 else n) + 2)
    return batch * total


def flop_ceiling() -> dict[str, float]:
    """The measured fp32 matmul rate of each framework on one thread (GFLOP/s): a 1024 x 1024
    product, median of the timing blocks."""
    import jax
    import jax.numpy as jnp
    import torch

    m = 1024
    a = np.random.default_rng(0).standard_normal((m, m)).astype(np.float32)
    aj, at = jnp.asarray(a), torch.tensor(a)
    mm = jax.jit(lambda x: x @ x)
    mm(aj).block_until_ready()
    flops = 2.0 * m ** 3
    return {"jax": flops / _median_ms(lambda: mm(aj).block_until_ready()) / 1e6,
            "torch": flops / _median_ms(lambda: torch.mm(at, at)) / 1e6}


def laplacian_case(name: str, sizes: list[int], batch: int, form: str) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import torch

    import crossgrad as cg

    fj, ft = mlp("jax", sizes, form), mlp("torch", sizes, form)
    x = np.random.default_rng(1).standard_normal((batch, sizes[0])).astype(np.float32)
    xj, xt = jnp.asarray(x), torch.tensor(x)
    nested = jax.jit(jax.vmap(lambda p: jnp.trace(jax.hessian(fj)(p), axis1=-2, axis2=-1)))
    cg_jax, cg_torch = cg.jit(cg.batched_laplacian(fj)), cg.jit(cg.batched_laplacian(ft))
    first: dict[str, float] = {}
    want = np.asarray(_first(first, "nested", lambda: nested(xj).block_until_ready()), dtype=np.float64)
    routes: dict[str, Callable[[], Any]] = {"nested": lambda: nested(xj).block_until_ready()}
    try:
        import folx

        folx_fn = jax.jit(jax.vmap(lambda p: folx.forward_laplacian(fj, sparsity_threshold=0)(p).laplacian))
        _agree("folx", _first(first, "folx", lambda: folx_fn(xj).block_until_ready()), want)
        routes["folx"] = lambda: folx_fn(xj).block_until_ready()
    except ImportError:
        pass
    _agree("crossgrad jax", _first(first, "cg jax", lambda: cg_jax(xj).block_until_ready()), want)
    _agree("crossgrad torch", _first(first, "cg torch", lambda: cg_torch(xt)).numpy(), want)
    routes["cg jax"] = lambda: cg_jax(xj).block_until_ready()
    routes["cg torch"] = lambda: cg_torch(xt)
    return {"case": f"laplacian {name} [{form}]", "kind": "laplacian", "routes": timed(routes, first),
            "flops": laplacian_flops(sizes, batch)}


def biharmonic_case() -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import torch
    from torch.func import hessian, vmap

    import crossgrad as cg

    sizes, batch = [5, 64, 64, 1], 64
    fj, ft = mlp("jax", sizes, "W @ x"), mlp("torch", sizes, "W @ x")
    x = np.random.default_rng(2).standard_normal((batch, 5)).astype(np.float32)
    xj, xt = jnp.asarray(x), torch.tensor(x)

    def lap_j(g: Callable[..., Any]) -> Callable[..., Any]:
        return lambda p: jnp.trace(jax.hessian(g)(p))

    def lap_t(g: Callable[..., Any]) -> Callable[..., Any]:
        return lambda p: torch.trace(hessian(g)(p))

    nested_j = jax.jit(jax.vmap(lap_j(lap_j(fj))))
    nested_t = vmap(lap_t(lap_t(ft)))
    cg_jax, cg_torch = cg.jit(cg.batched_biharmonic(fj)), cg.jit(cg.batched_biharmonic(ft))
    first: dict[str, float] = {}
    want = np.asarray(_first(first, "nested jax", lambda: nested_j(xj).block_until_ready()), dtype=np.float64)
    _agree("crossgrad jax", _first(first, "cg jax", lambda: cg_jax(xj).block_until_ready()), want)
    _agree("crossgrad torch", _first(first, "cg torch", lambda: cg_torch(xt)).numpy(), want)
    _agree("torch nested", _first(first, "nested torch", lambda: nested_t(xt)).numpy(), want)
    routes: dict[str, Callable[[], Any]] = {
        "nested jax": lambda: nested_j(xj).block_until_ready(), "cg jax": lambda: cg_jax(xj).block_until_ready(),
        "nested torch": lambda: nested_t(xt), "cg torch": lambda: cg_torch(xt)}
    note = ""
    try:
        compiled = torch.compile(nested_t)
        _agree("torch nested compiled", _first(first, "nested torch compiled", lambda: compiled(xt)).detach().numpy(),
               want)
        routes["nested torch compiled"] = lambda: compiled(xt)
    except Exception as exc:  # torch.compile of nested torch.func hessians: reported, not fatal
        note = f"torch.compile of the nested route failed: {type(exc).__name__}"
    return {"case": "biharmonic mlp5-64-64-1-B64", "kind": "biharmonic", "routes": timed(routes, first), "note": note}


def estimator_case(framework: str) -> dict[str, Any]:
    import crossgrad as cg
    from crossgrad.testing import frameworks

    n, budget = 1000, 24
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = 0.7 ** np.arange(n)
    a = (q * eig) @ q.T
    truth = float(eig.sum())
    A = frameworks.convert(a, framework, "float64")
    x0 = frameworks.convert(np.zeros(n), framework, "float64")
    H = cg.backend(framework).hessian_operator(lambda x: 0.5 * (x * (A @ x)).sum(), x0)
    out: dict[str, Any] = {"case": f"estimators N1000 0.7^i, {budget} products [{framework}]", "kind": "estimators"}
    for est in ("xtrace", "xnystrace", "hutchinson"):
        print(f"operators: {framework} {est}, 200 seeds", file=sys.stderr, flush=True)
        runs = [H.estimate_trace(est, samples=budget, key=s) for s in range(200)]
        values = np.array([r.estimate for r in runs])
        errors_ = np.array([r.standard_error for r in runs])
        dev = np.abs(values - truth)
        out[est] = {"median_rel_error": float(np.median(dev[:40]) / truth),
                    "within_1se": float(np.mean(dev <= errors_)), "within_2se": float(np.mean(dev <= 2 * errors_)),
                    "se_over_spread": float(errors_.mean() / values.std(ddof=1))}
    if framework == "jax":
        try:
            import jax
            import jax.numpy as jnp
            import lineax
            import traceax

            op = lineax.MatrixLinearOperator(jnp.asarray(a, dtype=jnp.float32), lineax.symmetric_tag)
            sol = traceax.XTraceEstimator()
            vals = [float(sol.estimate(jax.random.key(s), op, budget)[0]) for s in range(40)]
            out["traceax xtrace"] = {"median_rel_error": float(np.median(np.abs(np.array(vals) - truth)) / truth)}
        except Exception as exc:  # not installed, or its API moved: reported
            out["traceax xtrace"] = {"note": f"{type(exc).__name__}: {str(exc)[:80]}"}
    return out


def goals(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    ceiling = next((r["ceiling"] for r in rows if r["kind"] == "ceiling"), {})
    for r in rows:
        t = r.get("routes", {})
        if r["kind"] == "ceiling":
            lines.append(f"- fp32 matmul ceiling, one thread (1024 x 1024): jax {r['ceiling']['jax']:.0f} GFLOP/s, "
                         f"torch {r['ceiling']['torch']:.0f} GFLOP/s")
        if r["kind"] == "laplacian":
            jax_ms, torch_ms = t["cg jax"]["ms"], t["cg torch"]["ms"]
            bound = (f"; bound at the jax ceiling {r['flops'] / ceiling['jax'] / 1e6:.3f} ms, torch's matmul ceiling "
                     f"{ceiling['jax'] / ceiling['torch']:.1f}x below jax's") if ceiling else ""
            if "folx" in t:
                ratio = jax_ms / t["folx"]["ms"]
                lines.append(f"- {r['case']}: crossgrad jax / folx {ratio:.2f}x "
                             f"({'met' if ratio <= 1.0 else 'MISSED'}, goal <= 1.0x); torch / crossgrad jax "
                             f"{torch_ms / jax_ms:.2f}x ({'met' if torch_ms / jax_ms <= 1.2 else 'MISSED'}, goal <= 1.2x)"
                             + bound)
            else:
                lines.append(f"- {r['case']}: folx not installed; torch / crossgrad jax {torch_ms / jax_ms:.2f}x")
        elif r["kind"] == "biharmonic":
            sj = t["nested jax"]["ms"] / t["cg jax"]["ms"]
            best_t = min(v["ms"] for k, v in t.items() if k.startswith("nested torch"))
            st = best_t / t["cg torch"]["ms"]
            lines.append(f"- {r['case']}: jax {sj:.1f}x faster than nested, torch {st:.1f}x faster than its fastest "
                         f"nested route ({'met' if min(sj, st) >= 5 else 'MISSED'}, goal >= 5x)")
        elif r["kind"] == "estimators":
            x = r["xtrace"]
            ok = (x["median_rel_error"] <= 0.007 and 0.61 <= x["within_1se"] <= 0.75 and x["within_2se"] >= 0.92
                  and 0.8 <= x["se_over_spread"] <= 1.25)
            lines.append(f"- {r['case']}: XTrace {100 * x['median_rel_error']:.2f}% median error, truth within 1 / 2 "
                         f"SE {100 * x['within_1se']:.0f}% / {100 * x['within_2se']:.0f}%, mean SE / spread "
                         f"{x['se_over_spread']:.2f} ({'met' if ok else 'MISSED'})")
    return lines


def report(rows: list[dict[str, Any]], header: list[str]) -> list[str]:
    md = ["# crossgrad differential-operator benchmark", ""] + [f"- {h}" for h in header] + ["", "## Goals", ""]
    md += [*goals(rows), "", "## Timings (ms, median; +- half the range over rounds; first call s)", "",
           "| case | route | ms | +- | first call s (compile) | GFLOP/s (collapsed-Taylor count) | % of matmul ceiling |",
           "|---|---|---|---|---|---|---|"]
    ceiling = next((r["ceiling"] for r in rows if r["kind"] == "ceiling"), {})
    for r in rows:
        for k, v in r.get("routes", {}).items():
            rate = cells = ""
            if "flops" in r:
                gflops = r["flops"] / v["ms"] / 1e6
                rate = f"{gflops:.1f}"
                top = ceiling.get("torch" if "torch" in k else "jax")
                cells = f"{100 * gflops / top:.0f}%" if top else ""
            md.append(f"| {r['case']} | {k} | {v['ms']:.3f} | {v['spread']:.3f} | {v['first_s']:.2f} | {rate} | {cells} |")
        if r.get("note"):
            md.append(f"| {r['case']} | note | {r['note']} | | |")
    md += ["", "## Estimators (24 products)", "", "| case | estimator | median rel. error | within 1 SE | within 2 SE | "
           "mean SE / spread |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "estimators":
            continue
        for k in ("xtrace", "xnystrace", "hutchinson", "traceax xtrace"):
            v = r.get(k)
            if v is None:
                continue
            if "note" in v:
                md.append(f"| {r['case']} | {k} | {v['note']} | | | |")
                continue
            cells = [f"{100 * v['median_rel_error']:.2f}%"] + [
                f"{100 * v[c]:.0f}%" if c in v else "" for c in ("within_1se", "within_2se")] + [
                f"{v['se_over_spread']:.2f}" if "se_over_spread" in v else ""]
            md.append(f"| {r['case']} | {k} | " + " | ".join(cells) + " |")
    return md


def pin_one_core() -> str:
    """The process held to one core: jax 0.10's CPU runtime spreads a matmul over every core
    whatever ``XLA_FLAGS`` say (measured: a 1024 x 1024 product at 375 GFLOP/s unpinned, 203
    pinned, on two cores), so that "one thread per framework" holds only pinned."""
    try:
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    except (AttributeError, OSError):  # not Linux: the flags alone
        return "not pinned (no sched_setaffinity)"


def main(argv: list[str]) -> int:
    from benchmarks import harness

    device = harness.device_name()  # the machine's cores, before the process is held to one
    pinned = pin_one_core()  # before either framework starts its threads
    import torch

    torch.set_num_threads(1)
    from benchmarks import report as bench_report

    selection = argv[argv.index("-k") + 1] if "-k" in argv else ""
    jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("matmul ceiling", lambda: {"case": "matmul ceiling", "kind": "ceiling", "ceiling": flop_ceiling()})]
    for name, (sizes, batch, forms) in LAPLACIANS.items():
        for form in forms:
            jobs.append((f"laplacian {name} [{form}]",
                         lambda s=sizes, b=batch, fm=form, nm=name: laplacian_case(nm, s, b, fm)))
    jobs.append(("biharmonic mlp5-64-64-1-B64", biharmonic_case))
    jobs += [(f"estimators [{fw}]", lambda fw=fw: estimator_case(fw)) for fw in ("jax", "torch")]
    chosen = [(n, j) for n, j in jobs if selection in n or n == "matmul ceiling"]
    start = time.monotonic()
    rows = []
    for i, (name, job) in enumerate(chosen):
        print(f"[{i + 1}/{len(chosen)}] {name}", file=sys.stderr, flush=True)
        try:
            rows.append(job())
        except Exception as exc:  # a failure is a result of the benchmark
            rows.append({"case": name, "kind": "failed", "note": f"{type(exc).__name__}: {str(exc)[:160]}"})
    versions = harness.versions()
    for peer in ("folx", "traceax"):
        try:
            from importlib.metadata import version

            versions[peer] = version(peer)
        except Exception:
            versions[peer] = "not installed"
    stamp = dt.date.today().isoformat()
    header = [f"device: {device} (one thread per framework, {pinned})", f"date: {stamp}; selection: "
              f"{selection or f'all {len(chosen)} cases'}",
              "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), "fp32 timings; estimators: torch float64, jax float32 (x64 off)",
              f"timing: routes alternated over {ROUNDS} rounds of {BLOCKS} blocks (~20 ms each), medians",
              f"benchmark time: {time.monotonic() - start:.0f} s"]
    md = report(rows, header)
    print("\n".join(md))
    name = f"operators-{bench_report._slug(device)}-{stamp}" + (
        f"-part-{bench_report._slug(selection)[:40]}" if selection else "")
    bench_report.RUNS.mkdir(exist_ok=True)
    (bench_report.RUNS / f"{name}.md").write_text("\n".join(md))
    (bench_report.RUNS / f"{name}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1, default=str))
    print(f"\nwritten: {bench_report.RUNS / name}.md", file=sys.stderr)
    return int(any(r["kind"] == "failed" for r in rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
