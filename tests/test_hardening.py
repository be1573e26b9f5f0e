"""Evaluations crossgrad adds to the user's function leave the caller's arrays, random
state and functions as they were (regressions of silent side effects)."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks
from crossgrad.transforms.call import Call


def test_the_shape_probe_runs_on_copies(backend):
    """auto's extra evaluation of f (to learn the output size) never writes into the
    caller's arrays, differentiated or not."""
    if backend.name == "torch":
        def f(x, y):
            y.add_(1.0)
            x.mul_(3.0)
            return x * 2
    else:
        def f(x, y):
            return x * 2
    x = frameworks.convert(np.ones(3), backend.name, "float64")
    y = frameworks.convert(np.zeros(3), backend.name, "float64")
    call = Call("jacobian", backend.backend, f, (x, y), {}, 0, False)
    assert call.output_shapes() == [((3,), 8, "float64")]
    np.testing.assert_array_equal(frameworks.to_numpy(x), np.ones(3))
    np.testing.assert_array_equal(frameworks.to_numpy(y), np.zeros(3))


def test_auto_draws_as_one_call():
    """torch's global generator (jax has none) advances as one evaluation of f does,
    although auto evaluates f once more to choose its mode.  (A Hessian vmaps f, where
    a global draw is refused: RandomnessError.)"""
    torch = pytest.importorskip("torch")

    def noisy(x):
        return (x * torch.rand(3, dtype=x.dtype)).sum() * x

    x = torch.ones(3, dtype=torch.float64)
    with torch.random.fork_rng():
        start = torch.get_rng_state()
        noisy(x)
        after_one = torch.get_rng_state()
        torch.set_rng_state(start)
        cg.torch.jacobian(noisy, impl="composed")(x)
        assert torch.equal(torch.get_rng_state(), after_one)


# -- complex outputs of real inputs: forward answers, reverse refuses, never the real part --

def _complex_case(backend):
    import importlib

    mod = importlib.import_module("torch" if backend.name == "torch" else "jax.numpy")
    v = np.array([0.3, 0.7, -1.1])
    x = frameworks.convert(v, backend.name, "float64")
    return mod, v, x


@pytest.mark.parametrize("route", ["jacfwd", "jacobian", "jacobian fwd composed", "batched_jacobian"])
def test_complex_jacobians_by_forward_mode(backend, route):
    mod, v, x = _complex_case(backend)

    def f(x):
        return mod.exp(1j * x)

    expected = np.diag(1j * np.exp(1j * v))
    if route == "jacfwd":
        got = backend.jacfwd(f)(x)
    elif route == "jacobian":
        got = backend.jacobian(f)(x)  # auto picks forward mode for complex outputs
    elif route == "jacobian fwd composed":
        got = backend.jacobian(f, mode="fwd", impl="composed")(x)
    else:
        got = backend.batched_jacobian(f)(x[None])[0]
    np.testing.assert_allclose(frameworks.to_numpy(got), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("strategy", ["auto", "fwd-fwd"])
def test_complex_hessians_by_forward_over_forward(backend, strategy):
    mod, v, x = _complex_case(backend)
    got = backend.hessian(lambda x: mod.exp(1j * x).sum(), strategy=strategy)(x)
    np.testing.assert_allclose(frameworks.to_numpy(got), np.diag(-np.exp(1j * v)), rtol=1e-12, atol=1e-14)


def _reverse_route(backend, route):
    mod, _, x = _complex_case(backend)

    def f(x):
        return mod.exp(1j * x)

    def total(x):
        return mod.exp(1j * x).sum()

    calls = {
        "jacrev": lambda: backend.jacrev(f)(x),
        "jacrev builtin": lambda: backend.jacrev(f, impl="builtin")(x),
        "loop": lambda: backend.jacobian(f, mode="loop")(x),
        "hessian fwd-rev": lambda: backend.hessian(total, strategy="fwd-rev")(x),
        "hessian rev-rev": lambda: backend.hessian(total, strategy="rev-rev")(x),
        "hessian loop": lambda: backend.hessian(total, strategy="loop")(x),
        "grad": lambda: backend.grad(total)(x),
        "value_and_grad": lambda: backend.value_and_grad(total)(x),
        "hvp": lambda: backend.hvp(total, (x,), (x,)),
    }
    return calls[route]()


@pytest.mark.parametrize("route", ["jacrev", "jacrev builtin", "loop", "hessian fwd-rev", "hessian rev-rev",
                                   "hessian loop", "grad", "value_and_grad", "hvp"])
def test_complex_outputs_refused_by_reverse_routes_with_one_message(route):
    """The same named error with the same text on both backends (jax alone raises
    TypeError, torch a RuntimeError or nothing: crossgrad's loop kept the real part)."""
    messages = []
    for name in frameworks.selected():
        with pytest.raises(cg.ComplexOutputError) as err:
            _reverse_route(cg.backend(name), route)
        messages.append(str(err.value))
    assert len(set(messages)) == 1, messages
    assert "expected real outputs for reverse mode" in messages[0]


# -- valid input torch.func refuses and jax takes (issue: crashes on valid input) -----------

@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "jacobian", "jacrev", "hessian"])
def test_none_leaves_in_inputs(backend, transform):
    """None is an empty subtree on both backends; its derivative is None."""
    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")

    def f(t):
        return (t[0] ** 3).sum()

    got = getattr(backend, transform)(f)((x, None))
    if transform == "value_and_grad":
        value, got = got
        assert float(value) == 9.0
    expected = {"grad": [3.0, 12.0], "value_and_grad": [3.0, 12.0], "jacobian": [3.0, 12.0],
                "jacrev": [3.0, 12.0], "hessian": np.diag([6.0, 12.0])}[transform]
    assert isinstance(got, tuple) and got[1] is None
    if transform == "hessian":  # JAX's nesting: the input pytree outside, then inside
        assert got[0][1] is None
        got = got[0]
    np.testing.assert_allclose(frameworks.to_numpy(got[0]), expected)


