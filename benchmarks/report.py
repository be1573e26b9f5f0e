"""The report: a table per case, the checks the numbers are for, and the same data as
JSON, markdown and a PNG plot under benchmarks/results/, named by device and date."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

from tabulate import tabulate

from benchmarks.labels import AUTO, EAGER, JIT

# Every run writes into RUNS (ignored by git); a report joins the committed RESULTS only
# when it is kept on purpose (``python -m benchmarks.report --keep RUN.json``, ``make keep``).
RESULTS = Path(__file__).parent / "results"
RUNS = Path(__file__).parent / "runs"
HEADERS = ["framework", "implementation", "median ms", "IQR ms", "x fastest", "x fastest (same fw)", "GFLOP/s",
           "% FLOP ceiling", "GB/s", "% write ceiling", "peak MB", "first call s", "rounds", "status"]


def _ms(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{1e3 * x:.3g}"


def _num(x: Any, fmt: str = ".3g") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


# A row whose interquartile range is this share of its median or more is marked noisy: its
# median is not to be read to two digits, nor compared with a neighbour that close.
NOISY_IQR_SHARE = 0.5


def _status(r: dict) -> str:
    m, iqr = r.get("median_s"), r.get("iqr_s")
    if r["status"] == "ok" and m and iqr is not None and iqr >= NOISY_IQR_SHARE * m:
        return f"ok, NOISY (IQR {100 * iqr / m:.0f}% of the median)"
    return str(r["status"])


def work(rows: list[dict], case: str, framework: str) -> float | None:
    """The case's FLOPs on ``framework``: the least of its own computations' (the raw rows:
    reverse and forward mode for a Jacobian), counted from the programs."""
    counts = [r["flops"] for r in rows if r["case"] == case and r["framework"] == framework and r.get("flops")]
    return min(counts) if counts else None


def bound(rows: list[dict], case: str, ceilings: dict[str, float],
          best: dict | None = None) -> tuple[str, float, float | None, str] | None:
    """The case's bound at the measured ceilings: ``(which, seconds, flops, counter)``, the
    larger of its work (the lesser framework's count) at the FLOP ceiling and its result's
    bytes (of ``best``, else of any timed row) at the write ceiling; None where neither is known."""
    flop_rate = ceilings.get("fp32_matmul_TFLOPs", 0.0) * 1e12
    write_rate = ceilings.get("write_GBps", 0.0) * 1e9
    counted = {fw: c for fw in ("torch", "jax") if (c := work(rows, case, fw))}
    counter = min(counted, key=lambda fw: counted[fw]) if counted else ""
    flops = counted.get(counter)
    if best is None:
        best = next((r for r in rows if r["case"] == case and r.get("result_bytes")), {})
    compute = flops / flop_rate if flops and flop_rate else None
    memory = best.get("result_bytes", 0) / write_rate if write_rate else None
    if compute is None and memory is None:
        return None
    which, limit = max((("compute", compute), ("memory (the result's bytes)", memory)), key=lambda kv: kv[1] or 0.0)
    return which, limit or 0.0, flops, counter


def _timed(rows: list[dict], case: str) -> list[dict]:
    return [r for r in rows if r["case"] == case and r.get("median_s") and r["status"] == "ok"
            and not {"paired", "auto-check", "versus", "scaling"} & set(r["tags"])]


def roofline(rows: list[dict], ceilings: dict[str, float]) -> list[str]:
    """Per case: its work against the measured ceilings, the bound that applies, and how far
    the fastest route is from it."""
    lines = []
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = _timed(rows, case)
        if not rs:
            continue
        best = min(rs, key=lambda r: r["median_s"])
        found = bound(rows, case, ceilings, best)
        if found is None:
            continue
        which, limit, flops, counter = found
        flops_text = f"{flops / 1e9:.3g} GFLOP ({counter}'s reference)" if flops else "FLOPs not counted"
        share = limit / best["median_s"]
        where = (f"{100 * share:.0f}% of the bound" if share <= 1 else
                 "under the bound: it computes less than the reference does (a folded or reordered product)")
        lines.append(f"{case}: {flops_text}; bound: {which}, {1e3 * limit:.3g} ms at the ceiling; "
                     f"fastest {best['framework']} {best['impl']} {1e3 * best['median_s']:.3g} ms ({where})")
    return lines


def case_tables(rows: list[dict], ceilings: dict[str, float] | None = None) -> dict[str, list[list[str]]]:
    flop_rate = (ceilings or {}).get("fp32_matmul_TFLOPs", 0.0) * 1e12
    tables: dict[str, list[list[str]]] = {}
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        if not {"paired", "auto-check"} & set(r["tags"]):
            by_case.setdefault(f"{r['case']}  [{r['problem']}]", []).append(r)
    for name, rs in by_case.items():
        timed = [r for r in rs if r.get("median_s") and r["status"] == "ok"]  # a wrong answer is never a win
        fastest = min((r["median_s"] for r in timed), default=None)
        best_fw = {fw: min((r["median_s"] for r in timed if r["framework"] == fw), default=None) for fw in ("torch", "jax")}
        table = []
        for r in sorted(rs, key=lambda r: (r["framework"] != "torch", r.get("median_s") or math.inf)):
            m = r.get("median_s")
            flops = work(rows, r["case"], r["framework"])
            rate = flops / m if flops and m and r["status"] == "ok" else None
            table.append([
                r["framework"], r["impl"], _ms(m), _ms(r.get("iqr_s")),
                _num(m / fastest, ".2f") if m and fastest and r["status"] == "ok" else "",
                _num(m / best_fw[r["framework"]], ".2f") if m and best_fw[r["framework"]] and r["status"] == "ok" else "",
                _num(rate / 1e9) if rate else "",
                _num(100 * rate / flop_rate, ".1f") if rate and flop_rate else "",
                _num(r.get("GBps")), _num(r.get("pct_write"), ".1f"),
                _num(r["peak_bytes"] / 2**20) if r.get("peak_bytes") is not None else "n/a",
                _num(r.get("first_s"), ".2f"), str(r.get("rounds", "")), _status(r),
            ])
        tables[name] = table
    return tables


# The four routes a user chooses between, per case: (label, framework, implementation rows, best of them).
ROUTES = (("torch default", "torch", (AUTO,)), ("torch cg.jit", "torch", (JIT,)),
          ("jax eager", "jax", (EAGER,)), ("jax cg.jit", "jax", (JIT, AUTO)))


def routes(rows: list[dict]) -> dict[str, dict[str, dict | None]]:
    """Per case, the row of each of :data:`ROUTES` (the fastest where several qualify), or
    the failed/skipped row, or None when it was not run."""
    out: dict[str, dict[str, dict | None]] = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        rs = [r for r in rows if r["case"] == case]
        if any("scaling" in r["tags"] for r in rs):
            continue
        out[case] = {}
        for label, fw, impls in ROUTES:
            cands = [r for r in rs if r["framework"] == fw and r["impl"] in impls]
            ok = [r for r in cands if r.get("median_s") and r["status"] == "ok"]
            out[case][label] = min(ok, key=lambda r: r["median_s"]) if ok else (cands[0] if cands else None)
    return out


# Separately timed rows and the paired ratio disagree when they differ by more than this
# factor, or fall on opposite sides of parity.
DISAGREE = 1.5


def summary(rows: list[dict]) -> list[str]:
    """One line per case: the four routes, the paired torch/jax ratio, and the route to use."""
    versus = {r["case"]: r for r in rows if "versus" in r["tags"] and r.get("ratio")}
    lines = []
    for case, by in routes(rows).items():
        parts, best = [], None
        for label, r in by.items():
            if r is None:
                continue
            if r.get("median_s") and r["status"] == "ok":
                parts.append(f"{label} {_ms(r['median_s'])} ms")
                if best is None or r["median_s"] < best[1]:
                    best = (label, r["median_s"])
            else:
                parts.append(f"{label} {r['status'].split(':')[0]}")
        pair = versus.get(case)
        if pair:
            parts.append(f"torch/jax with cg.jit {pair['ratio']:.2f}x (paired: torch {_ms(pair.get('torch_s'))} ms, "
                         f"jax {_ms(pair.get('jax_s'))} ms)")
            t, j = by.get("torch cg.jit"), by.get("jax cg.jit")
            if t and j and t.get("median_s") and j.get("median_s") and t["status"] == j["status"] == "ok":
                separate = t["median_s"] / j["median_s"]
                if max(separate / pair["ratio"], pair["ratio"] / separate) > DISAGREE or \
                        (separate - 1) * (pair["ratio"] - 1) < 0:
                    parts.append(f"DISAGREE: the separately timed rows give {separate:.2f}x (the machine drifted "
                                 "between them); the paired figure stands")
                if best and best[0] in ("torch cg.jit", "jax cg.jit"):
                    # Between the two compiled routes the pairs decide, not rows timed apart.
                    best = ("torch cg.jit", pair["torch_s"]) if pair["ratio"] <= 1 else ("jax cg.jit", pair["jax_s"])
        if best:
            parts.append(f"use: {best[0]}")
        problem = next((r["problem"] for r in rows if r["case"] == case), "")
        lines.append(f"{case} [{problem}]: " + " | ".join(parts))
    return lines


# The eager overhead goal: crossgrad's call within 5% of the raw framework call it wraps,
# or 20 us, whichever is larger.
OVERHEAD_SHARE, OVERHEAD_FLOOR_S = 0.05, 20e-6
# jax's cg.jit adds at most a few microseconds to jax.jit (10 us, or 2% where that is more).
JIT_OVERHEAD_SHARE, JIT_OVERHEAD_FLOOR_S = 0.02, 10e-6


def checks(rows: list[dict]) -> list[str]:
    """The targets of the benchmark issue, each reported as met or missed."""
    lines = []
    timed = [r for r in rows if r.get("median_s") and r["status"] == "ok" and not {"paired", "auto-check"} & set(r["tags"])]
    auto_pairs = {(r["case"], r["framework"]): r for r in rows if "auto-check" in r["tags"] and r.get("ratio")}
    paired = {(r["case"], r["framework"]): r for r in rows if "paired" in r["tags"] and r.get("overhead_s") is not None
              and "jit-overhead" not in r["tags"]}
    jit_paired = {r["case"]: r for r in rows if "jit-overhead" in r["tags"] and r.get("overhead_s") is not None}
    groups: dict[tuple, list[dict]] = {}
    for r in timed:
        groups.setdefault((r["case"], r["framework"]), []).append(r)
    for (case, fw), rs in groups.items():
        eager = [r for r in rs if not {"compiled", "eager", "jit"} & set(r["tags"])]
        raw = [r for r in eager if "raw" in r["tags"] and "loop" not in r["tags"]]
        builtin = [r for r in eager if "builtin" in r["tags"]]
        pair = paired.get((case, fw))
        if pair:
            # crossgrad's overhead: its built-in route against the same raw call, alternated
            # call by call, so the drift of a shared machine hits both alike
            extra, base = pair["overhead_s"], pair["raw_s"]
            ok = extra <= max(OVERHEAD_SHARE * base, OVERHEAD_FLOOR_S)
            lines.append(f"{'met ' if ok else 'MISS'} overhead  {case} / {fw}: {pair['impl'].removeprefix('overhead: ')}: "
                         f"{1e6 * extra:+.0f} us on {_ms(base)} ms ({100 * extra / base:+.1f}%, median of "
                         f"{pair['rounds']} alternated pairs)")
        elif raw and builtin:  # reports from before the paired measurement
            # crossgrad's overhead: its built-in route against the same raw framework call
            r0 = min(raw, key=lambda r: r["median_s"])
            b0 = next((b for b in builtin if b["impl"].split()[1:2] == r0["impl"].split()[1:2]), builtin[0])
            extra = b0["median_s"] - r0["median_s"]
            ok = extra <= max(OVERHEAD_SHARE * r0["median_s"], OVERHEAD_FLOOR_S)
            lines.append(f"{'met ' if ok else 'MISS'} overhead  {case} / {fw}: {b0['impl']} {_ms(b0['median_s'])} ms vs "
                         f"{r0['impl']} {_ms(r0['median_s'])} ms ({100 * extra / r0['median_s']:+.1f}%, {1e6 * extra:+.0f} us)")
        jit_pair = jit_paired.get(case) if fw == "jax" else None
        if jit_pair:
            extra, base = jit_pair["overhead_s"], jit_pair["raw_s"]
            ok = extra <= max(JIT_OVERHEAD_SHARE * base, JIT_OVERHEAD_FLOOR_S)
            lines.append(f"{'met ' if ok else 'MISS'} jit       {case} / jax: cg.jit vs jax.jit of the same transform: "
                         f"{1e6 * extra:+.1f} us on {_ms(base)} ms (median of {jit_pair['rounds']} alternated pairs)")
        auto = [r for r in rs if r["impl"] == "cg auto"]
        pair = auto_pairs.get((case, fw))
        if pair:
            ratio = pair["ratio"]
            lines.append(f"{'met ' if ratio <= 1.1 else 'MISS'} auto      {case} / {fw}: {ratio:.2f}x {pair['versus']}, the "
                         f"fastest of its peers (median of {pair['rounds']} alternated pairs)")
        elif auto:  # reports from before the paired check
            # Same regime: torch eager against torch eager, jax.jit against jax.jit.
            peers = [r for r in rs if not {"compiled", "eager", "loop", "jit"} & set(r["tags"])]
            top = min(peers, key=lambda r: r["median_s"])
            ratio = auto[0]["median_s"] / top["median_s"]
            lines.append(f"{'met ' if ratio <= 1.1 else 'MISS'} auto      {case} / {fw}: {ratio:.2f}x the fastest ({top['impl']})")
        spread = sorted((r for r in rs if "scaling" in r["tags"]), key=lambda r: int(r["impl"].rsplit("=", 1)[1]))
        if len(spread) > 1:
            one = spread[0]["median_s"]
            steps = ", ".join(f"{r['impl'].rsplit(' ', 1)[1]}: {_ms(r['median_s'])} ms ({one / r['median_s']:.2f}x)"
                              for r in spread)
            lines.append(f"note      scaling   {case} / {fw}: {steps}")
        notebook = [r for r in rs if r["impl"] == "notebook loop"]
        if notebook and rs[0]["basis"] >= 64:
            others = [r for r in rs if "loop" not in r["tags"]]
            worst = max(others, key=lambda r: r["median_s"])
            ratio = notebook[0]["median_s"] / worst["median_s"]
            lines.append(f"{'met ' if ratio >= 10 else 'MISS'} vs loop   {case} / {fw}: the slowest ({worst['impl']}) is "
                         f"{ratio:.0f}x faster than the notebook's loop ({rs[0]['basis']} basis directions)")
    lines += goals(rows)
    for r in rows:
        if "scaling" in r["tags"] and r["status"].startswith("skipped"):
            lines.append(f"note      scaling   {r['case']} / {r['framework']}: not measured, {r['status']}")
    wrong = [r for r in rows if r["status"].startswith("WRONG:")]
    known = [r for r in rows if r["status"].startswith("WRONG (known")]
    if known:
        lines.append(f"note      {len(known)} implementation(s) wrong through a known framework defect (see status)")
    failed = [r for r in rows if "failed" in r["status"]]
    lines.append(f"{'met ' if not wrong else 'MISS'} correct   {len(wrong)} implementation(s) disagree with the reference")
    if failed:
        lines.append(f"note      {len(failed)} implementation(s) failed to build or compile (see status)")
    return lines


def goals(rows: list[dict]) -> list[str]:
    """The speed goals: torch's cg.jit within 1.5x of jax's (paired); torch's default
    within 3x of jitted jax on Hessians where jitted jax takes >= 2 ms; torch's default
    >= the case's speedup goal over the raw torch.func call."""
    lines = []
    by_case = routes(rows)
    for r in rows:
        if "versus" in r["tags"] and r.get("ratio"):
            ok = r["ratio"] <= 1.5
            lines.append(f"{'met ' if ok else 'MISS'} jit       {r['case']}: torch cg.jit {_ms(r['torch_s'])} ms vs jax "
                         f"cg.jit {_ms(r['jax_s'])} ms, {r['ratio']:.2f}x (goal <= 1.5x, {r['rounds']} alternated pairs)")
    for case, by in by_case.items():
        default, jax_jit = by.get("torch default"), by.get("jax cg.jit")
        if not (default and jax_jit and default.get("median_s") and jax_jit.get("median_s")):
            continue
        kind = default["kind"]
        if "hessian" in kind and jax_jit["median_s"] >= 2e-3:
            ratio = default["median_s"] / jax_jit["median_s"]
            lines.append(f"{'met ' if ratio <= 3 else 'MISS'} default   {case}: torch default {_ms(default['median_s'])} ms "
                         f"is {ratio:.2f}x jitted jax (goal <= 3x where jitted jax >= 2 ms)")
        goal = default.get("speedup_goal")
        raw = next((r for r in rows if r["case"] == case and r["framework"] == "torch" and r["impl"] == "raw hessian"
                    and r.get("median_s")), None)
        if goal and raw:
            speedup = raw["median_s"] / default["median_s"]
            lines.append(f"{'met ' if speedup >= goal else 'MISS'} speedup   {case}: torch default {speedup:.2f}x faster than "
                         f"vmap(torch.func.hessian) ({_ms(raw['median_s'])} ms; goal >= {goal:g}x)")
    return lines


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def write(run: Any, precision: str, notes: tuple[str, ...] = (), extra: list[str] | None = None,
          interrupted: bool = False) -> dict[str, Path]:
    RUNS.mkdir(exist_ok=True)
    stamp = dt.date.today().isoformat()
    selection = getattr(run, "selection", "") or ""
    # A selected subset is a part, named by its selection, and an interrupted run says so in
    # its name: neither replaces a full report.
    base = RUNS / (f"{_slug(run.device)}-{stamp}" + (f"-part-{_slug(selection)[:60]}" if selection else "")
                   + ("-interrupted" if interrupted else ""))
    if interrupted:
        notes = (*notes, f"interrupted: the {len(run.rows)} implementations that finished, of the selection")
    header = [*notes,
        f"device: {run.device}",
        f"date: {stamp}; selection: {selection or 'every case'}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in run.versions.items()),
        f"precision: {precision}",
        f"ceilings measured in this run: write {run.ceilings['write_GBps']:.1f} GB/s, "
        f"fp32 matmul {run.ceilings['fp32_matmul_TFLOPs']:.2f} TFLOP/s",
        "timing: median of >= 20 synchronized calls after warm-up (fewer where one call is slow: see rounds); "
        "'first call' includes compilation (jax.jit, torch.compile)",
    ]
    tables = case_tables(run.rows, run.ceilings)
    summary_lines = summary(run.rows)
    check_lines = checks(run.rows)
    text = ["\n".join(header), "\n== which backend, which route\n" + "\n".join(summary_lines)]
    md = ["# crossgrad benchmark", "", *[f"- {h}" for h in header], "", "## Which backend, which route", "",
          "Per case: crossgrad's default (eager) and `cg.jit` route on each framework, the torch/jax ratio of the "
          "`cg.jit` routes measured in alternated pairs, and the fastest route.", "",
          *[f"- {line}" for line in summary_lines], ""]
    roof = roofline(run.rows, run.ceilings)
    text.append("\n== how far from the limit\n" + "\n".join(roof))
    md += ["## How far from the limit", "",
           "Per case: its work (FLOPs counted from the frameworks' own computations of it, the least of them: XLA's "
           "cost analysis on jax, torch's FlopCounterMode, which counts matrix products only, on torch) against the measured fp32 matmul "
           "ceiling, its result's bytes against the write ceiling; the larger is the bound. The tables' GFLOP/s is "
           "that work over each row's time.", "", *[f"- {line}" for line in roof], ""]
    for name, table in tables.items():
        text.append(f"\n== {name}\n" + tabulate(table, headers=HEADERS, disable_numparse=True))
        md += [f"## {name}", "", tabulate(table, headers=HEADERS, tablefmt="github", disable_numparse=True), ""]
    check_lines = check_lines + [line.removeprefix("- ") for line in (extra or []) if line.startswith("- ")]
    text.append("\n== checks\n" + "\n".join(check_lines))
    md += ["## checks", "", *[f"- {line}" for line in check_lines], ""]
    if extra:
        text.append("\n" + "\n".join(extra))
        md += [*extra, ""]
    print("\n".join(text))
    paths = {"json": base.with_suffix(".json"), "md": base.with_suffix(".md"), "png": base.with_suffix(".png")}
    paths["json"].write_text(json.dumps({"device": run.device, "versions": run.versions, "precision": precision,
                                         "ceilings": run.ceilings, "gpu": bool(getattr(run, "gpu", False)), "summary": summary_lines, "checks": check_lines,
                                         "selection": getattr(run, "selection", ""), "rows": run.rows}, indent=1, default=str))
    paths["md"].write_text("\n".join(md))
    plot(run.rows, paths["png"], run.device, run.ceilings, bool(getattr(run, "gpu", False)))
    print("\nwritten: " + ", ".join(str(p) for p in paths.values()))
    return paths


def _quartiles(r: dict) -> tuple[float, float]:
    """A row's first and third quartile in seconds (older runs kept only the IQR: centred
    on the median then, never below zero)."""
    m = r["median_s"]
    if r.get("q1_s") is not None and r.get("q3_s") is not None:
        return r["q1_s"], r["q3_s"]
    half = (r.get("iqr_s") or 0.0) / 2
    return max(m - half, m * 0.01), m + half


def _title(rows: list[dict], case: str, gpu: bool, pair: dict | None, by: dict[str, dict | None]) -> str:
    """The panel's title: what ran (the case's own sizes on a GPU; on a CPU the smaller
    problem that ran, with its kind), and the torch/jax ratio of the cg.jit bars beside the
    paired one (the diamonds), so the title never states a ratio its bars do not show."""
    first = next(r for r in rows if r["case"] == case)
    head = f"{case} [{first['problem']}]" if gpu else f"{first['kind']}: {first['problem']}"
    t, j = by.get("torch cg.jit"), by.get("jax cg.jit")
    parts = []
    if t and j and t.get("median_s") and j.get("median_s") and t["status"] == j["status"] == "ok":
        parts.append(f"bars {t['median_s'] / j['median_s']:.2f}x")
    if pair:
        parts.append(f"paired {pair['ratio']:.2f}x (diamonds)")
    return head + ("\ntorch/jax with cg.jit: " + ", ".join(parts) if parts else "")


def plot(rows: list[dict], path: Path, device: str, ceilings: dict[str, float] | None = None,
         gpu: bool = False) -> None:
    """The headline figure: per case, the four routes of :data:`ROUTES` as median bars with
    their interquartile range (asymmetric, as a log axis needs), the paired cg.jit times as
    diamonds, the case's bound at the measured ceilings as a dashed line, a route that failed
    or was skipped named as such; one shared time axis; the detailed tables stay in the markdown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_case = routes(rows)
    versus = {r["case"]: r for r in rows if "versus" in r["tags"] and r.get("ratio")}
    cases = list(by_case)
    cols = min(3, max(1, len(cases)))
    nrows = max(1, math.ceil(len(cases) / cols))
    bounds = {c: bound(rows, c, ceilings) if ceilings else None for c in cases}
    spans = [v for c in cases for r in by_case[c].values() if r and r.get("median_s") and r["status"] == "ok"
             for v in _quartiles(r)] + [b[1] for b in bounds.values() if b and b[1] > 0]
    lo, hi = (1e3 * min(spans) / 2, 1e3 * max(spans) * 8) if spans else (1e-2, 1e2)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 2.9 * nrows + 1.0), squeeze=False, sharex=True)
    colors = {"torch": "tab:red", "jax": "tab:blue"}
    for ax, case in zip(axes.flat, cases):
        by = by_case[case]
        pair = versus.get(case)
        diamonds = {1: 1e3 * pair["torch_s"], 3: 1e3 * pair["jax_s"]} if pair else {}
        for k, (label, fw, _) in enumerate(ROUTES):
            r = by[label]
            if r and r.get("median_s") and r["status"] == "ok":
                m = 1e3 * r["median_s"]
                q1, q3 = (1e3 * q for q in _quartiles(r))
                ax.barh(k, m, xerr=[[m - q1], [q3 - m]], color=colors[fw], capsize=3)
                ax.text(max(m, q3, diamonds.get(k, 0.0)) * 1.25, k, f"{m:.3g} ms", va="center", fontsize=9)
            else:
                what = "not run" if r is None else r["status"].split(":")[0]
                ax.text(lo * 1.2, k, what, va="center", fontsize=9, color="dimgray")
        if diamonds:
            ax.plot(list(diamonds.values()), list(diamonds), "D", color="black", markersize=5)
        b = bounds[case]
        if b and b[1] > 0:
            ax.axvline(1e3 * b[1], color="black", linestyle="--", linewidth=1)
            ax.text(1e3 * b[1], -0.75, f" bound {1e3 * b[1]:.2g} ms ({b[0].split(' ')[0]})", fontsize=8, va="bottom")
        ax.set_yticks(range(len(ROUTES)), [label for label, _, _ in ROUTES], fontsize=10)
        ax.set_ylim(len(ROUTES) - 0.5, -0.9)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.tick_params(axis="x", labelsize=9, labelbottom=True)
        ax.set_title(_title(rows, case, gpu, pair, by), fontsize=10)
    for ax in axes[-1]:
        ax.set_xlabel("median ms per call (log scale; bars: interquartile range)", fontsize=9)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    fig.suptitle(f"crossgrad: which backend, which route, on {device}\nred: torch, blue: jax; dashed: the case's "
                 "bound at the measured ceilings;\ndiamonds: the alternated cg.jit pairs", fontsize=10)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))  # room for the three-line title
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(paths: list[str]) -> None:
    """Join the JSON of runs split into parts (``python -m benchmarks.report A.json B.json``):
    a case measured (not skipped) in a later part replaces the same case of earlier parts.
    One part alone is rendered again (markdown and plot from its JSON) under its own selection,
    so it never takes the full report's name."""
    from types import SimpleNamespace

    parts = [json.loads(Path(p).read_text()) for p in paths]
    rows: list[dict] = []
    for part in parts:
        measured = {r["case"] for r in part["rows"] if r.get("median_s")}
        rows = [r for r in rows if r["case"] not in measured] + [r for r in part["rows"] if r["case"] in measured]
    first = parts[0]
    run = SimpleNamespace(device=first["device"], versions=first["versions"], ceilings=first["ceilings"], rows=rows,
                          gpu=first.get("gpu", "NVIDIA" in first["device"]),
                          selection=first.get("selection", "") if len(parts) == 1 else "")
    notes = tuple(
        f"part {k + 1}: {', '.join(sorted({r['case'] for r in part['rows'] if r.get('median_s')}))}; ceilings "
        f"write {part['ceilings']['write_GBps']:.0f} GB/s, fp32 {part['ceilings']['fp32_matmul_TFLOPs']:.1f} TFLOP/s"
        for k, part in enumerate(parts)
    )
    write(run, first["precision"], notes)


def keep(paths: list[str]) -> None:
    """Copy finished runs (any of their files: ``.json``, ``.md``, ``.png``) into the committed
    results folder: ``python -m benchmarks.report --keep benchmarks/runs/NAME.json``."""
    import shutil

    RESULTS.mkdir(exist_ok=True)
    for p in paths:
        stem = Path(p).with_suffix("")
        found = [stem.with_suffix(ext) for ext in (".json", ".md", ".png") if stem.with_suffix(ext).exists()]
        if not found:
            raise SystemExit(f"no run named {stem} (runs are written under {RUNS})")
        for f in found:
            shutil.copy2(f, RESULTS / f.name)
            print(f"kept: {RESULTS / f.name}")


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--keep"]:
        keep(sys.argv[2:])
    else:
        merge(sys.argv[1:])
