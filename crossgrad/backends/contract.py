"""The backend contract: what each backend module must provide, with the same signature
on every backend (``tests/test_contract.py`` checks both backends against it).

The shared code (``crossgrad.transforms``, ``crossgrad.streaming``, ...) calls a backend only
through these names.  A backend may hold more (torch's traced ``cg.jit`` routes, jax's
mesh helpers); those are private to it or named in ``OPTIONAL``.
"""

from __future__ import annotations

REQUIRED: dict[str, tuple[str, ...]] = {
    # Array operations and dtype rules.
    "arrays": (
        "is_array", "is_input", "as_array", "materialized", "shape", "size", "dtype_name", "signature", "copy", "nbytes", "itemsize", "watch", "written", "shield", "unaliased",
        "exclusive", "synchronize", "preserved_random_state", "on_accelerator", "is_traced", "under_transform",
        "free_memory", "float64_unavailable", "reshape", "transpose", "moveaxis", "concat", "broadcast_to",
        "slice_axis", "eye", "cast_like", "zeros", "zeros_like", "ones_like", "from_numpy",
        "to_numpy", "random_signs", "random_normal", "is_random_key", "qr",
    ),
    # vjp, jvp and vmap on flat tuples, chunked and row-by-row mapping, failure classification.
    "primitives": (
        "vjp", "jvp", "vmap", "map_chunks", "map_rows", "failure_cause", "is_out_of_memory", "ready",
        "empty_map", "output_shapes", "float_dtypes",
    ),
    # The framework's own transforms, what they lack, and jit's routes.
    "builtins": (
        "COMPLEX_FORWARD", "NONE_LEAVES", "NEGATIVE_OUT_AXES", "LACKS", "JIT_ROUTES", "grad", "value_and_grad",
        "vjp", "jvp", "linearize", "vmap", "jacrev", "jacfwd", "hessian", "compile",
        "is_model", "parameters_of", "stateless", "updates_statistics", "without_gradients",
    ),
    # The batch spread over devices.
    "distributed": ("place", "participants", "spread"),
    # One call recorded for the forward Taylor propagation.
    "taylor": ("record", "kind", "derivatives", "is_float", "being_compiled"),
    # Sparsity patterns of one call and sparse results.
    "sparsity": ("pattern", "sparse_result", "outside_compiler"),
}

# Names a backend provides only where the framework has the mechanism (used behind a check).
OPTIONAL: dict[str, tuple[str, ...]] = {
    "arrays": ("x64_enabled",),  # jax: its x64 mode
    "builtins": ("trace", "replay", "compile_traced"),  # torch: the traced cg.jit routes (builtins.JIT_ROUTES)
    "distributed": ("rows_of",),
}
