"""Test configuration: backends from CROSSGRAD_BACKENDS, float64 jax, and a guard that
no test changes global framework state or mutates its inputs."""

from __future__ import annotations

import os
import sys

# Tests compare in float64, which jax holds only with x64 on.  This is the test
# process's setting, made before jax is imported; crossgrad itself never sets it.
os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Four virtual CPU devices for the sharding tests (tests/test_distributed.py); other
# tests run on jax's default device as before.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from crossgrad.testing import frameworks

# The fuzz suite's budgets: "ci" runs inside `make test` (fixed seed, nothing stored),
# "fuzz" is `make fuzz`'s deeper run with fresh random cases.
settings.register_profile("ci", max_examples=4, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=200, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("CROSSGRAD_FUZZ_PROFILE", "ci"))

BACKENDS = frameworks.selected()
for _name in BACKENDS:  # imported up front so that every test runs with pinned precision
    __import__(_name)


def global_state() -> dict:
    """Every piece of global framework state crossgrad promises not to touch."""
    state: dict = {}
    if "torch" in sys.modules:
        import torch

        state.update(
            torch_default_dtype=torch.get_default_dtype(),
            torch_grad_enabled=torch.is_grad_enabled(),
            torch_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            torch_tf32_cudnn=torch.backends.cudnn.allow_tf32,
            torch_matmul_precision=torch.get_float32_matmul_precision(),
            torch_rng=torch.get_rng_state().numpy().tobytes(),
            torch_deterministic=torch.are_deterministic_algorithms_enabled(),
        )
    if "jax" in sys.modules:
        import jax

        state.update(
            jax_x64=jax.dtypes.canonicalize_dtype(np.float64) == np.float64,
            jax_matmul_precision=getattr(jax.config, "jax_default_matmul_precision", None),
            jax_debug_nans=getattr(jax.config, "jax_debug_nans", None),
        )
    return state


@pytest.fixture(autouse=True)
def unchanged_global_state():
    before = global_state()
    yield
    after = global_state()
    changed = {k: (before[k], after[k]) for k in before if k in after and before[k] != after[k]}
    assert not changed, f"global framework state changed: {sorted(changed)}"


