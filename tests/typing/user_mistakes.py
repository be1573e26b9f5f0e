"""A user's mistakes that ``make typecheck`` (``mypy --strict``) must flag before anything
runs: each line carries the error code mypy must give it, and ``--strict`` reports an
ignore that nothing needed, so a mistake that passes unflagged fails the check."""

from __future__ import annotations

from typing import Any

import crossgrad as cg
from crossgrad.transforms.operators import HessianOperator


def loss(w: Any, x: Any) -> Any:
    return ((w * x) ** 2).sum()


def mistakes() -> None:
    """Never called: the type checker reads it (and pytest, collecting the folder, imports it)."""
    cg.hessian(loss, strategie="fwd-rev")  # type: ignore[call-arg]
    cg.hessian(loss, argnums="a")  # type: ignore[arg-type]
    cg.hessian(loss, strategy="bogus")  # type: ignore[arg-type]
    cg.batched_jacobian(loss, mode="forward")  # type: ignore[arg-type]
    cg.torch.batched_laplacian(loss, estimator="xtrace")  # type: ignore[arg-type]
    cg.jax.hessian_diagonal(loss, estimator="hutch++")  # type: ignore[arg-type]
    cg.vmap(loss, in_dims=0)  # type: ignore[call-arg]
    cg.jit(3)  # type: ignore[arg-type]
    cg.jit(loss, route="fast")  # type: ignore[arg-type]
    cg.laplacian(loss, samples="many")  # type: ignore[arg-type]


def trace_estimate(op: HessianOperator) -> None:
    op.estimate_trace("xtrace++")  # type: ignore[arg-type]
