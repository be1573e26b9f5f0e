"""Every bad input raises a named crossgrad error with the same type and message on both
backends (validation lives in shared code).  The exact texts are pinned here."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks


def x_of(name, dtype="float64", shape=(3,)):
    return frameworks.ops(name).asarray(np.arange(np.prod(shape), dtype=float).reshape(shape) + 1.0, dtype)


def square_sum(name):
    ops = frameworks.ops(name)
    return lambda x, *rest: ops.sum(x * x)


# (label, call(backend_name, namespace), expected type, exact message)
CASES = [
    ("argnums out of range", lambda n, ns: ns.grad(square_sum(n), argnums=2)(x_of(n)), cg.ArgnumsError,
     "grad: expected argnums in range for 1 positional argument(s), but got argnums=2. "
     "The function was called with 1 positional argument(s): use indices in [-1, 0]."),
    ("argnums duplicated", lambda n, ns: ns.jacrev(square_sum(n), argnums=(1, 1)), cg.ArgnumsError,
     "jacrev: expected distinct argnums, but got argnums=(1, 1) with a repeated index. "
     "Pass an int (negative counts from the end) or a tuple of distinct ints, e.g. argnums=(0, 2)."),
    ("argnums duplicated through a negative index", lambda n, ns: ns.jacrev(square_sum(n), argnums=(0, -2))(x_of(n), x_of(n)),
     cg.ArgnumsError,
     "jacrev: expected distinct argnums, but got argnums=(0, -2), which name the same argument twice. "
     "The function was called with 2 positional argument(s): use indices in [-2, 1]."),
    ("argnums float", lambda n, ns: ns.hessian(square_sum(n), argnums=1.0), cg.ArgnumsTypeError,
     "hessian: expected an int or a tuple of ints for argnums, but got 1.0 of type float. "
     "Pass an int (negative counts from the end) or a tuple of distinct ints, e.g. argnums=(0, 2)."),
    ("argnums bool", lambda n, ns: ns.grad(square_sum(n), argnums=True), cg.ArgnumsTypeError,
     "grad: expected an int or a tuple of ints for argnums, but got True of type bool. "
     "Pass an int (negative counts from the end) or a tuple of distinct ints, e.g. argnums=(0, 2)."),
    ("argnums empty", lambda n, ns: ns.jacobian(square_sum(n), argnums=()), cg.ArgnumsError,
     "jacobian: expected at least one argument index in argnums, but got an empty tuple. "
     "Pass an int (negative counts from the end) or a tuple of distinct ints, e.g. argnums=(0, 2)."),
    ("has_aux without a pair", lambda n, ns: ns.jacrev(lambda x: x * 2.0, has_aux=True)(x_of(n)), cg.HasAuxError,
     "jacrev: expected the function to return a pair (output, aux) because has_aux=True, but got a single array. "
     "Return (output, aux) from the function, or pass has_aux=False."),
    ("integer input", lambda n, ns: ns.grad(square_sum(n))(x_of(n, "int32")), cg.InputDtypeError,
     "grad: expected real floating-point inputs for the differentiated arguments, but got dtype int32 at argument 0. "
     "Convert the input to a float dtype (e.g. float32 or float64), or leave it out of argnums."),
    ("non-scalar output to grad", lambda n, ns: ns.grad(lambda x: x * 2.0)(x_of(n)), cg.NonScalarOutputError,
     "grad: expected a function with a scalar output (shape ()), but got an output of shape (3,). "
     "Reduce the output to a scalar with output.sum(), or use jacobian / hessian for array outputs."),
    ("non-scalar output to hvp", lambda n, ns: ns.hvp(lambda x: x * 2.0, (x_of(n),), (x_of(n),)), cg.NonScalarOutputError,
     "hvp: expected a function with a scalar output (shape ()), but got an output of shape (3,). "
     "Reduce the output to a scalar with output.sum(), or use jacobian / hessian for array outputs."),
    ("vmap axis sizes differ", lambda n, ns: ns.vmap(lambda a, b: a * b)(x_of(n, shape=(3, 2)), x_of(n, shape=(4, 2))),
     cg.AxisSizeError,
     "vmap: expected all mapped axes to have the same size, but got sizes argument 0: 3, argument 1: 4. "
     "Make the batch sizes agree, or mark unbatched arguments with None in in_axes."),
    ("vmap axis out of range", lambda n, ns: ns.vmap(lambda a: a, in_axes=1)(x_of(n)), cg.AxisError,
     "vmap: expected an axis in [-1, 0] for argument 0, but got in_axes entry 1 for an array of shape (3,). "
     "Pick an axis the array has, or None for an unbatched argument."),
    ("chunk_size zero", lambda n, ns: ns.jacfwd(square_sum(n), chunk_size=0), cg.OptionError,
     "jacfwd: expected chunk_size >= 1, but got chunk_size=0. Pass a positive int, chunk_size=\"auto\" to fit a memory budget, or chunk_size=None to process everything at once."),
    ("chunk_size negative on vmap", lambda n, ns: ns.vmap(square_sum(n), chunk_size=-3), cg.OptionError,
     "vmap: expected chunk_size >= 1, but got chunk_size=-3. Pass a positive int, chunk_size=\"auto\" to fit a memory budget, or chunk_size=None to process everything at once."),
    ("unknown mode", lambda n, ns: ns.jacobian(square_sum(n), mode="reverse"), cg.OptionError,
     "jacobian: expected mode to be one of 'auto', 'rev', 'fwd', 'loop', but got mode='reverse'. Pick one of 'auto', 'rev', 'fwd', 'loop'."),
    ("unknown strategy", lambda n, ns: ns.batched_hessian(square_sum(n), strategy="fwd-over-rev"), cg.OptionError,
     "batched_hessian: expected strategy to be one of 'auto', 'fwd-rev', 'rev-rev', 'rev-fwd', 'fwd-fwd', 'loop', "
     "but got strategy='fwd-over-rev'. Pick one of 'auto', 'fwd-rev', 'rev-rev', 'rev-fwd', 'fwd-fwd', 'loop'."),
    ("unknown impl", lambda n, ns: ns.grad(square_sum(n), impl="fast"), cg.OptionError,
     "grad: expected impl to be one of 'auto', 'builtin', 'composed', but got impl='fast'. Pick one of 'auto', 'builtin', 'composed'."),
    ("has_aux not a bool", lambda n, ns: ns.jacrev(square_sum(n), has_aux="yes"), cg.OptionTypeError,
     "jacrev: expected has_aux to be True or False, but got 'yes'. Pass has_aux=True or has_aux=False."),
    ("not callable", lambda n, ns: ns.hessian(3), cg.OptionTypeError,
     "hessian: expected a callable as its first argument, but got 3 of type int. Pass the function to transform, e.g. hessian(f)."),
    ("memory budget not positive", lambda n, ns: cg.memory_budget(0).__enter__(), cg.OptionError,
     "memory_budget: expected a positive number of bytes, but got 0. Pass an int, e.g. memory_budget(2 * 1024**3) for 2 GiB."),
    ("jit check not a bool", lambda n, ns: ns.jit(square_sum(n), check="yes"), cg.OptionTypeError,
     "jit: expected check to be True or False, but got 'yes'. Pass check=True or check=False."),
    ("gather not a bool", lambda n, ns: ns.batched_hessian(square_sum(n), devices="all", gather=1), cg.OptionTypeError,
     "batched_hessian: expected gather to be True or False, but got 1. Pass gather=True or gather=False."),
    ("stream start past the batch", lambda n, ns: next(cg.stream(lambda x: x, x_of(n, shape=(3, 2)), chunk_size=2, start=5)),
     cg.OptionError,
     "stream: expected start between 0 and the batch size 3, but got start=5. "
     "Pass start=0, or the `done` of the ChunkError to resume after a failure."),
    ("builtin lacks chunk_size", lambda n, ns: ns.jacfwd(square_sum(n), chunk_size=2, impl="builtin"), cg.UnsupportedOptionError,
     None),
]


CASES += [
    ("torch.func's in_dims", lambda n, ns: ns.vmap(square_sum(n), in_dims=0), cg.UnknownOptionError,
     "vmap: expected one of its parameters (f, in_axes, out_axes, chunk_size, impl, devices, gather, randomness), "
     "but got the keyword in_dims=0. Write in_axes= instead (crossgrad follows jax's names: torch.func's in_dims is "
     "in_axes, out_dims is out_axes)."),
    ("a misspelled option", lambda n, ns: ns.jacobian(square_sum(n), mdoe="rev"), cg.UnknownOptionError,
     "jacobian: expected one of its parameters (f, argnums, has_aux, mode, chunk_size, impl), but got the keyword "
     "mdoe='rev'. Write mode= instead."),
]


def run(case, name):
    _label, call, kind, _text = case
    ns = cg.backend(name)
    with pytest.raises(kind) as info:
        call(name, ns)
    return info.value


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_error_is_named_and_identical_on_both_backends(case):
    label, _call, kind, text = case
    errs = {name: run(case, name) for name in frameworks.selected()}
    for name, err in errs.items():
        assert isinstance(err, cg.CrossgradError) and isinstance(err, (TypeError, ValueError)), name
        assert type(err) is kind, f"{name}: {type(err).__name__}"
        message = str(err).replace("ndarray", "Tensor").replace("ArrayImpl", "Tensor")
        if text is not None:
            assert message == text, f"{name}: {err}"
    if len(errs) == 2 and label != "builtin lacks chunk_size":
        t, j = (str(e).replace("ArrayImpl", "Tensor") for e in errs.values())
        assert t == j


def test_builtin_lacking_an_option_names_the_fix():
    err = run(next(c for c in CASES if c[0] == "builtin lacks chunk_size"), "jax")
    assert str(err) == (
        "jacfwd: expected options that the jax built-in supports with impl='builtin', but got chunk_size=2. "
        "Use impl='composed' (or impl='auto', which picks crossgrad's composition when the built-in lacks an option)."
    )


def test_mixed_frameworks_in_one_call():
    import jax.numpy as jnp
    import torch

    with pytest.raises(cg.MixedFrameworksError) as info:
        cg.jacrev(lambda a, b: a * 2.0)(torch.ones(2), jnp.ones(2))
    assert str(info.value) == (
        "jacrev: expected arrays of one framework, but got torch tensors and jax arrays in one call. "
        "Convert one side with crossgrad.to_torch or crossgrad.to_jax."
    )
    with pytest.raises(cg.MixedFrameworksError, match="expected torch arrays for the torch backend"):
        cg.torch.jacrev(lambda a: a)(jnp.ones(2))


def test_float64_numpy_input_without_x64_is_an_error():
    import jax

    with jax.enable_x64(False):
        with pytest.raises(cg.X64DisabledError) as info:
            cg.jax.grad(lambda x: (x * x).sum())(np.ones(3))
    assert "jax would turn it into float32" in str(info.value)
    assert "jax_enable_x64" in str(info.value)


@pytest.mark.parametrize("transform", ["vmap", "batched_jacobian", "batched_hessian"])
def test_data_dependent_control_flow_is_named(transform):
    messages = {}
    for name in frameworks.selected():
        ops = frameworks.ops(name)

        def f(x, ops=ops):
            return ops.sin(x) if float(ops.sum(x)) > 0 else ops.exp(x)

        with pytest.raises(cg.ControlFlowError) as info:
            getattr(cg.backend(name), transform)(f)(x_of(name, shape=(2, 3)))
        assert info.value.__cause__ is not None  # the framework's own error stays attached
        messages[name] = str(info.value)
    assert len(set(messages.values())) == 1
    assert next(iter(messages.values())) == (
        f"{transform}: expected a function whose Python control flow does not depend on array values, but got an if, "
        "bool(), int() or float() on an array being transformed. Select with where(cond, a, b) (torch.where / "
        "jnp.where) instead of branching, or compute the condition outside the transformed function and pass it in.")


def test_global_randomness_under_vmap_is_named():
    """torch draws from a global generator (refused under vmap); jax has none: its random
    functions take explicit keys, so there is nothing to refuse."""
    torch = pytest.importorskip("torch")
    with pytest.raises(cg.RandomnessError) as info:
        cg.torch.vmap(lambda x: x + torch.randn(()))(torch.ones(3))
    assert str(info.value).startswith("vmap: expected a deterministic function under vmap, but got a call to a random "
                                      "operation of the framework's global generator.")


def test_a_shape_error_inside_a_batched_function_names_the_sample_it_was_given():
    """The framework's own text differs; what crossgrad adds (the transform, the argument, its
    shape and the sample shape) is the same on both backends."""
    for name in frameworks.selected():
        ops = frameworks.ops(name)
        w = ops.asarray(np.ones((3, 8)), "float64")
        with pytest.raises(cg.SampleShapeError) as info:
            cg.backend(name).batched_jacobian(lambda x, w=w: x @ w)(x_of(name, shape=(5, 4)))
        text = str(info.value)
        assert text.startswith("batched_jacobian: expected a function of one sample (each mapped argument with its "
                               "batch axis removed), but got a shape error inside it (")
        assert text.endswith("where it was given argument 0: (5, 4) -> one sample (4,) (axis 0 removed). Check the "
                             "function on one sample, e.g. f(x[0]): the batch axis is not there inside it; a weight's "
                             "shape must match the sample's feature size.")


@pytest.mark.parametrize("transform", ["vmap", "batched_laplacian"])
def test_a_sample_with_fewer_axes_than_f_needs_is_named(transform):
    """A batch of scalars given to a function of vectors (the batch axis taken from the
    features): a product with a scalar, refused with each framework's text, is the named
    error, through vmap and through the Laplacian's recorded program alike."""
    for name in frameworks.selected():
        ops = frameworks.ops(name)
        w = ops.asarray(np.ones((3, 4)), "float64")
        with pytest.raises(cg.SampleShapeError, match=r"argument 0: \(4,\) -> one sample \(\) \(axis 0 removed\)"):
            getattr(cg.backend(name), transform)(lambda x, w=w: (w @ x).sum())(x_of(name, shape=(4,)))


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="needs both frameworks")
def test_a_function_written_for_the_other_framework_is_named():
    import jax.numpy as jnp
    import torch

    with pytest.raises(cg.ForeignFunctionError) as info:
        cg.grad(lambda x: torch.sin(x).sum())(jnp.ones(3))
    assert str(info.value).startswith("grad: expected a function written with jax's operations for the jax arrays it "
                                      "is given, but got a function that calls torch's operations (")
    assert str(info.value).endswith("Call it with torch arrays (crossgrad picks the backend from the arrays; "
                                    "crossgrad.to_torch(x) converts them), or write it with jax's operations.")
    with pytest.raises(cg.ForeignFunctionError, match=r"^grad: expected a function written with torch's operations"):
        cg.grad(lambda x: jnp.sin(x).sum())(torch.ones(3))
    held = torch.ones(3)
    with pytest.raises(cg.ForeignFunctionError, match=r"a torch array it closes over or builds .*crossgrad\.to_jax"):
        cg.grad(lambda x: (jnp.sin(x) * held).sum())(jnp.ones(3))
