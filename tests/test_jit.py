"""cg.jit: compiled when the compiler works, eager (with one warning) when it does not."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad import backends
from crossgrad.testing import frameworks, problems

DTYPE = "float32"


def _batched(backend, transform="batched_hessian"):
    prob = problems.tanh_linear(n_in=31, n_out=33, batch=4)
    f = prob.build(frameworks.ops(backend.name))
    args = frameworks.convert(prob.inputs(np.random.default_rng(0)), backend.name, DTYPE)
    return getattr(backend, transform)(f, argnums=2, in_axes=(None, None, 0)), args


def _failing_compiler(name: str) -> dict:
    """Compiler options under which compilation itself fails."""
    if name == "torch":
        def broken_backend(gm, example_inputs):
            raise RuntimeError("this compiler backend cannot compile anything")

        return {"backend": broken_backend}
    return {"static_argnums": 0}  # an array cannot be a static (hashable) argument


def test_compiles_and_agrees(backend):
    h, args = _batched(backend, "batched_jacobian")
    options = {"backend": "aot_eager"} if backend.name == "torch" else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        fast = backend.jit(h, check=True, options=options)
        got = fast(*args)
    frameworks.assert_trees_close(got, h(*args), **TOL[DTYPE]["same"])


def test_compile_failure_warns_once_and_runs_eagerly(backend):
    h, args = _batched(backend)
    fast = backend.jit(h, options=_failing_compiler(backend.name))
    with pytest.warns(cg.CompileFallbackWarning, match=f"jit: {backend.name} compilation failed"):
        first = fast(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        second = fast(*args)
    for got in (first, second):
        frameworks.assert_trees_close(got, h(*args), **TOL[DTYPE]["same"])


def test_torch_compile_of_vmap_hessian_falls_back():
    """torch.compile of vmap(hessian) fails for the notebook's shapes (torch 2.11 and 2.13):
    the default compiler, no injected failure.  Passes, without a warning, once torch fixes it."""
    pytest.importorskip("torch")
    ns = cg.backend("torch")
    h, args = _batched(ns)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ns.jit(h)(*args)
    fallbacks = [w for w in caught if issubclass(w.category, cg.CompileFallbackWarning)]
    assert len(fallbacks) <= 1
    frameworks.assert_trees_close(got, h(*args), **TOL[DTYPE]["same"])


def test_jax_python_branch_falls_back():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def branchy(x):
        return jnp.sum(jnp.sin(x)) if x.sum() > 0 else jnp.sum(jnp.cos(x))

    fast = cg.jit(cg.jax.grad(branchy))
    with pytest.warns(cg.CompileFallbackWarning, match="ControlFlowError"):
        up = fast(jnp.ones(3))
    down = fast(-jnp.ones(3))
    np.testing.assert_allclose(np.asarray(up), np.cos(np.ones(3)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(down), np.sin(np.ones(3)), rtol=1e-6)


def test_a_python_side_effect_is_never_baked_in(backend):
    """A function with a Python side effect: compiled once at trace time, it would keep
    the value seen then; eager execution sees the new one.  jit notices that the call
    changed what the function reads (NOTE [jit guards]): every result is eager's, and
    once a second call changes it too, the signature runs eagerly with a warning."""
    scale = [1.0]

    def impure(x):
        scale[0] += 1.0
        return x * scale[0]

    x = frameworks.convert(np.ones(3), backend.name, DTYPE)
    options = {"backend": "aot_eager"} if backend.name == "torch" else None
    # A compiled route by name: route="auto" may measure eager execution fastest for so small a function.
    route = "trace-compile" if backend.name == "torch" else "compile"
    fast = backend.jit(impure, options=options, route=route)
    got = fast(x)
    assert float(frameworks.to_numpy(got)[0]) == scale[0] == 2.0  # eager's value is the one returned
    with pytest.warns(cg.CompileFallbackWarning, match="a Python side effect"):
        got = fast(x)
    assert float(frameworks.to_numpy(got)[0]) == scale[0] == 3.0
    assert float(frameworks.to_numpy(fast(x))[0]) == scale[0] == 4.0


def test_check_catches_a_compiled_result_that_differs(backend):
    """A compiled route whose result differs from eager execution's is never kept: the
    traced routes compare with the traced call itself; ``check=True`` makes the
    framework's compiler compare with an eager call too."""
    x = frameworks.convert(np.ones(3), backend.name, DTYPE)
    bad = _miscompiling_compiler(backend)
    fast = backend.jit(lambda x: x * 2.0, check=True, route="compile")
    with mock.patch.object(backends.load(backend.name).builtins, "compile", bad), \
            pytest.warns(cg.CompileFallbackWarning, match="differs from eager execution"):
        got = fast(x)
    np.testing.assert_allclose(frameworks.to_numpy(got), 2.0 * np.ones(3))
    if backend.name == "torch":
        fast = backend.jit(lambda x: x * 2.0, route="trace-compile")
        with mock.patch.object(backends.load(backend.name).builtins, "compile_traced",
                               lambda graph, options, example: bad(graph, options)), \
                pytest.warns(cg.CompileFallbackWarning, match="differs from eager execution"):
            got = fast(x)
        np.testing.assert_allclose(frameworks.to_numpy(got), 2.0 * np.ones(3))
        np.testing.assert_allclose(frameworks.to_numpy(fast(x)), 2.0 * np.ones(3))


def _miscompiling_compiler(backend):
    """A stand-in for a compiler that miscompiles: its program adds one to every result."""
    def compile(fn, options):
        return lambda *args, **kwargs: _plus_one(fn(*args, **kwargs))
    return compile


def _plus_one(out):
    if isinstance(out, tuple):
        return tuple(o + 1 for o in out)
    return out + 1


def test_errors_of_the_function_itself_propagate(backend):
    fast = backend.jit(backend.grad(lambda x: x))  # not a scalar output: an error eager raises too
    x = frameworks.convert(np.ones(3), backend.name, DTYPE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        with pytest.raises(cg.NonScalarOutputError):
            fast(x)


@pytest.mark.parametrize(("kwargs", "error"), [({"check": 1}, cg.OptionTypeError), ({"options": "fast"}, cg.OptionTypeError)])
def test_bad_options(backend, kwargs, error):
    with pytest.raises(error, match=r"^jit: expected"):
        backend.jit(lambda x: x, **kwargs)


def test_a_list_of_one_array_is_traced_like_any_pytree():
    """The positional-arrays fast path of the traced routes takes arrays only: a list
    holding one tensor goes through the pytree walk (it once reached the graph as a list)."""
    torch = pytest.importorskip("torch")
    fast = cg.torch.jit(lambda xs: xs[0] * 2.0, route="trace")
    x = torch.arange(3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        for _ in range(2):
            torch.testing.assert_close(fast([x]), x * 2.0)
