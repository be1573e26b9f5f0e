"""The sparse benchmark: sparse Jacobians and Hessians against crossgrad's dense routes and asdex.

``python -m benchmarks.sparse`` (``make sparse-bench``; ``make bench`` runs it after the
cases and the sweep).  Cases (fp32, the functions of :mod:`crossgrad.testing.sparse_problems`,
written once for both frameworks): the 2-D Brusselator's Jacobian (N = 16, 32, 64, and 96, 128, 160
for the scaling fit), the chained Rosenbrock Hessian (n = 1024 ... 65536), a
finite-difference Poisson residual's Jacobian, a convolution layer's input Jacobian.

Per case: crossgrad's sparse route under ``cg.jit`` on jax and on torch, asdex's
``jax.jit(asdex.jacobian(f, x))`` / ``jax.jit(asdex.hessian(f, x))`` where asdex is installed
(BCOO output on both sides: decompression in every timing), crossgrad's dense ``cg.jit``
route up to n = 4096, timed in alternated blocks of calls (each call after one of its own
framework), medians; the
first call (detection, coloring and compilation) apart; colors; the compiled program's
temporary memory on jax (XLA's memory analysis; torch on a CPU reports none); and the
measured bound: the number of colors times one compiled JVP (HVP) of ``f``.

Goals (issue: sparse Jacobians and Hessians): jax within 1.2x of asdex per call with no
more colors and a first call no slower; torch ``cg.jit`` within 1.5x of crossgrad's jax,
>= 50x faster than the dense route at n = 2048 (Brusselator N = 32) and >= 150x at n = 4096
(Rosenbrock); per-call cost linear in n at fixed colors (log-log slope over n >= 8192
within 1.5x of 1).  ``-k TEXT`` keeps the cases whose name contains TEXT; ``--render RUN.json`` writes a run's
report again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np

ROUNDS = 21
BLOCK = 5
ROUND_SECONDS = 4.0
DENSE_LIMIT = 4096  # the dense route is timed up to this many inputs (n^2 floats, compiled once)


def cases() -> list[Any]:
    from crossgrad.testing import sparse_problems as sp

    return ([sp.brusselator(n) for n in (16, 32, 64, 96, 128, 160)] + [sp.rosenbrock(n) for n in
            (1024, 4096, 8192, 16384, 32768, 65536)] + [sp.poisson(64), sp.convolution(32, 3, 8)])


def _sync(framework: str, out: Any) -> Any:
    if framework == "jax":
        import jax

        return jax.block_until_ready(out)
    return out


def _first(framework: str, fn: Any, x: Any) -> float:
    t0 = time.perf_counter()
    _sync(framework, fn(x))
    return time.perf_counter() - t0


def _temp_bytes(fn: Any, x: Any) -> int | None:
    try:
        stats = fn.lower(x).compile().memory_analysis()
        return int(stats.output_size_in_bytes + stats.temp_size_in_bytes)
    except Exception:  # not every jax build reports it
        return None


def measure(problem: Any) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    import torch

    import crossgrad as cg
    from crossgrad.testing import sparse_problems as sp

    order = problem.order
    x_np = np.random.default_rng(0).standard_normal(problem.shape).astype(np.float32)
    xs = {"jax": jnp.asarray(x_np), "torch": torch.tensor(x_np)}
    fs = {fw: problem.build(sp.ops(fw)) for fw in ("jax", "torch")}
    n = x_np.size
    row: dict[str, Any] = {"case": problem.name, "n": n, "kind": "Hessian" if order == 2 else "Jacobian",
                           "status": "ok"}
    sparse_of = cg.sparse_jacobian if order == 1 else cg.sparse_hessian
    fns: dict[str, tuple[str, Any]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = sparse_of(fs["jax"]).plan(xs["jax"])
        row.update(colors=plan.colors, mode=plan.mode, nnz=plan.pattern.nnz, plan_s=plan.seconds)
        for fw in ("jax", "torch"):
            fn = cg.jit(sparse_of(fs[fw]))
            row[f"cg_{fw}_first_s"] = _first(fw, fn, xs[fw])
            fns[f"cg {fw}"] = (fw, fn)
        row["cg_jax_temp"] = _temp_bytes(jax.jit(getattr(cg.jax, sparse_of.__name__)(fs["jax"])), xs["jax"])
        try:
            import asdex

            t0 = time.perf_counter()
            made = (asdex.jacobian if order == 1 else asdex.hessian)(fs["jax"], xs["jax"])
            peer = jax.jit(made)
            _sync("jax", peer(xs["jax"]))
            row["asdex_first_s"] = time.perf_counter() - t0
            coloring = (asdex.jacobian_coloring(fs["jax"], xs["jax"]) if order == 1
                        else asdex.hessian_coloring(fs["jax"], xs["jax"]))
            row["asdex_colors"] = int(coloring.num_colors)
            row["asdex_temp"] = _temp_bytes(peer, xs["jax"])
            fns["asdex"] = ("jax", peer)
        except ImportError:
            row["asdex_first_s"] = None
        if n <= DENSE_LIMIT:
            dense_of = cg.jacobian if order == 1 else cg.hessian
            for fw in ("jax", "torch"):
                fn = cg.jit(dense_of(fs[fw]))
                row[f"dense_{fw}_first_s"] = _first(fw, fn, xs[fw])
                fns[f"dense {fw}"] = (fw, fn)
        # The bound: one compiled product of f, times the colors.
        if order == 1:
            single = jax.jit(lambda x: jax.jvp(fs["jax"], (x,), (x,))[1])
        else:
            single = jax.jit(lambda x: jax.jvp(jax.grad(fs["jax"]), (x,), (x,))[1])
        _sync("jax", single(xs["jax"]))
        fns["one product"] = ("jax", single)
        # Agreement: torch's entries against jax's.
        a = np.asarray(fns["cg jax"][1](xs["jax"]).data)
        b = fns["cg torch"][1](xs["torch"]).coalesce().values().numpy()
        row["rel_err"] = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-30))
        if not row["rel_err"] <= 2e-4:
            row["status"] = f"WRONG: torch and jax differ by {row['rel_err']:.1e}"
    # Blocks of BLOCK calls per implementation, the blocks alternated: drift hits all alike, and
    # each timed call follows a call of its own framework (a torch call right after a jax one,
    # each framework's worker threads waking, measured up to 2x slower than in a block).
    times: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for k in range(ROUNDS):
        for name in (names if k % 2 == 0 else names[::-1]):
            fw, fn = fns[name]
            _sync(fw, fn(xs[fw]))
            block = []
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                _sync(fw, fn(xs[fw]))
                block.append(time.perf_counter() - t0)
            times[name].append(float(np.median(block)))
        if k >= 4 and sum(map(sum, times.values())) * BLOCK > ROUND_SECONDS:
            break
    noisy = []
    for name, ts in times.items():
        row[name.replace(" ", "_") + "_s"] = float(np.median(ts))
        q1, q3 = np.percentile(ts, [25, 75])
        if name != "one product" and q3 - q1 >= 0.5 * np.median(ts):
            noisy.append(name)
    if noisy and row["status"] == "ok":
        row["status"] = f"ok, NOISY ({', '.join(noisy)}: IQR >= 50% of the median)"
    row["bound_s"] = row.pop("one_product_s") * row["colors"]
    if "asdex" in times:
        row["jax_vs_asdex"] = float(np.median([a / b for a, b in zip(times["cg jax"], times["asdex"])]))
    row["torch_vs_jax"] = float(np.median([a / b for a, b in zip(times["cg torch"], times["cg jax"])]))
    if "dense torch" in times:
        row["dense_over_sparse_torch"] = row["dense_torch_s"] / row["cg_torch_s"]
        row["dense_over_sparse_jax"] = row["dense_jax_s"] / row["cg_jax_s"]
    row["rounds"] = len(times["cg jax"])
    return row


def _ms(x: Any) -> str:
    return "" if x is None else f"{1e3 * x:.3g}"


def _x(x: Any) -> str:
    return "" if x is None else f"{x:.2f}"


def _mb(x: Any) -> str:
    return "" if x is None else f"{x / 2**20:.2f}"


def slopes(rows: list[dict[str, Any]]) -> list[tuple[str, float, str, int]]:
    """Per family, the log-log slope over n >= 8192 of the per-call time per color (the colors
    of a grid family vary by a few with its size: 10 to 12 for the Brusselator)."""
    out = []
    for family in ("brusselator", "rosenbrock"):
        for side in ("cg_jax_s", "cg_torch_s", "asdex_s"):
            pts = [(r["n"], r[side] / r["colors"]) for r in rows
                   if r["case"].startswith(family) and r["n"] >= 8192 and side in r]
            if len(pts) >= 2:
                slope = float(np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0])
                out.append((f"{family} {side.removesuffix('_s').replace('_', ' ')}", slope,
                            "met" if slope <= 1.5 else "missed", len(pts)))
    return out


def goals(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    with_peer = [r for r in rows if "jax_vs_asdex" in r]
    if with_peer:
        worst = max(with_peer, key=lambda r: r["jax_vs_asdex"])
        met = sum(r["jax_vs_asdex"] <= 1.2 for r in with_peer)
        fewer = sum(r["colors"] <= r["asdex_colors"] for r in with_peer)
        first = sum(r["cg_jax_first_s"] <= r["asdex_first_s"] for r in with_peer)
        lines += [f"- jax per call within 1.2x of asdex: {met} of {len(with_peer)} cases "
                  f"(worst {worst['case']}: {worst['jax_vs_asdex']:.2f}x, {_ms(worst['cg_jax_s'])} against "
                  f"{_ms(worst['asdex_s'])} ms; bound {_ms(worst['bound_s'])} ms)",
                  f"- colors no more than asdex's: {fewer} of {len(with_peer)}",
                  f"- first call (detection, coloring, compilation) no slower than asdex's: {first} of {len(with_peer)}"]
    else:
        lines.append("- asdex is not installed: the jax goals against it are not measured (pip install asdex)")
    worst = max(rows, key=lambda r: r["torch_vs_jax"])
    met = sum(r["torch_vs_jax"] <= 1.5 for r in rows)
    lines.append(f"- torch cg.jit within 1.5x of crossgrad's jax: {met} of {len(rows)} cases (worst {worst['case']}: "
                 f"{worst['torch_vs_jax']:.2f}x, {_ms(worst['cg_torch_s'])} against {_ms(worst['cg_jax_s'])} ms)")
    for name, goal in (("brusselator_32", 50), ("rosenbrock_4096", 150)):
        r = next((r for r in rows if r["case"] == name and "dense_over_sparse_torch" in r), None)
        if r is not None:
            ratio = r["dense_over_sparse_torch"]
            lines.append(f"- torch sparse against dense at {name}: {ratio:.0f}x (goal >= {goal}x: "
                         f"{'met' if ratio >= goal else 'missed'}; dense {_ms(r['dense_torch_s'])} ms, sparse "
                         f"{_ms(r['cg_torch_s'])} ms)")
    for family, slope, verdict, count in slopes(rows):
        lines.append(f"- {family}: per-call time per color ~ n^{slope:.2f} over n >= 8192 ({count} sizes; goal <= 1.5: "
                     f"{verdict})")
    return lines


def report(rows: list[dict[str, Any]], header: list[str]) -> list[str]:
    from tabulate import tabulate

    timed = [r for r in rows if "cg_jax_s" in r]
    table = [[r["case"], r["kind"], r["n"], r.get("nnz", ""), f"{r.get('colors', '')} ({r.get('mode', '')})",
              r.get("asdex_colors", ""), _ms(r.get("cg_jax_s")), _ms(r.get("asdex_s")), _x(r.get("jax_vs_asdex")),
              _ms(r.get("cg_torch_s")), _x(r.get("torch_vs_jax")), _ms(r.get("dense_jax_s")),
              _ms(r.get("dense_torch_s")), _ms(r.get("bound_s")),
              " / ".join(f"{r[k]:.2f}" if r.get(k) is not None else "-" for k in
                         ("cg_jax_first_s", "cg_torch_first_s", "asdex_first_s")),
              f"{_mb(r.get('cg_jax_temp'))} / {_mb(r.get('asdex_temp'))}", r["status"]] for r in rows]
    headers = ["case", "matrix", "n", "nnz", "colors (mode)", "asdex colors", "cg jax ms", "asdex ms",
               "cg jax / asdex", "cg torch ms", "torch / jax", "dense jax ms", "dense torch ms", "bound ms",
               "first call s: cg jax / cg torch / asdex", "jax out+temp MB: cg / asdex", "status"]
    return ["# crossgrad sparse benchmark: sparse Jacobians and Hessians", "", *[f"- {h}" for h in header], "",
            tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), "", "## Goals", "",
            *(goals(timed) if timed else ["- no case was timed"]), ""]


def main(argv: list[str]) -> int:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    fresh_cache = "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    if fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="crossgrad-sparse-inductor-")
    from benchmarks import harness
    from benchmarks import report as bench_report

    if "--render" in argv:  # a run's report written again from its JSON (the report's layout changed)
        run = json.loads(open(argv[argv.index("--render") + 1]).read())
        print("\n".join(report(run["rows"], run["header"])))
        return 0
    selection = argv[argv.index("-k") + 1] if "-k" in argv else ""
    chosen = [p for p in cases() if selection in p.name]
    start = time.monotonic()
    rows = []
    with harness.pinned_precision():
        for i, problem in enumerate(chosen):
            try:
                rows.append(measure(problem))
            except Exception as exc:  # a failure is a result of the benchmark
                rows.append({"case": problem.name, "n": int(np.prod(problem.shape)), "kind": "",
                             "status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"})
            r = rows[-1]
            print(f"[{i + 1}/{len(chosen)}] {problem.name}: cg jax {_ms(r.get('cg_jax_s'))} ms, asdex "
                  f"{_ms(r.get('asdex_s'))} ms, cg torch {_ms(r.get('cg_torch_s'))} ms, colors {r.get('colors')}, "
                  f"{r['status']}", file=sys.stderr, flush=True)
    device = harness.device_name()
    stamp = dt.date.today().isoformat()
    try:
        from importlib.metadata import version

        import asdex  # noqa: F401

        peer = f"asdex {version('asdex')}"
    except ImportError:
        peer = "asdex not installed"
    header = [f"device: {device}", f"date: {stamp}; selection: {selection or f'all {len(chosen)} cases'}",
              "versions: " + ", ".join(f"{k} {v}" for k, v in harness.versions().items()) + f", {peer}",
              f"precision: {harness.PRECISION_NOTE}; fp32",
              f"timing: every implementation of a case in blocks of {BLOCK} calls after one untimed, the blocks "
              f"alternated (up to {ROUNDS} rounds, {ROUND_SECONDS} s), medians of the block medians, BCOO / sparse COO output (decompression included); first call: "
              "detection, coloring and compilation, reported apart "
              f"({'inductor cache empty at the start' if fresh_cache else 'inductor cache as found'}); "
              "bound: colors x one compiled JVP (HVP) of f on jax",
              f"benchmark time: {time.monotonic() - start:.0f} s"]
    md = report(rows, header)
    print("\n".join(md))
    name = f"sparse-{bench_report._slug(device)}-{stamp}" + (f"-part-{bench_report._slug(selection)[:40]}" if selection else "")
    bench_report.RUNS.mkdir(exist_ok=True)
    (bench_report.RUNS / f"{name}.md").write_text("\n".join(md))
    (bench_report.RUNS / f"{name}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1, default=str))
    print(f"\nwritten: {bench_report.RUNS / name}.md (keep it: python -m benchmarks.report --keep "
          f"{bench_report.RUNS / name}.json)", file=sys.stderr)
    return int(any(r["status"].startswith("WRONG") for r in rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
