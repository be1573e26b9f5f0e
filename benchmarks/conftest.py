"""The benchmark session: one run's device, ceilings, inputs, references and rows,
a progress bar, and the report at the end (benchmarks/report.py)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the process

import pytest

from benchmarks import harness, report
from benchmarks.cases import CASES
from benchmarks.implementations import implementations
from benchmarks.kinds import KINDS, batch_of


@dataclass
class Run:
    gpu: bool
    device: str
    versions: dict
    ceilings: dict = field(default_factory=dict)
    rows: list = field(default_factory=list)
    inputs: dict = field(default_factory=dict)
    references: dict = field(default_factory=dict)
    built: dict = field(default_factory=dict)  # (case, framework, label) -> the compiled function of a jit row
    deadline: float | None = None  # time.monotonic() after which the rest is skipped, reported as such
    selection: str = ""  # the -k expression of a partial run ("" for every case)


RUN: Run | None = None


def problem_of(case: Any, gpu: bool) -> Any:
    return case.gpu() if gpu else case.cpu()


def basis_directions(case: Any, problem: Any) -> tuple[int, int]:
    """Rows the notebook's loop walks through (the basis of one sample times the batch), and
    the basis vectors of one sample (the kind's: output elements for a Jacobian, input
    elements for a Hessian; one for a product)."""
    kind = KINDS[case.kind]
    if kind.basis is None:
        return 1, 1
    per_sample = kind.basis(problem)
    return per_sample * batch_of(problem), per_sample


def pytest_generate_tests(metafunc: Any) -> None:
    if "impl" not in metafunc.fixturenames:
        return
    gpu = harness.on_gpu()
    wanted = [f.strip() for f in os.environ.get("CROSSGRAD_BENCH_FRAMEWORKS", "torch,jax").split(",")]
    params, ids = [], []
    for case in CASES:
        problem = problem_of(case, gpu)
        basis, per_sample = basis_directions(case, problem)
        for framework in wanted:
            for impl in implementations(case, framework, per_sample, gpu):
                params.append((case, problem, framework, impl, basis))
                ids.append(f"{case.name}|{framework}|{impl.label}")
    metafunc.parametrize(("case", "problem", "framework", "impl", "basis"), params, ids=ids)


def pytest_sessionstart(session: Any) -> None:
    global RUN
    gpu = harness.on_gpu()
    RUN = Run(gpu=gpu, device=harness.device_name(), versions=harness.versions(),
              selection=os.environ.get("CROSSGRAD_BENCH_SELECTION", ""))
    budget = os.environ.get("CROSSGRAD_BENCH_BUDGET_S")
    if budget:
        RUN.deadline = time.monotonic() + float(budget)
    session.config._precision = harness.pinned_precision()
    session.config._precision.__enter__()
    RUN.ceilings = harness.ceilings()


@pytest.fixture
def run() -> Run:
    assert RUN is not None
    return RUN


class Progress:
    def __init__(self) -> None:
        self.bar = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=len(items), unit="impl", file=sys.stderr, dynamic_ncols=True)

    def pytest_runtest_logreport(self, report: Any) -> None:
        rep = report
        if rep.when == "call" or (rep.when == "setup" and not rep.passed):
            if self.bar is not None:
                self.bar.set_description(rep.nodeid.split("[", 1)[-1][:60])
                self.bar.update(1)
            if rep.failed:
                print(f"\nFAILED {rep.nodeid}\n{rep.longreprtext[-3000:]}", file=sys.stderr)


def pytest_configure(config: Any) -> None:
    config.pluginmanager.register(Progress(), "crossgrad-progress")


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    if RUN is None:
        return
    precision = getattr(session.config, "_precision", None)
    if precision is not None:
        precision.__exit__(None, None, None)
    if RUN.rows:
        selection = getattr(RUN, "selection", "") or ""
        extra: list[str] = []
        if not selection or any(w in selection for w in ("laplacian", "estimator")):
            from benchmarks import estimators

            extra = estimators.report(tuple(sorted({r["framework"] for r in RUN.rows})))
        report.write(RUN, harness.PRECISION_NOTE, extra=extra,
                     interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
