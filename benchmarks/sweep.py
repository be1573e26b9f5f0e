"""The speed sweep: a fixed, named list of generated functions nobody tunes for.

``python -m benchmarks.sweep`` (``make sweep``; ``make bench`` runs it after the cases).
Ten networks (tanh / softplus / sin MLPs, widths 32-256, depths 1-3, batches 8-1024,
scalar and vector outputs; batched Hessians, Jacobians and Laplacians), each written in
four forms of a dense layer: ``W @ x``, ``x @ W.T``, ``F.linear`` (jax writes it
``x @ W.T``) and ``einsum``: 40 functions, the same mathematics four times.  Per
function: torch ``cg.jit`` and jax ``cg.jit`` alternated call by call (the median of the
paired ratios), torch's eager default, the first call of each (tracing and compilation,
reported apart), the route torch took, and the agreement of the two frameworks.

Goals (issue: torch at jax's speed on any function): torch ``cg.jit`` within 1.5x of jax
``cg.jit`` where jax takes >= 0.5 ms, within 0.1 ms below that; torch eager within 3x of
jitted jax where jax takes >= 2 ms.  ``CROSSGRAD_SWEEP_THREADS=1`` pins the process to
one core (both frameworks single-threaded); ``-k TEXT`` keeps the functions whose name
contains TEXT (a part, written under its own name).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

FORMS = ("W @ x", "x @ W.T", "F.linear", "einsum")
ACTIVATIONS = ("tanh", "softplus", "sin")
PAIRS = 41
PAIR_SECONDS = 1.5
TOLERANCE = 2e-4  # fp32, relative to the result's largest magnitude


@dataclass(frozen=True)
class Net:
    transform: str  # batched_hessian, batched_jacobian, batched_laplacian
    act: str
    sizes: tuple[int, ...]
    batch: int

    @property
    def label(self) -> str:
        short = {"batched_hessian": "hess", "batched_jacobian": "jac", "batched_laplacian": "lap"}[self.transform]
        return f"{short} {self.act} {'-'.join(map(str, self.sizes))} B{self.batch}"


NETS = (
    Net("batched_hessian", "tanh", (8, 128, 128, 1), 128),
    Net("batched_hessian", "softplus", (16, 64, 64, 1), 256),
    Net("batched_hessian", "tanh", (64, 256, 256, 1), 32),
    Net("batched_hessian", "sin", (2, 64, 64, 1), 1024),
    Net("batched_hessian", "softplus", (32, 256, 1), 300),
    Net("batched_hessian", "tanh", (8, 32, 8), 128),
    Net("batched_jacobian", "tanh", (32, 128, 32), 64),
    Net("batched_jacobian", "sin", (16, 64, 64, 16), 512),
    Net("batched_laplacian", "tanh", (16, 64, 64, 1), 64),
    Net("batched_laplacian", "softplus", (2, 64, 64, 64, 1), 512),
)


@dataclass(frozen=True)
class Function:
    net: Net
    form: str

    @property
    def name(self) -> str:
        return f"{self.net.label} [{self.form}]"


FUNCTIONS = tuple(Function(net, form) for net in NETS for form in FORMS)


def weights(net: Net) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(sum(net.sizes) + net.batch)
    return [(rng.standard_normal((b, a)) / np.sqrt(a), 0.1 * rng.standard_normal(b))
            for a, b in zip(net.sizes[:-1], net.sizes[1:])]


def build(fn: Function, framework: str) -> Any:
    """The per-sample function ``f(params, x)`` in ``framework``, its layers written in ``fn.form``."""
    if framework == "torch":
        import torch

        act = {"tanh": torch.tanh, "softplus": torch.nn.functional.softplus, "sin": torch.sin}[fn.net.act]
        linear, einsum = torch.nn.functional.linear, torch.einsum
    else:
        import jax
        import jax.numpy as jnp

        act = {"tanh": jnp.tanh, "softplus": jax.nn.softplus, "sin": jnp.sin}[fn.net.act]

        def linear(h: Any, w: Any, b: Any) -> Any:
            return h @ w.T + b

        einsum = jnp.einsum
    form = fn.form

    def layer(w: Any, b: Any, h: Any) -> Any:
        if form == "W @ x":
            return w @ h + b
        if form == "x @ W.T":
            return h @ w.T + b
        if form == "F.linear":
            return linear(h, w, b)
        return einsum("ij,j->i", w, h) + b

    scalar = fn.net.sizes[-1] == 1

    def f(params: Any, x: Any) -> Any:
        h = x
        for k, (w, b) in enumerate(params):
            h = layer(w, b, h)
            if k < len(params) - 1:
                h = act(h)
        return h[0] if scalar else h

    return f


def inputs(fn: Function, framework: str) -> tuple[Any, Any]:
    from benchmarks import harness

    rng = np.random.default_rng(fn.net.batch)
    x = rng.standard_normal((fn.net.batch, fn.net.sizes[0]))
    return harness.to_device(framework, (weights(fn.net), x))


class Routes(logging.Handler):
    """The route ``cg.jit`` says it runs (the ``crossgrad`` logger)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.taken = ""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "runs by route" in message:
            self.taken = message.rsplit("route", 1)[-1].strip(" '")


