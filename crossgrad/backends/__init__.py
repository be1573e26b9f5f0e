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
  jax's jaxpr) for the forward Taylor propagation of :mod:`crossgrad.transforms.taylor`;
* ``sparsity.py``: the rules of :mod:`crossgrad.sparsity.propagation` for the framework's
  operations (which inputs each output element depends on) and its sparse formats.

Everything else (pytrees, validation, every composition) is shared and lives in
:mod:`crossgrad.spec`, :mod:`crossgrad.pytree` and :mod:`crossgrad.transforms`.
"""

from __future__ import annotations

import importlib
from typing import Any

from crossgrad import errors, pytree

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

def framework_of(x: Any) -> str | None:
    """``"torch"``, ``"jax"`` or None, from the type's module alone (imports nothing)."""
    root = type(x).__module__.partition(".")[0]
    if root == "torch":
        return "torch"
    if root in ("jax", "jaxlib"):
        return "jax"
    return None


def infer_backend(transform: str, *trees: Any) -> str:
    """The backend the arrays in ``trees`` belong to (imports nothing)."""
    if len(trees) == 2 and not trees[1] and type(trees[0]) is tuple and trees[0]:
        # The common call, positional arrays of one framework, without flattening (it runs
        # on every call of a top-level transform).
        kinds = {framework_of(a) for a in trees[0]}
        if len(kinds) == 1 and None not in kinds:
            return kinds.pop()  # type: ignore[return-value]
    found = {fw for tree in trees for leaf in pytree.leaves(tree) if (fw := framework_of(leaf)) is not None}
    if len(found) > 1:
        raise errors.MixedFrameworksError(
            transform, "arrays of one framework", "torch tensors and jax arrays in one call",
            "Convert one side with crossgrad.to_torch or crossgrad.to_jax.")
    if not found:
        raise errors.BackendInferenceError(
            transform, "at least one torch tensor or jax array among the arguments", "none",
            f"Pass framework arrays, or pick the backend explicitly: crossgrad.backend('torch').{transform}(...).")
    return found.pop()