@pytest.fixture(autouse=True)
def pinned_precision(unchanged_global_state):
    """Numerical comparisons mean something on a GPU too: TF32 off in torch, "highest"
    matmul precision in jax, for the test's duration only (the state check above runs
    outside this fixture, so the restore is checked as well)."""
    import contextlib

    stack = contextlib.ExitStack()
    if "torch" in sys.modules:
        import torch

        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

        def restore():
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved

        stack.callback(restore)
    if "jax" in sys.modules:
        import jax

        stack.enter_context(jax.default_matmul_precision("highest"))
    with stack:
        yield


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each selected backend in turn; a test body runs on one backend only."""
    import crossgrad as cg

    return cg.backend(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_terminal_summary(terminalreporter):
    """The parity table: transform x problem x dtype, largest relative differences."""
    module = sys.modules.get("test_parity")
    rows = getattr(module, "SUMMARY", None)
    if not rows:
        return
    from tabulate import tabulate

    terminalreporter.section("parity: largest relative difference (torch vs jax, each vs reference)")
    table = [[r["transform"], r["problem"], r["dtype"], r["torch vs jax"], r["torch vs ref"], r["jax vs ref"]] for r in rows]
    terminalreporter.write_line(tabulate(table, headers=["transform", "problem", "dtype", "torch vs jax", "torch vs ref", "jax vs ref"],
                                         floatfmt=".1e"))


# The slow suite (`make test-slow`; `make test` leaves it out to stay within its time):
# end-to-end runs of the examples in fresh interpreters, the leak checks (hundreds of calls
# per transform), and the largest jax compilations of one test.  Node ids, matched by prefix.
SLOW = (
    "tests/test_curvature.py::test_trace_estimators_are_unbiased[jax-hutchinson]",
    "tests/test_curvature.py::test_jit_and_vmap_of_the_single_point_form[torch]",
    "tests/test_exact_routes.py::test_the_taylor_route_is_exact_where_the_shortcut_is_not[jax-complex abs]",
    "tests/test_curvature.py::test_diagonal_estimator_is_unbiased[jax]",
    "tests/test_curvature.py::test_batched_forms_match_the_batched_hessian[jax-logsumexp_4_B3]",
    "tests/test_curvature.py::test_exact_trace_and_diagonal_match_the_dense_hessian[jax-tanh_linear_4to5_argnums(0, 1)]",
    "tests/test_curvature.py::test_has_aux_tuple_argnums_and_pytrees[jax]",
    "tests/test_curvature.py::test_operations_outside_the_benchmark[jax-vector_output]",
    "tests/test_examples.py::test_notebook_walkthrough_runs",
    "tests/test_examples.py::test_scale_out_example_runs",
    "tests/test_examples.py::test_models_example_matches_the_frameworks",
    "tests/test_examples.py::test_memory_bounded_example_chunks_and_agrees",
    "tests/test_examples.py::test_sparse_newton_example_converges_on_both_backends",
    "tests/test_examples.py::test_readme_sparse_example_runs_as_written",
    "tests/test_leaks.py::",
    "tests/test_curvature.py::test_exact_trace_and_diagonal_match_the_dense_hessian[jax-mlp_params",
    "tests/test_curvature.py::test_exact_trace_and_diagonal_match_the_dense_hessian[jax-mlp_dict",
    "tests/test_routes.py::test_batch_inside_options[jax]",
    # The slowest eager-jax cases (each primitive compiled on its own: 7-12 s a test), kept
    # to the slow suite so that make test stays within 10 minutes on 2 cores.
    "tests/test_curvature.py::test_batched_estimators_draw_per_sample[jax]",
    "tests/test_curvature.py::test_trace_estimators_are_unbiased[jax-hutch++]",
    "tests/test_models.py::test_equinox_model_against_filter_grad",
    "tests/test_wiring.py::test_options_validated_once_and_signatures_checked_once[jax-batched_hessian_diagonal-auto]",
    "tests/test_curvature.py::test_batched_forms_match_the_batched_hessian[jax-critic_td_err_4_B3]",
    "tests/test_transforms.py::test_hessian[jax-mlp_params_2-5-3-fwd-rev-builtin]",
    "tests/test_curvature.py::test_exact_trace_and_diagonal_match_the_dense_hessian[jax-logsumexp_6]",
    "tests/test_memory.py::test_small_budget_chunks_and_agrees[jax-hessian]",
    # The heaviest eager-jax cases whose path a lighter sibling covers in make test (another
    # problem, the other order, torch, a smaller batch), so that make test fits 6 minutes.
    "tests/test_hardening.py::test_check_grads_passes_on_the_catalog[jax-mlp_params_2-5-3-1]",
    "tests/test_hardening.py::test_check_grads_passes_on_the_catalog[jax-mlp_params_2-5-3-2]",
    "tests/test_hardening.py::test_check_grads_passes_on_the_catalog[jax-mlp_dict_3x4-2]",
    "tests/test_hardening.py::test_threads_get_the_serial_results[jax-hessian fwd-rev]",
    "tests/test_hardening.py::test_threads_get_the_serial_results[jax-batched_hessian]",
    "tests/test_edge_shapes.py::test_jacobians_and_hessians_of_odd_shapes[jax-shape2-builtin]",
    "tests/test_sparse.py::test_batched_sparse_transforms_match_per_sample_dense[jax-2]",
    "tests/test_fuzz_programs.py::test_the_fourth_order_route_agrees_with_nested_hessians_on_drawn_programs[jax]",
    "tests/test_wiring.py::test_batch_and_basis_chunks_agree_with_no_chunks[jax-batched_hessian]",
    "tests/test_memory.py::test_small_budget_chunks_and_agrees[jax-jacfwd]",
    "tests/test_curvature.py::test_torch_and_jax_agree[mlp_params_2-5-3-float32]",
    "tests/test_curvature.py::test_torch_and_jax_agree[mlp_params_2-5-3-float64]",
    "tests/test_jit.py::test_torch_compile_of_vmap_hessian_falls_back",  # torch.compile's own compile time
    "tests/test_sparse.py::test_a_given_pattern_in_every_form[jax]",
)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