def _first(framework: str, fn: Any, args: tuple) -> tuple[Any, float]:
    from benchmarks import harness

    t0 = time.perf_counter()
    out = harness.sync(framework, fn(*args))
    return out, time.perf_counter() - t0


def measure(fn: Function) -> dict[str, Any]:
    """One function: first calls, agreement, paired torch/jax jit times, torch eager."""
    import crossgrad as cg
    from benchmarks import harness

    row: dict[str, Any] = {"name": fn.name, "net": fn.net.label, "form": fn.form, "status": "ok"}
    sides: dict[str, tuple[Any, tuple]] = {}
    handler = Routes()
    logger = logging.getLogger("crossgrad")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    outs = {}
    try:
        for framework in ("torch", "jax"):
            ns = cg.backend(framework)
            transform = getattr(ns, fn.net.transform)(build(fn, framework), 1, (None, 0))
            args = inputs(fn, framework)
            handler.taken = ""
            jitted = ns.jit(transform)
            outs[framework], row[f"{framework}_first_s"] = _first(framework, jitted, args)
            if framework == "torch":
                row["torch_route"] = handler.taken or "?"
                _, row["eager_first_s"] = _first(framework, transform, args)
                row["eager_s"] = _median(framework, transform, args)
            sides[framework] = (jitted, args)
    except Exception as exc:  # a failure is a result of the sweep
        row["status"] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
        return row
    finally:
        logger.removeHandler(handler)
    row["rel_err"] = harness.agreement(outs["torch"], outs["jax"])
    if not row["rel_err"] <= TOLERANCE:
        row["status"] = f"WRONG: rel err {row['rel_err']:.1e}"
    times: dict[str, list[float]] = {"torch": [], "jax": []}
    for k in range(PAIRS):
        for framework in (("torch", "jax") if k % 2 == 0 else ("jax", "torch")):
            jitted, args = sides[framework]
            t0 = time.perf_counter()
            harness.sync(framework, jitted(*args))
            times[framework].append(time.perf_counter() - t0)
        if sum(times["torch"]) + sum(times["jax"]) > PAIR_SECONDS and k >= 4:
            break
    row.update(torch_s=float(np.median(times["torch"])), jax_s=float(np.median(times["jax"])),
               ratio=float(np.median([a / b for a, b in zip(times["torch"], times["jax"])])), rounds=len(times["jax"]))
    return row


