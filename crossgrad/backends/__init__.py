"""The two backends, loaded on first use.

Each backend is a package with the same modules and the same names:

* ``arrays.py``: the few array operations the shared compositions need
  (reshape, transpose, identity basis, ...) and the framework's dtype rules;
* ``primitives.py``: vjp, jvp and vmap on flat tuples of arrays, and ``map_chunks``,
  the framework's way to push a long batch through a vectorized function in slices;
* ``builtins.py``: the framework's own transforms (``torch.func.*`` / ``jax.*``) behind
  one signature, and what each of them supports;
* ``distributed.py``: a batch spread over devices on the framework's own engine
  (``jax.sharding`` meshes partitioned by ``jax.jit``; ``torch.distributed`` ranks);
* ``taylor.py``: one call recorded as a list of operations (torch's aten operations,
  jax's jaxpr) for the forward Taylor propagation of :mod:`crossgrad.transforms.taylor`.

Everything else (pytrees, validation, every composition) is shared and lives in
:mod:`crossgrad.spec`, :mod:`crossgrad.pytree` and :mod:`crossgrad.transforms`.
"""

from __future__ import annotations

import importlib
from typing import Any

from crossgrad import errors

NAMES = ("torch", "jax")
_EXTRA = {"torch": "crossgrad[torch]", "jax": "crossgrad[jax]"}
_loaded: dict[str, Any] = {}


def load(name: str, transform: str = "backend") -> Any:
    """The backend object for ``name`` (``"torch"`` or ``"jax"``), importing its framework;
    :class:`crossgrad.errors.BackendUnavailableError` (naming ``transform`` and the extra to
    install) when the framework is missing."""
    if name in _loaded:
        return _loaded[name]
    if name not in NAMES:
        raise errors.OptionError("backend", "one of 'torch', 'jax'", repr(name), "Pick 'torch' or 'jax'.")
    try:
        importlib.import_module(name)
    except ImportError as exc:
        raise errors.BackendUnavailableError(
            transform,
            f"the {name} package to be importable",
            f"ImportError: {exc}",
            f"Install it with: pip install '{_EXTRA[name]}'",
        ) from exc
    module = importlib.import_module(f"crossgrad.backends.{name}")
    _loaded[name] = module.BACKEND
    return module.BACKEND
