"""Drawn programs through the fast routes, against eager execution of the same program.

Each program is a drawn list of steps on a vector ``h`` (elementwise functions, products
with a constant or a closed-over matrix, a closed-over scale, concatenations of views,
writes into a zero buffer through ``unbind``/``split``/``select`` views and ``foreach``
writes, random draws from a generator made inside the program or passed by the caller).
``cg.jit``'s traced routes are called several times, with new inputs and with the
closed-over matrix and scale rebound between calls; the oracle is eager execution with
its own copy of the state and generator.  The Taylor route (``laplacian``) is compared
with the trace of the Hessian by double reverse mode.  Profiles as in
``tests/test_fuzz.py`` (``make test``: a few fixed draws; ``make fuzz``: many).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import crossgrad as cg
from crossgrad.testing import frameworks

PURE = ["tanh", "sin", "square", "cube", "const matmul", "closure matmul", "closure scale", "rotate"]
IMPURE = ["unbind write", "split write", "select write", "foreach write", "own noise", "caller noise"]
N = 4


def _torch():
    return pytest.importorskip("torch")


def build(steps: list[str], name: str, state: dict, rng_seed: int):
    """The program for framework ``name`` (``state``: the closed-over ``W``, ``s`` and, on
    torch, the caller's generator ``gen``)."""
    if name == "torch":
        import torch as m

        const = m.tensor(np.linspace(-0.5, 0.5, N * N).reshape(N, N))
    else:
        import jax.numpy as m

        const = m.asarray(np.linspace(-0.5, 0.5, N * N).reshape(N, N))

    def f(x):
        h = x
        for step in steps:
            if step == "tanh":
                h = m.tanh(h)
            elif step == "sin":
                h = m.sin(h)
            elif step == "square":
                h = h * h * 0.5
            elif step == "cube":
                h = h ** 3 * 0.3 + h
            elif step == "const matmul":
                h = const.astype(h.dtype) @ h if name == "jax" else const.to(h.dtype) @ h
            elif step == "closure matmul":
                h = state["W"] @ h
            elif step == "closure scale":
                h = h * state["s"]
            elif step == "rotate":
                h = m.concatenate([h[1:], h[:1]]) if name == "jax" else m.cat([h[1:], h[:1]])
            else:
                h = _impure(m, step, h, state, rng_seed)
        return (h * h).sum() + h[0]

    return f


def _impure(torch, step, h, state, seed):
    z = torch.zeros(2, N, dtype=h.dtype)
    if step == "unbind write":
        z.unbind(0)[0].add_(h)
    elif step == "split write":
        z.split(1, 0)[1].squeeze(0).copy_(h)
    elif step == "select write":
        z.select(0, 0).mul_(0.0).add_(h * 2.0)
    elif step == "foreach write":
        torch._foreach_add_([z[1]], [h])
    elif step == "own noise":
        g = torch.Generator().manual_seed(seed)
        return h + 0.1 * torch.randn(N, generator=g, dtype=h.dtype)
    else:
        return h + 0.1 * torch.randn(N, generator=state["gen"], dtype=h.dtype)
    return torch.mm(torch.ones(1, 2, dtype=h.dtype), z).reshape(N) + 0.0 * h


def _state(name, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.6, 0.6, (N, N))
    state = {"W": frameworks.convert(w, name, "float64"), "s": scale}
    if name == "torch":
        import torch

        state["gen"] = torch.Generator().manual_seed(seed)
    return state


programs = st.lists(st.sampled_from(PURE + IMPURE), min_size=1, max_size=5)
# make test runs a few fixed draws (each program is traced and compiled several times);
# make fuzz the profile's many.
FEW = settings(max_examples=4) if os.environ.get("CROSSGRAD_FUZZ_PROFILE", "ci") == "ci" else settings()


@FEW
@given(programs, st.integers(0, 2**16))
def test_jit_routes_agree_with_eager_on_drawn_programs(steps, seed):
    """Each call of the traced routes (the first included) equals eager execution's, with
    rebinding, in-place writes through views and generators in the program."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    # torch refuses in-place writes into unbind/split views where autograd records: those
    # programs are compiled as they are, the others through their gradient and Hessian too
    # (a compiled scalar Hessian takes torch's own jacrev(jacrev) where eager takes
    # crossgrad's composition: NOTE [hessian strategy]).
    multi_view = {"unbind write", "split write"} & set(steps)
    wrappers = [lambda g: g] + ([] if multi_view else [cg.torch.grad, cg.torch.hessian])
    for (route, options), wrap in ((r, w) for r in (("trace", None), ("trace-compile", {"backend": "aot_eager"}))
                                   for w in wrappers):
        mine, ref = _state("torch", seed), _state("torch", seed)
        fast = cg.torch.jit(wrap(build(steps, "torch", mine, seed)), route=route, options=options)
        eager = wrap(build(steps, "torch", ref, seed))
        for call in range(3):
            if call == 2:  # rebound between calls, in both
                w = rng.uniform(-0.6, 0.6, (N, N))
                mine["W"], ref["W"] = torch.tensor(w), torch.tensor(w)
                mine["s"] = ref["s"] = 0.5
            x = torch.tensor(rng.uniform(-0.8, 0.8, N))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", cg.CompileFallbackWarning)
                got = fast(x)
            torch.testing.assert_close(got, eager(x), rtol=1e-9, atol=1e-10,
                                       msg=lambda m, s=steps, r=route, c=call: f"{r} call {c} of {s}: {m}")
            assert torch.equal(mine["gen"].get_state(), ref["gen"].get_state())


@pytest.mark.parametrize("name", frameworks.selected())
@FEW
@given(programs, st.integers(0, 2**16))
def test_the_taylor_route_agrees_with_the_nested_hessian_on_drawn_programs(name, steps, seed):
    """The Laplacian by the Taylor route (or its exact fallback) equals the trace of the
    Hessian by double reverse mode; jax programs draw from the pure steps only (jax has no
    in-place writes or stateful generators)."""
    # The caller's generator would advance between the two evaluations compared, and torch
    # refuses writes into unbind/split views where autograd records.
    left_out = {"caller noise", "unbind write", "split write"}
    steps = [s for s in steps if (s in PURE if name == "jax" else s not in left_out)] or ["tanh"]
    ns = cg.backend(name)
    state = _state(name, seed)
    f = build(steps, name, state, seed)
    x = frameworks.convert(np.random.default_rng(seed).uniform(-0.8, 0.8, N), name, "float64")
    h = np.asarray(frameworks.to_numpy(ns.hessian(f, strategy="rev-rev")(x)))
    got = float(frameworks.to_numpy(ns.laplacian(f)(x)))
    np.testing.assert_allclose(got, np.trace(h), rtol=1e-9, atol=1e-10, err_msg=f"{steps}")


@pytest.mark.parametrize("name", frameworks.selected())
@FEW
@given(programs, st.integers(0, 2**16))
def test_the_fourth_order_route_agrees_with_nested_hessians_on_drawn_programs(name, steps, seed):
    """The biharmonic by fourth-order Taylor (or its exact fallback) equals the trace of the
    Hessian of the Hessian's trace, both by double reverse mode (drawn steps as above)."""
    left_out = {"caller noise", "unbind write", "split write"}
    steps = [s for s in steps if (s in PURE if name == "jax" else s not in left_out)] or ["tanh"]
    ns = cg.backend(name)
    f = build(steps, name, _state(name, seed), seed)
    x = frameworks.convert(np.random.default_rng(seed).uniform(-0.8, 0.8, N), name, "float64")
    inner = ns.hessian(f, strategy="rev-rev")
    outer = ns.hessian(lambda y: inner(y).diagonal().sum(), strategy="rev-rev")
    want = float(np.trace(frameworks.to_numpy(frameworks.quick(ns, outer)(x))))
    got = float(frameworks.to_numpy(frameworks.quick(ns, ns.biharmonic(f))(x)))
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-8, err_msg=f"{steps}")
