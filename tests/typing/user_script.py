"""A user's script, checked by ``make typecheck`` with ``mypy --strict``: crossgrad ships
``py.typed``, so its public API types (not ``Any`` from an untyped import) reach the user."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import crossgrad as cg
from crossgrad.transforms.operators import HessianOperator


def loss(w: Any, x: Any) -> Any:
    return ((w * x) ** 2).sum()


grad_fn: Callable[..., Any] = cg.grad(loss)
hessian_fn: Callable[..., Any] = cg.batched_hessian(loss, argnums=1, in_axes=(None, 0))
laplacian_fn: Callable[..., Any] = cg.torch.batched_laplacian(loss, 1, (None, 0))
budget = cg.memory_budget(1 << 20)
error: type[ValueError] = cg.ArgnumsError


def operator(w: Any, x: Any) -> HessianOperator:
    op: HessianOperator = cg.torch.hessian_operator(loss, w, x)
    return op