def test_numpy_integer_argnums(backend):
    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")
    got = backend.grad(lambda a, b: (a * b * b).sum(), argnums=np.int64(1))(x, x)
    np.testing.assert_allclose(frameworks.to_numpy(got), [2.0, 8.0])


def test_inference_mode_tensors():
    """Tensors made under torch.inference_mode keep no version counter; crossgrad's
    input watch skips them instead of raising (jax has no such tensors)."""
    torch = pytest.importorskip("torch")
    with torch.inference_mode():
        x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(cg.torch.grad(lambda t: (t ** 3).sum())(x).numpy(), [3.0, 12.0])
    np.testing.assert_allclose(cg.torch.hessian(lambda t: (t ** 3).sum())(x).numpy(), np.diag([6.0, 12.0]))


def test_vjp_takes_a_dict_cotangent_in_the_functions_own_key_order(backend):
    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")
    for impl in ("builtin", "composed"):
        _, vjp_fn = backend.vjp(lambda t: {"b": t * 2, "a": t * 3}, x, impl=impl)
        (got,) = vjp_fn({"b": x, "a": x})
        np.testing.assert_allclose(frameworks.to_numpy(got), [5.0, 10.0])


@pytest.mark.parametrize("impl", ["auto", "composed"])
def test_negative_out_axes_on_an_output_that_ignores_the_batch(backend, impl):
    """jax broadcasts the unbatched output and moves the batch axis last; torch.func.vmap
    raised; crossgrad gives jax's answer on both."""
    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")
    batch = frameworks.convert(np.ones((3, 2)), backend.name, "float64")
    got = backend.vmap(lambda t: x * 1.0, out_axes=-1, impl=impl)(batch)
    np.testing.assert_allclose(frameworks.to_numpy(got), np.repeat([[1.0], [2.0]], 3, axis=1))


# -- float64 on jax with x64 off: X64DisabledError at every entry, never float32 ----------

def _x64_off_entries():
    import jax

    x32 = np.ones(3, dtype=np.float32)
    x64 = np.ones(3, dtype=np.float64)
    ns = cg.jax

    def scaled(x, scale):
        return (x * scale).sum()

    return jax, {
        "keyword argument of a transform": lambda: ns.grad(scaled)(jax.numpy.asarray(x32), scale=x64),
        "keyword argument of vmap": lambda: ns.vmap(lambda x, scale: x * scale)(jax.numpy.ones((2, 3)), scale=x64),
        "cg.jax.jit": lambda: ns.jit(lambda x: x * 2)(x64),
        "stream": lambda: list(cg.stream(ns.vmap(lambda x: x * 2), np.ones((4, 3)), chunk_size=2, backend="jax")),
        "stream_to": lambda: cg.stream_to(np.zeros((4, 3)), ns.vmap(lambda x: x * 2), np.ones((4, 3)), chunk_size=2,
                                          backend="jax"),
    }


@pytest.mark.parametrize("entry", ["keyword argument of a transform", "keyword argument of vmap", "cg.jax.jit",
                                   "stream", "stream_to"])
