"""How many Hessian-vector products the trace estimators need (``make bench`` runs it).

Not a timing: on the Hessian of an MLP loss with respect to its parameters (a decaying
spectrum), the smallest number of products at which an estimator's mean absolute error
over seeds falls to 1% of the nuclear norm (the sum of absolute eigenvalues), for
Hutchinson and Hutch++, on each framework.  Goal (issue: Laplacians and operators):
Hutch++ needs at least 3x fewer products than Hutchinson.
"""

from __future__ import annotations

import sys

import numpy as np

import crossgrad as cg
from crossgrad.testing import frameworks, problems

BUDGETS = (4, 8, 16, 32, 64, 128, 256, 512)
SEEDS = 24
TARGET = 0.01  # of the nuclear norm


def products_needed(framework: str) -> dict:
    problem = problems.mlp((8, 16, 16, 1), batch=32, wrt="params")
    f = problem.build(frameworks.ops(framework))
    args = frameworks.convert(problem.inputs(np.random.default_rng(0)), framework, "float32")
    ns = cg.backend(framework)
    H = ns.hessian_operator(f, *args, argnums=problem.argnums)
    eig = np.linalg.eigvalsh(frameworks.to_numpy(H.dense()))
    exact, nuclear = eig.sum(), np.abs(eig).sum()
    out: dict = {"n": int(H.shape[0]), "nuclear": float(nuclear), "trace": float(exact)}
    for estimator in ("hutchinson", "hutch++"):
        out[estimator] = None
        errors = {}
        for m in BUDGETS:
            print(f"estimators {framework}: {estimator}, {m} products x {SEEDS} seeds", file=sys.stderr, flush=True)
            est = [float(frameworks.to_numpy(ns.hessian_trace(f, problem.argnums, estimator=estimator, samples=m,
                                                                key=seed)(*args))) for seed in range(SEEDS)]
            errors[m] = float(np.mean(np.abs(np.array(est) - exact)) / nuclear)
            if errors[m] <= TARGET and out[estimator] is None:
                out[estimator] = m
                break
        out[estimator + " errors"] = errors
    return out


def report(selected: tuple[str, ...] = ("torch", "jax")) -> list[str]:
    lines = ["## Trace estimators: Hessian-vector products to reach 1% of the nuclear norm",
             "", f"MLP 8-16-16-1 loss, Hessian w.r.t. its parameters; mean absolute error over {SEEDS} seeds; "
             "products tried: " + ", ".join(map(str, BUDGETS)), ""]
    for fw in selected:
        r = products_needed(fw)
        hutch, pp = r["hutchinson"], r["hutch++"]
        ratio = (hutch or BUDGETS[-1] * 2) / pp if pp else float("nan")
        met = "met " if pp and (hutch is None or hutch >= 3 * pp) else "MISS"
        lines.append(f"- {met} estimators {fw}: n={r['n']}, Hutch++ {pp or '>' + str(BUDGETS[-1])} products, "
                     f"Hutchinson {hutch or '>' + str(BUDGETS[-1])} products ({'>=' if hutch is None else ''}"
                     f"{ratio:.1f}x fewer; goal >= 3x)")
        for est in ("hutchinson", "hutch++"):
            errs = ", ".join(f"{m}: {e * 100:.2f}%" for m, e in r[est + " errors"].items())
            lines.append(f"  - {est} error by products: {errs}")
    return lines


if __name__ == "__main__":
    print("\n".join(report(frameworks.selected())))
