"""The public surface: identical namespaces, lazy imports, backend inference, interop."""

from __future__ import annotations

import inspect
import subprocess
import sys

import numpy as np
import pytest

import crossgrad as cg
from crossgrad import spec
from crossgrad.testing import frameworks


def public(ns):
    return {n: getattr(ns, n) for n in dir(ns) if not n.startswith("_") and callable(getattr(ns, n))}


def test_namespaces_have_the_same_names_and_signatures():
    torch_ns, jax_ns = public(cg.backend("torch")), public(cg.backend("jax"))
    assert sorted(torch_ns) == sorted(jax_ns) == sorted(spec.TRANSFORMS + spec.TOOLS)
    for name in spec.TRANSFORMS + spec.TOOLS:
        assert inspect.signature(torch_ns[name]) == inspect.signature(jax_ns[name]), name
        assert inspect.signature(getattr(cg, name)) == inspect.signature(torch_ns[name]), name


def test_the_namespace_attributes_are_the_catalogs():
    """The namespace class binds each transform from the room the catalog names
    (``spec.TRANSFORM_ROOMS``, ``spec.TOOL_ROOMS``), in the block the catalog writes: a
    transform added to the catalog and not written there, or moved, fails here (rewrite it
    with ``python -m crossgrad.testing.signatures``)."""
    from pathlib import Path

    from crossgrad.testing import signatures
    from crossgrad.transforms import namespace

    assert signatures.namespace_block() in Path(namespace.__file__).read_text()
    for name, room in {**spec.TRANSFORM_ROOMS, **spec.TOOL_ROOMS}.items():
        assert namespace.public(name).fn.__module__ == f"crossgrad.transforms.{room}", name


def test_attribute_and_function_access_agree():
    assert cg.torch is cg.backend("torch") and cg.jax is cg.backend("jax")


def test_import_crossgrad_imports_no_framework():
    code = "import sys, crossgrad, crossgrad.spec, crossgrad.errors; print(sorted({'torch', 'jax', 'jaxlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_framework_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import crossgrad as cg\n"
        "try:\n    cg.backend('torch')\nexcept cg.BackendUnavailableError as e:\n    print(isinstance(e, ImportError), e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("True backend: expected the torch package to be importable")
    assert "pip install 'crossgrad[torch]'" in out


@pytest.mark.parametrize(("convert", "missing"), [("to_jax", "jax"), ("to_torch", "torch")])
def test_conversion_without_the_target_framework(convert, missing):
    """cg.to_jax without jax (cg.to_torch without torch) is the named error, not a raw ImportError."""
    code = (
        f"import sys, numpy as np; sys.modules[{missing!r}] = None\n"
        "import crossgrad as cg\n"
        f"try:\n    cg.{convert}(np.ones(2, dtype=np.float32))\n"
        "except cg.BackendUnavailableError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"{convert}: expected the {missing} package to be importable")
    assert f"pip install 'crossgrad[{missing}]'" in out


def test_unknown_backend_name():
    with pytest.raises(cg.OptionError, match="one of 'torch', 'jax'"):
        cg.backend("numpy")


@pytest.mark.parametrize("name", frameworks.selected())
def test_top_level_dispatch_matches_the_backend(name, rng):
    """cg.batched_hessian(...) on torch tensors or jax arrays gives that backend's numbers."""
    from crossgrad.testing.problems import tanh_linear

    problem = tanh_linear(n_in=3, n_out=2, batch=4)
    f = problem.build(frameworks.ops(name))
    args = frameworks.convert(problem.inputs(rng), name, "float64")
    top = cg.batched_hessian(f, argnums=2, in_axes=(None, None, 0))(*args)
    direct = cg.backend(name).batched_hessian(f, argnums=2, in_axes=(None, None, 0))(*args)
    assert type(top).__module__.split(".")[0] in (name, "jaxlib")
    frameworks.assert_trees_close(top, direct, rtol=0, atol=0)
    out, vjp_fn = cg.vjp(lambda x: x * 2.0, args[2])
    frameworks.assert_trees_close(vjp_fn(out)[0], 4.0 * frameworks.to_numpy(args[2]), rtol=1e-12, atol=0)


def test_top_level_validates_options_at_creation():
    with pytest.raises(cg.OptionError, match="chunk_size >= 1"):
        cg.jacrev(lambda x: x, chunk_size=0)
    with pytest.raises(TypeError):
        cg.jacrev(lambda x: x, 0, False, None, "extra")


def test_top_level_without_arrays():
    with pytest.raises(cg.BackendInferenceError, match="at least one torch tensor or jax array"):
        cg.grad(lambda x: x * x)(3.0)


def test_interop_round_trip():
    import jax.numpy as jnp
    import torch

    t = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_()
    j = cg.to_jax(t)
    assert j.dtype == jnp.float32 and j.shape == (2, 3)
    back = cg.to_torch(j, copy=True)
    assert torch.equal(back, t.detach()) and not back.requires_grad
    tree = cg.to_jax({"a": t, "b": [torch.ones(2, dtype=torch.float64)]})
    assert tree["b"][0].dtype == jnp.float64  # the test process runs with x64 on


def test_interop_refuses_silent_float64_truncation():
    import jax
    import torch

    with jax.enable_x64(False):
        with pytest.raises(cg.X64DisabledError, match="to_jax: expected arrays jax can hold"):
            cg.to_jax(torch.ones(2, dtype=torch.float64))
        with pytest.raises(cg.X64DisabledError):
            cg.to_jax(np.ones(2))


def test_dict_keys_come_back_in_each_frameworks_order(rng):
    """NOTE [pytree conventions]: jax sorts plain dict keys, torch keeps insertion order."""
    z, a = rng.standard_normal(2), rng.standard_normal(2)
    for name in frameworks.selected():
        ops = frameworks.ops(name)
        params = {"z": frameworks.convert(z, name, "float64"), "a": frameworks.convert(a, name, "float64")}
        g = cg.backend(name).grad(lambda p, ops=ops: ops.sum(p["z"] * p["a"]))(params)
        assert list(g) == (["a", "z"] if name == "jax" else ["z", "a"]), name


def test_one_table_drives_the_top_level():
    """Every transform and tool is at the top level, evaluated at once exactly where
    spec.EVALUATE_AT_ONCE says so (the rest return a function)."""
    import inspect

    from crossgrad import spec

    assert set(spec.EVALUATE_AT_ONCE) <= set(spec.TRANSFORMS + spec.TOOLS)
    for name in spec.TRANSFORMS + spec.TOOLS:
        top = getattr(cg, name)
        params = inspect.signature(top).parameters
        assert name in cg.__all__
        if name in spec.EVALUATE_AT_ONCE:
            assert all(p in params for p in spec.EVALUATE_AT_ONCE[name]), name


def test_the_typed_signatures_are_the_catalogs():
    """crossgrad/__init__.py's TYPE_CHECKING block (what mypy checks users' calls against)
    is the one the catalog writes, and declares every transform and tool, with the runtime
    signature of each: a changed signature that was not written there fails here
    (rewrite it with ``python -m crossgrad.testing.signatures``)."""
    import ast
    from pathlib import Path

    from crossgrad.testing import signatures

    source = Path(cg.__file__).read_text()
    assert signatures.block() in source
    typed = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)
             and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
             and node.body[0].value.value is Ellipsis]
    assert [node.name for node in typed] == list(spec.TRANSFORMS + spec.TOOLS)
    for node in typed:
        declared = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
        declared += [node.args.vararg.arg] if node.args.vararg else []
        assert sorted(declared) == sorted(inspect.signature(getattr(cg, node.name)).parameters), node.name