def test_float64_is_refused_at_every_entry_with_x64_off(entry):
    pytest.importorskip("jax")
    jax, entries = _x64_off_entries()
    with jax.enable_x64(False), pytest.raises(cg.X64DisabledError):
        entries[entry]()


def test_to_jax_refuses_int64_values_int32_cannot_hold():
    jax = pytest.importorskip("jax")
    with jax.enable_x64(False):
        small = cg.to_jax(np.array([1, -5, 2**31 - 1], dtype=np.int64))
        assert np.asarray(small).tolist() == [1, -5, 2**31 - 1]
        with pytest.raises(cg.X64DisabledError, match="values outside int32's range"):
            cg.to_jax(np.array([2**31], dtype=np.int64))
        torch = pytest.importorskip("torch")
        with pytest.raises(cg.X64DisabledError, match="values outside int32's range"):
            cg.to_jax(torch.tensor([-(2**40)], dtype=torch.int64))


# -- stream_to writes only what fits without loss ------------------------------------

@pytest.mark.parametrize("sink_dtype", ["uint8", "int32", "float16"])
def test_stream_to_refuses_lossy_sinks_unless_asked(backend, sink_dtype):
    x = frameworks.convert(np.full((4, 2), 1.7), backend.name, "float32")
    square = backend.vmap(lambda t: t * t)
    sink = np.zeros((4, 2), dtype=sink_dtype)
    with pytest.raises(cg.InputDtypeError, match=r"^stream_to: expected a sink that holds float32 results"):
        cg.stream_to(sink, square, x, chunk_size=2)
    assert not sink.any()  # nothing written
    assert cg.stream_to(sink, square, x, chunk_size=2, casting="unsafe") == 4
    np.testing.assert_array_equal(sink, np.full((4, 2), 1.7 * 1.7, dtype=np.float32).astype(sink_dtype))


def test_stream_to_refuses_chunks_without_their_rows_on_axis_0(backend):
    x = frameworks.convert(np.ones((4, 2)), backend.name, "float32")
    sink = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(cg.StructureError, match="with the chunk's 2 rows on axis 0"):
        cg.stream_to(sink, lambda t: t[:1], x, chunk_size=2)  # one row per chunk of two: would broadcast
    assert not sink.any()


def test_stream_to_casting_is_validated(backend):
    x = frameworks.convert(np.ones((4, 2)), backend.name, "float32")
    with pytest.raises(cg.OptionError, match="casting"):
        cg.stream_to(np.zeros((4, 2)), backend.vmap(lambda t: t), x, casting="lossy")


# -- raw framework errors where a named crossgrad error is promised ------------------------

def _raw_error_case(backend, case):
    x = frameworks.convert(np.ones((3, 2)), backend.name, "float64")
    x32 = frameworks.convert(np.ones((3, 2)), backend.name, "float32")
    short = frameworks.convert(np.ones(3), backend.name, "float64")
    cases = {
        "out_axes out of range": lambda: backend.vmap(lambda t: t * 2, out_axes=5)(x),
        "out_axes structure": lambda: backend.vmap(lambda t: (t, t), out_axes=(0, 0, 0))(x),
        "jvp tangent dtype": lambda: backend.jvp(lambda t: t * 2, (x,), (x32,)),
        "jvp tangent shape": lambda: backend.jvp(lambda t: t * 2, (x,), (short,)),
        "vjp cotangent shape": lambda: backend.vjp(lambda t: t * 2, x)[1](short),
        "in_axes on a non-array": lambda: backend.vmap(lambda t, s: t * s, in_axes=(0, 0))(x, 2.0),
        "boolean mask under vmap": lambda: backend.vmap(lambda t: t[t > 0].sum())(x),
        "jvp without primals": lambda: backend.jvp(lambda: 1.0, (), ()),
        "vjp without primals": lambda: backend.vjp(lambda: x),
        "a function returning None": lambda: backend.jacobian(lambda t: None)(x),
    }
    return cases[case]


@pytest.mark.parametrize(("case", "error"), [
    ("out_axes out of range", cg.AxisError), ("out_axes structure", cg.AxisError),
    ("jvp tangent dtype", cg.InputDtypeError), ("jvp tangent shape", cg.StructureError),
    ("vjp cotangent shape", cg.StructureError), ("in_axes on a non-array", cg.AxisError),
    ("boolean mask under vmap", cg.ControlFlowError), ("jvp without primals", cg.OptionError),
    ("vjp without primals", cg.OptionError), ("a function returning None", cg.OutputError),
])
def test_named_errors_with_one_text(case, error):
    messages = []
    for name in frameworks.selected():
        with pytest.raises(error) as err:
            _raw_error_case(cg.backend(name), case)()
        messages.append(str(err.value))
    assert len(set(messages)) == 1, messages


