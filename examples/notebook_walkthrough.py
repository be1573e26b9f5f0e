"""The seed notebook ("Efficient Batched Hessian Calculation in PyTorch") redone with
crossgrad, on torch and on jax, with its last cells done right.

Run:  python examples/notebook_walkthrough.py   (about 20 s on two CPU cores)
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

import crossgrad as cg
from crossgrad import graph


def timed(fn, *args, repeat=5):
    """Median seconds of ``fn(*args)`` after one warm-up call, and its result."""
    out = fn(*args)
    jax.block_until_ready(out) if not isinstance(out, torch.Tensor) else None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        if not isinstance(out, torch.Tensor):
            jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def f_torch(weight, bias, x):
    return F.linear(x, weight, bias).tanh()


def f_jax(weight, bias, x):
    return jnp.tanh(weight @ x + bias)


def inputs(d_in, d_out, batch=None, seed=0):
    rng = np.random.default_rng(seed)
    x_shape = (d_in,) if batch is None else (batch, d_in)
    w, b, x = (rng.standard_normal(s).astype(np.float32) for s in [(d_out, d_in), (d_out,), x_shape])
    return tuple(map(torch.tensor, (w, b, x))), tuple(map(jnp.asarray, (w, b, x)))


def row_by_row(weight, bias, x):
    """The notebook's first Jacobian: one backward call per output row."""
    xp = x.clone().requires_grad_()
    out = f_torch(weight, bias, xp)
    return torch.stack([torch.autograd.grad(out, xp, e, retain_graph=True)[0] for e in torch.eye(out.numel())])


def section(title):
    print(f"\n## {title}")


