"""How much memory a chunked transform may use: a scoped budget, or what the device has free.

``chunk_size="auto"`` on the Jacobian, Hessian and vmap transforms sizes its chunks
from :func:`budget_bytes`: the budget set with :func:`memory_budget` when there is
one, otherwise half of the memory free on the device that holds the inputs (the
accelerator's allocator for GPU arrays, the host's available memory for CPU arrays).
This module imports no framework.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

from crossgrad import option_checks

# Without a budget, auto chunks aim at this fraction of the free memory: the rest is
# left for what the chunk's estimate does not see (the caller's arrays, allocator slack).
FREE_FRACTION = 0.5
_budget: contextvars.ContextVar[int | None] = contextvars.ContextVar("crossgrad_memory_budget", default=None)


@contextlib.contextmanager
def memory_budget(nbytes: int) -> Iterator[int]:
    """Bound the memory of ``chunk_size="auto"`` transforms called inside the block.

    Scoped to the block (and to the thread or task: a context variable); nothing of the
    frameworks' state changes.

    Example:
        >>> import torch, crossgrad as cg
        >>> jac = cg.torch.jacrev(lambda x: torch.sin(x), chunk_size="auto")
        >>> with cg.memory_budget(4096):
        ...     jac(torch.zeros(100)).shape
        torch.Size([100, 100])
    """
    option_checks.check_memory_budget(nbytes)
    token = _budget.set(nbytes)
    try:
        yield nbytes
    finally:
        _budget.reset(token)


def host_available() -> int:
    """Bytes of host memory available to this process (psutil's ``available``: what can be
    given to processes without swapping).  Without psutil (a dependency of the package,
    absent only from a hand-made environment), the free pages the OS reports, else 1 GiB."""
    try:
        import psutil
    except ImportError:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 1 << 30
    return int(psutil.virtual_memory().available)


def budget_bytes(arrays: Any, like: Any) -> int:
    """The bytes a chunked computation on ``like``'s device may use."""
    explicit = _budget.get()
    if explicit is not None:
        return explicit
    free = arrays.free_memory(like)
    return int(FREE_FRACTION * (free if free is not None else host_available()))