def test_a_tuple_prefix_for_a_list_or_namedtuple_argument_on_the_builtin(backend):
    """crossgrad reads a tuple in_axes prefix for a list (or namedtuple) argument as the
    same container; the framework's vmap, given it directly, refused it."""
    import collections

    pair = collections.namedtuple("pair", "a b")
    values = np.arange(6.0).reshape(3, 2)
    x = frameworks.convert(values, backend.name, "float64")
    for impl in ("builtin", "composed"):
        got = backend.vmap(lambda lst: lst[0] * lst[1], in_axes=((0, None),), impl=impl)([x, x[0]])
        np.testing.assert_allclose(frameworks.to_numpy(got), values * values[0])
        got = backend.vmap(lambda p: p.a + p.b, in_axes=((0, None),), impl=impl)(pair(x, x[0]))
        np.testing.assert_allclose(frameworks.to_numpy(got), values + values[0])


# -- auto's forward mode where only reverse works -------------------------------------------

def _reverse_only_cube(backend, k=3):
    """x ** 3 with a reverse rule only (``k * x ** 2``; 3 is right): a torch
    autograd.Function without jvp (nor a vmap rule), a jax custom_vjp."""
    if backend.name == "torch":
        import torch

        class Cube(torch.autograd.Function):
            @staticmethod
            def forward(x):
                return x ** 3

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(inputs[0])

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return k * x ** 2 * g

        return Cube.apply
    import jax

    @jax.custom_vjp
    def cube(x):
        return x ** 3

    cube.defvjp(lambda x: (x ** 3, x), lambda x, g: (k * x ** 2 * g,))
    return cube


def test_auto_falls_back_to_reverse_where_forward_mode_fails(backend, caplog):
    import logging

    cube = _reverse_only_cube(backend)
    w = np.random.default_rng(0).standard_normal((40, 3))
    wb = frameworks.convert(w, backend.name, "float64")
    x = frameworks.convert(np.array([0.5, -1.0, 2.0]), backend.name, "float64")
    jac = backend.jacobian(lambda v: cube(wb @ v))  # 3 inputs, 40 outputs: auto picks forward mode
    with caplog.at_level(logging.INFO, logger="crossgrad"):
        first = jac(x)
    second = jac(x)  # decided once per signature
    expected = 3 * (w @ frameworks.to_numpy(x))[:, None] ** 2 * w
    for got in (first, second):
        np.testing.assert_allclose(frameworks.to_numpy(got), expected, rtol=1e-12)
    assert sum("forward mode failed" in r.getMessage() for r in caplog.records) == 1
    # An explicit forward mode is the user's choice: the framework's refusal is not replaced.
    with pytest.raises((RuntimeError, TypeError), match=r"vmap|jvp|forward"):
        backend.jacobian(lambda v: cube(wb @ v), mode="fwd")(x)


# -- calls from several threads give the serial results -----------------------------------

