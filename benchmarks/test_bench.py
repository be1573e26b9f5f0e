"""One benchmark per (case, framework, implementation), timed with pytest-benchmark.

The first call is timed on its own (compilation included) and its result checked
against the raw framework call of the same case (and torch's against jax's); a
result that disagrees fails the run, so a fast wrong answer never shows as a win.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks import harness, implementations
from crossgrad.testing import frameworks

TOLERANCE = 2e-4  # fp32, relative to the result's largest magnitude
TIME_PER_IMPL_S = 5.0


def release_other_cases(run, case_name):
    """Inputs and references of finished cases are dropped, and torch's cached blocks
    returned, before a new case allocates (torch and jax share the device)."""
    for store in (run.inputs, run.references, run.built):
        for k in [k for k in store if k[0] != case_name]:
            del store[k]
    free_device_cache(run)


def auto_against_fastest(run, row, case, framework, impl, f, problem, args):
    """``auto`` and the fastest of its peers in this run, alternated call by call; the
    median of the paired time ratios is how far auto is from the best choice."""
    by_label = {p.label: p for p in impl.peers}
    timed = [r for r in run.rows if r["case"] == case.name and r["framework"] == framework
             and r.get("median_s") and r["status"] == "ok" and r["impl"] in by_label and r["impl"] != "cg auto"]
    if not timed:
        row["status"] = "skipped: no peer was timed"
        return
    best = by_label[min(timed, key=lambda r: r["median_s"])["impl"]]
    fns = (best.build(f, problem, args), impl.build(f, problem, args))
    paired_overhead(row, framework, impl, fns, args)
    row["versus"] = best.label


def paired_overhead(row, framework, impl, fns, args, pairs=41):
    """The raw call and crossgrad's route to the same built-in, alternated call by call
    (the order flipping every pair), so that drifts of a shared machine hit both alike:
    the median of the paired differences is crossgrad's overhead."""
    raw, ours = (harness.first_call(framework, impl, fn, args)[0] for fn in fns)
    diffs, base, ratios = [], [], []
    for k in range(pairs):
        order = (raw, ours) if k % 2 == 0 else (ours, raw)
        times = {}
        for fn in order:
            t0 = time.perf_counter()
            harness.sync(framework, fn(*args))
            times[fn] = time.perf_counter() - t0
        diffs.append(times[ours] - times[raw])
        base.append(times[raw])
        ratios.append(times[ours] / times[raw])
        if sum(base) > TIME_PER_IMPL_S:
            break
    row.update(overhead_s=float(np.median(diffs)), raw_s=float(np.median(base)), ratio=float(np.median(ratios)),
               rounds=len(diffs))


def torch_versus_jax(run, row, case, problem, impl):
    """torch's ``cg.jit`` and jax's on the same case, alternated call by call: the median of
    the paired time ratios (torch / jax) answers "which backend" without the drift of a
    shared machine between two separately timed rows."""
    sides = {fw: run.inputs.get((case.name, fw)) for fw in ("torch", "jax")}
    if any(v is None for v in sides.values()):
        row["status"] = "skipped: needs both frameworks in this run"
        return
    fns = {}
    for fw, (f, args) in sides.items():
        fn = run.built.get((case.name, fw, "cg jit"))  # compiled already by the "cg jit" row
        if fn is None:
            fn = harness.first_call(fw, impl, implementations._jit(fw, case.kind)(f, problem, args), args)[0]
        fns[fw] = (fn, args)
    times = {"torch": [], "jax": []}
    for k in range(41):
        for fw in (("torch", "jax") if k % 2 == 0 else ("jax", "torch")):
            fn, args = fns[fw]
            t0 = time.perf_counter()
            harness.sync(fw, fn(*args))
            times[fw].append(time.perf_counter() - t0)
        if sum(times["torch"]) + sum(times["jax"]) > 2 * TIME_PER_IMPL_S:
            break
    ratios = [a / b for a, b in zip(times["torch"], times["jax"])]
    row.update(ratio=float(np.median(ratios)), torch_s=float(np.median(times["torch"])),
               jax_s=float(np.median(times["jax"])), rounds=len(ratios))


def free_device_cache(run):
    if run.gpu:
        import torch

        torch.cuda.empty_cache()