def main():
    # -- 1. Jacobians: row by row, vmap of vjp, jacrev, jacfwd -------------------
    section("Jacobian of tanh(W x + b): tall 32->2048 and wide 2048->32 (median ms)")
    print(f"{'shape':>10} {'backend':>7} {'row loop':>9} {'vmap(vjp)':>10} {'jacrev':>8} {'jacfwd':>8} {'auto':>8}")
    modes = {}
    for d_in, d_out in [(32, 2048), (2048, 32)]:
        (tw, tb, tx), (jw, jb, jx) = inputs(d_in, d_out)
        t_loop, reference = timed(row_by_row, tw, tb, tx, repeat=2)
        for name, f, args, jit in [("torch", f_torch, (tw, tb, tx), lambda g: g), ("jax", f_jax, (jw, jb, jx), jax.jit)]:
            ns = cg.backend(name)
            t_vjp, j_vjp = timed(jit(ns.jacobian(f, argnums=2, mode="rev", impl="composed")), *args)
            t_rev, j_rev = timed(jit(ns.jacrev(f, argnums=2)), *args)
            t_fwd, j_fwd = timed(jit(ns.jacfwd(f, argnums=2)), *args)
            t_auto, j_auto = timed(jit(ns.jacobian(f, argnums=2)), *args)
            for j in (j_vjp, j_rev, j_fwd, j_auto):
                np.testing.assert_allclose(np.asarray(j), reference.numpy(), rtol=1e-4, atol=1e-5)
            loop = f"{1e3 * t_loop:9.2f}" if name == "torch" else f"{'-':>9}"
            print(f"{d_in:>4}->{d_out:<5} {name:>7} {loop} {1e3 * t_vjp:10.2f} {1e3 * t_rev:8.2f} {1e3 * t_fwd:8.2f} "
                  f"{1e3 * t_auto:8.2f}")
            modes[(d_in, d_out, name)] = (t_rev, t_fwd, t_auto)
    # The conclusions, from the timings above (not from the notebook's claims).
    for (d_in, d_out, name), (t_rev, t_fwd, t_auto) in modes.items():
        faster = "jacfwd" if t_fwd < t_rev else "jacrev"
        ratio = max(t_rev, t_fwd) / min(t_rev, t_fwd)
        auto_vs_best = t_auto / min(t_rev, t_fwd)
        print(f"{d_in}->{d_out} {name}: {faster} is {ratio:.1f}x faster ({'tall' if d_out > d_in else 'wide'} shape); "
              f"auto took {auto_vs_best:.2f}x the faster mode's time")

    # -- 2. Hessian: forward-over-reverse against reverse-over-reverse -------------
    section("Hessian of tanh(W x + b), 512->32, one x: shape (32, 512, 512) (median ms)")
    (tw, tb, tx), (jw, jb, jx) = inputs(512, 32)
    results, times = {}, {}
    for name, f, args, jit in [("torch", f_torch, (tw, tb, tx), lambda g: g), ("jax", f_jax, (jw, jb, jx), jax.jit)]:
        for strategy in ("fwd-rev", "rev-rev"):
            t, h = timed(jit(cg.backend(name).hessian(f, argnums=2, strategy=strategy)), *args, repeat=2)
            results[(name, strategy)] = np.asarray(h)
            times[(name, strategy)] = t
            print(f"{name:>6} {strategy}: {1e3 * t:8.1f} ms")
    for h in results.values():
        np.testing.assert_allclose(h, results[("torch", "fwd-rev")], rtol=1e-4, atol=1e-5)
    for name in ("torch", "jax"):
        fr, rr = times[(name, "fwd-rev")], times[(name, "rev-rev")]
        winner = "fwd-rev" if fr < rr else "rev-rev"
        agrees = "as the notebook says" if winner == "fwd-rev" else "unlike the notebook's claim"
        print(f"{name}: all four agree; {winner} is {max(fr, rr) / min(fr, rr):.1f}x faster here ({agrees}).")

    # -- 3. Batched Jacobians and Hessians -----------------------------------------
    section("Batched: B=64, 31->33, per-sample Jacobians (64, 33, 31) and Hessians (64, 33, 31, 31)")
    (tw, tb, tx), (jw, jb, jx) = inputs(31, 33, batch=64)
    bj_t = cg.batched_jacobian(f_torch, argnums=2, in_axes=(None, None, 0))(tw, tb, tx)
    bj_j = cg.batched_jacobian(f_jax, argnums=2, in_axes=(None, None, 0))(jw, jb, jx)
    bh_t = cg.batched_hessian(f_torch, argnums=2, in_axes=(None, None, 0))(tw, tb, tx)
    bh_j = cg.batched_hessian(f_jax, argnums=2, in_axes=(None, None, 0))(jw, jb, jx)
    print("jacobian", tuple(bj_t.shape), "max |torch - jax| =", f"{np.abs(bj_t.numpy() - np.asarray(bj_j)).max():.1e}")
    print("hessian ", tuple(bh_t.shape), "max |torch - jax| =", f"{np.abs(bh_t.numpy() - np.asarray(bh_j)).max():.1e}")

    # -- 4. The critic: both heads, per sample, with respect to the actions --------
    section("The critic's td_err, done right: per-sample Jacobians of both heads w.r.t. the actions")
    batch, d = 64, 32
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((1, d)).astype(np.float32)
    states, actions, q_target = (rng.standard_normal(s).astype(np.float32) for s in [(batch, d), (batch, d), (batch, 1)])

    def td_err_torch(state, action, q):  # one sample: state (d,), action (d,), q (1,)
        w = torch.as_tensor(weights)
        tmp = state + action.sum()
        return q - (w @ tmp).tanh(), q - (w @ tmp).tanh()

    def td_err_jax(state, action, q):
        tmp = state + action.sum()
        return q - jnp.tanh(weights @ tmp), q - jnp.tanh(weights @ tmp)

    heads_t = cg.batched_jacobian(td_err_torch, argnums=1)(*map(torch.tensor, (states, actions, q_target)))
    heads_j = cg.batched_jacobian(td_err_jax, argnums=1)(*map(jnp.asarray, (states, actions, q_target)))
    assert isinstance(heads_t, tuple) and len(heads_t) == 2 and tuple(heads_t[0].shape) == (batch, 1, d)
    np.testing.assert_allclose(heads_t[1].numpy(), np.asarray(heads_j[1]), rtol=1e-5, atol=1e-6)
    print(f"two heads, each {tuple(heads_t[0].shape)} (batch, head output, action): no (B, 1, B, d) cross-sample blocks")

    # -- 5. The notebook's three mistakes, and what crossgrad does with each --------
    section("The notebook's last cells: three mistakes")
    # (a) `assert t.allclose(ft_jacobian, jacobian)` compares with the function object.
    xp = tx[0].clone().requires_grad_()
    lib_jacobian = graph.jacobian(f_torch(tw, tb, xp), xp)  # the old library's call, vectorized
    try:
        torch.allclose(lib_jacobian, graph.jacobian)
        raise AssertionError("comparing with a function should fail")
    except TypeError:
        pass
    assert torch.allclose(lib_jacobian, bj_t[0], atol=1e-6)  # compare with a result instead
    print("(a) compared with a result (graph.jacobian of the built graph), not the function object: equal")
    # (b) `jacrev(td_err, has_aux=True, argnums=(1, 1))(states, actions, actions, q_target)`.
    try:
        cg.jacrev(td_err_torch, argnums=(1, 1))
        raise AssertionError("a duplicated argnums must be rejected")
    except cg.ArgnumsError as err:
        print(f"(b) {err}")
    # (c) has_aux=True silently makes the second head an auxiliary output.
    jac_first, second_head_values = cg.batched_jacobian(td_err_torch, argnums=1, has_aux=True)(
        *map(torch.tensor, (states, actions, q_target)))
    assert tuple(second_head_values.shape) == (batch, 1)  # values, not derivatives
    assert tuple(jac_first.shape) == (batch, 1, d)
    print("(c) has_aux=True returns the second head's values as aux; without it, both heads' Jacobians come back "
          f"(shapes {tuple(heads_t[0].shape)} and {tuple(heads_t[1].shape)})")


if __name__ == "__main__":
    main()
