"""Streaming: a batched transform applied chunk by chunk into a sink the caller owns."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks, problems

DTYPE = "float64"


def _setup(backend, batch=10):
    prob = problems.tanh_linear(n_in=6, n_out=3, batch=batch)
    f = prob.build(frameworks.ops(backend.name))
    args = frameworks.convert(prob.inputs(np.random.default_rng(4)), backend.name, DTYPE)
    return backend.batched_hessian(f, argnums=2, in_axes=(None, None, 0)), args


def test_stream_yields_every_chunk_in_order(backend):
    hess, args = _setup(backend)
    chunks = list(cg.stream(hess, *args, in_axes=(None, None, 0), chunk_size=4))
    assert [(c.index, c.start, c.stop) for c in chunks] == [(0, 0, 4), (1, 4, 8), (2, 8, 10)]
    whole = np.concatenate([frameworks.to_numpy(c.result) for c in chunks])
    frameworks.assert_trees_close(whole, hess(*args), **TOL[DTYPE]["same"])


def test_stream_to_a_memmap_on_disk(backend, tmp_path):
    hess, args = _setup(backend)
    sink = np.lib.format.open_memmap(tmp_path / "hessians.npy", mode="w+", dtype=np.float64, shape=(10, 3, 6, 6))
    assert cg.stream_to(sink, hess, *args, in_axes=(None, None, 0), chunk_size=3) == 10
    sink.flush()
    frameworks.assert_trees_close(np.load(tmp_path / "hessians.npy"), hess(*args), **TOL[DTYPE]["same"])


def test_pytree_results_go_to_a_pytree_of_sinks(backend):
    prob = problems.tanh_linear(n_in=6, n_out=3, batch=10)
    f = prob.build(frameworks.ops(backend.name))
    args = frameworks.convert(prob.inputs(np.random.default_rng(4)), backend.name, DTYPE)
    jac = backend.batched_jacobian(f, argnums=(1, 2), in_axes=(None, None, 0))
    sink = (np.zeros((10, 3, 3)), np.zeros((10, 3, 6)))
    cg.stream_to(sink, jac, *args, in_axes=(None, None, 0), chunk_size=4)
    frameworks.assert_trees_close(sink, jac(*args), **TOL[DTYPE]["same"])


def test_numpy_inputs_are_converted_chunk_by_chunk(backend, tmp_path):
    hess, args = _setup(backend)
    W, b, x = args
    xs = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=(10, 6))
    xs[:] = frameworks.to_numpy(x)
    sink = np.zeros((10, 3, 6, 6))
    cg.stream_to(sink, hess, W, b, xs, in_axes=(None, None, 0), chunk_size=4)
    frameworks.assert_trees_close(sink, hess(*args), **TOL[DTYPE]["same"])
    with pytest.raises(cg.BackendInferenceError):
        cg.stream_to(sink, hess, np.zeros((3, 6)), chunk_size=2)


def test_a_failing_chunk_loses_nothing_already_written(backend):
    hess, args = _setup(backend)
    calls = []

    def flaky(*a):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return hess(*a)

    sink = np.full((10, 3, 6, 6), -7.0)
    with pytest.raises(cg.ChunkError) as caught:
        cg.stream_to(sink, flaky, *args, in_axes=(None, None, 0), chunk_size=3)
    err = caught.value
    assert (err.index, err.start, err.stop, err.done) == (2, 6, 9, 6)
    assert "chunk 2 (rows 6:9) failed" in str(err) and "RuntimeError: device lost" in str(err)
    assert "resume with start=6" in str(err) and isinstance(err.__cause__, RuntimeError)
    expected = frameworks.to_numpy(hess(*args))
    np.testing.assert_allclose(sink[:6], expected[:6], **TOL[DTYPE]["same"])  # the chunks written stay valid
    assert (sink[6:] == -7.0).all()  # nothing after the failure was touched
    assert cg.stream_to(sink, flaky, *args, in_axes=(None, None, 0), chunk_size=3, start=err.done) == 4
    np.testing.assert_allclose(sink, expected, **TOL[DTYPE]["same"])


def test_a_sink_of_the_wrong_shape_is_refused_before_writing(backend):
    hess, args = _setup(backend)
    with pytest.raises(cg.StructureError, match=r"stream_to: expected a sink array of shape \(10, 3, 6, 6\)"):
        cg.stream_to(np.zeros((9, 3, 6, 6)), hess, *args, in_axes=(None, None, 0), chunk_size=4)


@pytest.mark.parametrize(("options", "error"), [({"chunk_size": 0}, cg.OptionTypeError),
                                                 ({"start": 11}, cg.OptionError),
                                                 ({"in_axes": (None, None, 5)}, cg.AxisError)])
def test_bad_options(backend, options, error):
    hess, args = _setup(backend)
    options = {"in_axes": (None, None, 0), "chunk_size": 2, **options}
    with pytest.raises(error, match=r"^stream: expected"):
        next(iter(cg.stream(hess, *args, **options)))