@pytest.mark.parametrize("transform", ["jacfwd", "hessian fwd-rev", "hvp", "batched_hessian"])
def test_threads_get_the_serial_results(backend, transform):
    """torch's forward-mode state is process-global: four threads inside torch.func at once
    failed in every run ("no level exists"); crossgrad runs torch transform calls one at a
    time across threads, jax's concurrently."""
    import threading

    mod = __import__("torch" if backend.name == "torch" else "jax.numpy", fromlist=["tanh"])
    w = frameworks.convert(np.random.default_rng(0).standard_normal((20, 8)), backend.name, "float64")
    xs = [frameworks.convert(np.random.default_rng(k).standard_normal(8), backend.name, "float64") for k in range(4)]

    def f(x):
        return mod.tanh(w @ x)

    def g(x):
        return mod.tanh(w @ x).sum()

    work = {"jacfwd": lambda x: backend.jacfwd(f)(x),
            "hessian fwd-rev": lambda x: backend.hessian(g, strategy="fwd-rev")(x),
            "hvp": lambda x: backend.hvp(g, (x,), (x,)),
            "batched_hessian": lambda x: backend.batched_hessian(f)(frameworks.convert(
                np.stack([frameworks.to_numpy(x)] * 3), backend.name, "float64"))}[transform]
    serial = [frameworks.to_numpy(work(x)) for x in xs]
    for _ in range(3):
        results, errors_seen = [None] * 4, []

        def run(k, results, errors_seen):
            try:
                for _ in range(4):
                    results[k] = frameworks.to_numpy(work(xs[k]))
            except Exception as exc:  # collected: an assertion in a thread would be lost
                errors_seen.append(exc)

        threads = [threading.Thread(target=run, args=(k, results, errors_seen)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors_seen, errors_seen[0]
        for got, expected in zip(results, serial):
            np.testing.assert_allclose(got, expected, rtol=1e-12)


# -- check_grads: forward against reverse against finite differences ----------------------

@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("prob", [p for p in __import__("crossgrad.testing.problems", fromlist=["catalog"]).catalog()],
                         ids=lambda p: p.name)
def test_check_grads_passes_on_the_catalog(backend, prob, order):
    f = prob.build(frameworks.ops(backend.name))
    args = tuple(frameworks.convert(prob.inputs(np.random.default_rng(0)), backend.name, "float64"))
    assert backend.check_grads(f, args, order=order) is None


def _wrong_forward_rule(backend):
    """sin with a forward rule twice too large (a custom jvp that is wrong)."""
    if backend.name == "torch":
        import torch

        class Sin(torch.autograd.Function):
            generate_vmap_rule = True

            @staticmethod
            def forward(x):
                return torch.sin(x)

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(inputs[0])
                ctx.save_for_forward(inputs[0])

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return torch.cos(x) * g

            @staticmethod
            def jvp(ctx, t):
                (x,) = ctx.saved_tensors
                return 2 * torch.cos(x) * t

        return Sin.apply
    import jax

    @jax.custom_jvp
    def sin(x):
        return jax.numpy.sin(x)

    sin.defjvp(lambda primals, tangents: (jax.numpy.sin(primals[0]), 2 * jax.numpy.cos(primals[0]) * tangents[0]))
    return sin


def test_check_grads_catches_a_wrong_forward_rule(backend):
    sin = _wrong_forward_rule(backend)
    x = frameworks.convert(np.array([0.3, 0.7]), backend.name, "float64")
    with pytest.raises(cg.GradientCheckError, match=r"^check_grads: expected forward mode to agree with central"):
        backend.check_grads(sin, (x,))


def test_check_grads_catches_no_grad_seen_by_one_mode_only():
    """torch.no_grad inside f stops reverse mode but not forward mode: the two answer
    differently, and the adjoint identity says so."""
    torch = pytest.importorskip("torch")

    def f(x):
        with torch.no_grad():
            y = x * 3
        return y * x

    with pytest.raises(cg.GradientCheckError, match="forward and reverse mode to agree"):
        cg.torch.check_grads(f, (torch.tensor([0.3, 0.7], dtype=torch.float64),))


def test_check_grads_options_are_validated_alike():
    messages = []
    for name in frameworks.selected():
        x = frameworks.convert(np.ones(2), name, "float64")
        with pytest.raises(cg.OptionError) as err:
            cg.backend(name).check_grads(lambda t: t, (x,), order=3)
        messages.append(str(err.value))
    assert len(set(messages)) == 1


@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "jacobian", "jacfwd", "jacrev", "hessian",
                                       "laplacian", "hessian_diagonal", "batched_jacobian", "batched_hessian",
                                       "batched_laplacian", "vjp", "jvp"])
def test_aux_values_that_are_not_arrays(backend, transform):
    """NOTE [static aux]: ints, strings and flags in the aux come back at their places, the
    array leaves transformed as usual (batched by the batched transforms)."""
    ops = frameworks.ops(backend.name)
    batched = transform.startswith("batched")
    x = frameworks.convert(np.ones((3, 2) if batched else 2), backend.name, "float64")

    def f(v):
        return ops.sum(v ** 2), {"count": 3, "label": "loss", "flag": True, "twice": v * 2.0}

    if transform == "vjp":
        _, _, aux = backend.vjp(f, x, has_aux=True)
    elif transform == "jvp":
        _, _, aux = backend.jvp(f, (x,), (x,), has_aux=True)
    elif transform == "value_and_grad":
        (_, aux), _ = backend.value_and_grad(f, has_aux=True)(x)
    else:
        _, aux = getattr(backend, transform)(f, has_aux=True)(x)
    assert (aux["count"], aux["label"], aux["flag"]) == (3, "loss", True)
    np.testing.assert_allclose(frameworks.to_numpy(aux["twice"]), 2 * frameworks.to_numpy(x))