def _median(framework: str, fn: Any, args: tuple, seconds: float = 0.5, most: int = 9) -> float:
    from benchmarks import harness

    times: list[float] = []
    while len(times) < most and (sum(times) < seconds or len(times) < 3):
        t0 = time.perf_counter()
        harness.sync(framework, fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def judged(row: dict[str, Any]) -> dict[str, Any]:
    """The goals, per row: jit parity (1.5x, or 0.1 ms below 0.5 ms) and eager within 3x."""
    if row["status"] != "ok" or "ratio" not in row:
        return {**row, "jit_goal": "n/a", "eager_goal": "n/a"}
    jax_s, torch_s = row["jax_s"], row["torch_s"]
    jit_ok = row["ratio"] <= 1.5 if jax_s >= 5e-4 else torch_s - jax_s <= 1e-4
    eager = row["eager_s"] / jax_s
    eager_ok = "n/a (jax < 2 ms)" if jax_s < 2e-3 else ("met" if eager <= 3 else "missed")
    return {**row, "eager_ratio": eager, "jit_goal": "met" if jit_ok else "missed", "eager_goal": eager_ok}


def _ms(x: float | None) -> str:
    return "" if x is None else f"{1e3 * x:.3g}"


def report(rows: list[dict[str, Any]], header: list[str]) -> list[str]:
    """The markdown report: every function, then per form, then the worst case."""
    from tabulate import tabulate

    table = [[r["name"], _ms(r.get("torch_s")), _ms(r.get("jax_s")), f"{r['ratio']:.2f}" if "ratio" in r else "",
              _ms(r.get("eager_s")), f"{r['eager_ratio']:.1f}" if "eager_ratio" in r else "", r.get("torch_route", ""),
              f"{r.get('torch_first_s', 0):.1f} / {r.get('jax_first_s', 0):.1f}", r["jit_goal"], r["eager_goal"],
              r["status"]] for r in rows]
    headers = ["function", "torch cg.jit ms", "jax cg.jit ms", "torch/jax (paired)", "torch eager ms",
               "eager/jax jit", "torch route", "first call s torch / jax", "jit goal", "eager goal", "status"]
    md = ["# crossgrad sweep: the same mathematics written four ways", "", *[f"- {h}" for h in header], "",
          tabulate(table, headers=headers, tablefmt="github", disable_numparse=True), "", "## Per form", ""]
    per_form = []
    for form in FORMS:
        rs = [r for r in rows if r["form"] == form and "ratio" in r]
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["ratio"])
        per_form.append([form, len(rs), f"{np.median([r['ratio'] for r in rs]):.2f}",
                         f"{worst['ratio']:.2f} ({worst['net']})",
                         f"{sum(r['jit_goal'] == 'met' for r in rs)}/{len(rs)}",
                         f"{max(r['eager_ratio'] for r in rs):.1f}"])
    md += [tabulate(per_form, headers=["form", "functions", "median torch/jax", "worst torch/jax", "jit goal met",
                                       "worst eager/jax"], tablefmt="github", disable_numparse=True), ""]
    timed = [r for r in rows if "ratio" in r]
    if timed:
        worst = max(timed, key=lambda r: r["ratio"])
        md += [f"Worst case: {worst['name']}: torch cg.jit {_ms(worst['torch_s'])} ms, jax cg.jit "
               f"{_ms(worst['jax_s'])} ms, {worst['ratio']:.2f}x (paired); jit goal met on "
               f"{sum(r['jit_goal'] == 'met' for r in timed)} of {len(timed)} functions; "
               f"{sum(r['status'] != 'ok' for r in rows)} failed or wrong.", ""]
    return md


def main(argv: list[str]) -> int:
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # First calls as a user meets them: inductor starts with an empty cache of its own.
    fresh_cache = "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    if fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="crossgrad-sweep-inductor-")
    threads = os.environ.get("CROSSGRAD_SWEEP_THREADS")
    if threads and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:int(threads)]))
    import torch

    from benchmarks import harness
    from benchmarks import report as bench_report

    if threads:
        torch.set_num_threads(int(threads))
    selection = argv[argv.index("-k") + 1] if "-k" in argv else ""
    chosen = [fn for fn in FUNCTIONS if selection in fn.name]
    start = time.monotonic()
    rows = []
    with harness.pinned_precision():
        for i, fn in enumerate(chosen):
            rows.append(judged(measure(fn)))
            r = rows[-1]
            print(f"[{i + 1}/{len(chosen)}] {fn.name}: torch {_ms(r.get('torch_s'))} ms, jax {_ms(r.get('jax_s'))} ms, "
                  f"ratio {r.get('ratio', float('nan')):.2f}, route {r.get('torch_route', '')}, {r['status']}",
                  file=sys.stderr, flush=True)
    device = harness.device_name()
    stamp = dt.date.today().isoformat()
    header = [f"device: {device}", f"date: {stamp}; selection: {selection or f'all {len(FUNCTIONS)} functions'}",
              "versions: " + ", ".join(f"{k} {v}" for k, v in harness.versions().items()),
              f"threads: {threads + ' (pinned to one core)' if threads == '1' else threads or 'default'}",
              f"precision: {harness.PRECISION_NOTE}",
              f"timing: torch and jax cg.jit alternated call by call (up to {PAIRS} pairs, {PAIR_SECONDS} s), medians; "
              "eager: median of up to 9 calls; first call: tracing and compilation included, reported apart "
              f"({'inductor cache empty at the start of the run' if fresh_cache else 'inductor cache as found'})",
              f"sweep time: {time.monotonic() - start:.0f} s"]
    md = report(rows, header)
    print("\n".join(md))
    name = f"sweep-{bench_report._slug(device)}-{stamp}" + (f"-threads{threads}" if threads else "") + \
        (f"-part-{bench_report._slug(selection)[:40]}" if selection else "")
    bench_report.RUNS.mkdir(exist_ok=True)
    (bench_report.RUNS / f"{name}.md").write_text("\n".join(md))
    (bench_report.RUNS / f"{name}.json").write_text(json.dumps({"header": header, "rows": rows}, indent=1,
                                                                  default=str))
    print(f"\nwritten: {bench_report.RUNS / name}.md (keep it: python -m benchmarks.report --keep "
          f"{bench_report.RUNS / name}.json)", file=sys.stderr)
    return int(any(r["status"].startswith("WRONG") for r in rows))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