def test_implementation(benchmark, run, case, problem, framework, impl, basis):
    key = (case.name, framework)
    if key not in run.inputs:
        release_other_cases(run, case.name)
        f = problem.build(frameworks.ops(framework))
        run.inputs[key] = (f, harness.to_device(framework, problem.inputs(np.random.default_rng(0))))
    f, args = run.inputs[key]
    skip = impl.skip or (case.exclude_on_gpu if run.gpu else case.exclude_on_cpu).get(impl.label)
    if run.deadline is not None and time.monotonic() > run.deadline:
        skip = "the run's time budget (CROSSGRAD_BENCH_BUDGET_S) was spent"
    if skip:
        run.rows.append({"case": case.name, "problem": problem.name, "kind": case.kind, "framework": framework,
                         "impl": impl.label, "tags": list(impl.tags), "basis": basis, "status": f"skipped: {skip}"})
        return
    row = {"case": case.name, "problem": problem.name, "kind": case.kind, "framework": framework,
           "impl": impl.label, "tags": list(impl.tags), "measure": impl.measure, "basis": basis, "status": "ok",
           "speedup_goal": case.speedup_goal}
    run.rows.append(row)
    if impl.measure == "paired":
        paired_overhead(row, framework, impl, impl.build(f, problem, args), args)
        return
    if impl.measure == "versus":
        torch_versus_jax(run, row, case, problem, impl)
        return
    if impl.measure == "auto-check":
        auto_against_fastest(run, row, case, framework, impl, f, problem, args)
        return
    try:
        fn = impl.build(f, problem, args)
        fn, out, first, peak = harness.first_call(framework, impl, fn, args)
    except Exception as exc:  # a compile failure is a result, recorded in the table
        row["status"] = f"{'compile ' if impl.compiled else ''}failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        free_device_cache(run)
        return
    if peak is None and not harness.on_gpu():  # a CPU row the framework reports no peak for
        peak = harness.cpu_peak(framework, fn, args)
    row.update(first_s=first, peak_bytes=peak, result_bytes=harness.nbytes(out))
    if "jit" in impl.tags:
        run.built[(case.name, framework, impl.label)] = fn
    reference = run.references.get(key)
    if "raw" in impl.tags and reference is None:
        run.references[key] = out
        other = run.references.get((case.name, "torch" if framework == "jax" else "jax"))
        row["rel_err"] = harness.agreement(out, other) if other is not None else 0.0
    else:
        row["rel_err"] = harness.agreement(out, reference) if reference is not None else float("nan")
    del out
    if "raw" in impl.tags and not impl.compiled:
        # The case's work, counted from the framework's own computations of it (the roofline).
        row["flops"] = harness.count_flops(framework, impl.build(f, problem, args), args)
    wrong = not row["rel_err"] <= TOLERANCE and not np.isnan(row["rel_err"])
    if wrong:
        row["status"] = f"WRONG: rel err {row['rel_err']:.1e}"
        known = None if run.gpu else case.known_wrong_on_cpu.get((framework, impl.label))
        if known:
            row["status"] = f"WRONG (known: {known}): rel err {row['rel_err']:.1e}"
            wrong = False

    def target():
        return harness.sync(framework, fn(*args))

    # A slow implementation (a loop, rev-over-rev on a wide input) gets fewer rounds,
    # reported in the table, so the whole run fits its time budget.
    try:
        estimate = first if first > 30 else harness.median_time(target, framework, runs=1)
        slow = estimate > 1.0
        rounds = 20 if estimate * 20 <= TIME_PER_IMPL_S else max(3, int(TIME_PER_IMPL_S / estimate))
        benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=0 if slow else 1)
    except Exception as exc:  # out of memory on a repeat call, say: a result, not a crash
        row["status"] = f"failed while timing: {type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
        free_device_cache(run)
        return
    stats = benchmark.stats.stats
    row.update(median_s=stats.median, iqr_s=stats.iqr, q1_s=stats.q1, q3_s=stats.q3, min_s=stats.min, rounds=stats.rounds)
    row["compile_s"] = max(0.0, first - stats.median)
    row["GBps"] = row["result_bytes"] / stats.median / 1e9
    row["pct_write"] = 100 * row["GBps"] / run.ceilings["write_GBps"]
    assert not wrong, row["status"]
