"""Newton's method on a sparse nonlinear system, the same code on torch and jax.

The Bratu problem on an N x N grid, zero boundary values:  laplacian(u) + lam * exp(u) = 0,
discretised by finite differences: N^2 unknowns, a Jacobian with 5 entries per row.  Its
pattern is detected from the residual once, colored (7 colors here: one JVP each instead of
N^2 = 2304), and every Newton step asks for the sparse Jacobian's entries and solves with scipy.

    python examples/sparse_newton.py
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla

import crossgrad as cg

N, LAM = 48, 5.0


def residual_for(xp, concat, zeros):
    def residual(x):
        u = x.reshape(N, N)
        zc, zr = zeros((N, 1), x), zeros((1, N + 2), x)
        p = concat([zr, concat([zc, u, zc], 1), zr], 0)
        lap = (p[2:, 1:-1] + p[:-2, 1:-1] + p[1:-1, 2:] + p[1:-1, :-2] - 4 * u) * (N + 1) ** 2
        return (lap + LAM * xp.exp(u)).reshape(-1)

    return residual


def solve(framework: str) -> None:
    if framework == "torch":
        import torch

        residual = residual_for(torch, torch.cat, lambda s, like: torch.zeros(s, dtype=like.dtype))
        x = torch.zeros(N * N, dtype=torch.float64)
        to_numpy, from_numpy = (lambda a: a.numpy()), torch.from_numpy
    else:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        residual = residual_for(jnp, jnp.concatenate, lambda s, like: jnp.zeros(s, like.dtype))
        x = jnp.zeros(N * N, dtype=jnp.float64)
        to_numpy, from_numpy = np.asarray, jnp.asarray
    jacobian = cg.jit(cg.sparse_jacobian(residual, format="values"))
    plan = cg.sparse_jacobian(residual).plan(x)
    print(f"{framework}: {plan}")
    rows, cols = plan.pattern.rows, plan.pattern.cols
    import scipy.sparse as sps

    for step in range(8):
        r = to_numpy(residual(x))
        norm = float(np.linalg.norm(r))
        print(f"  step {step}: |F(u)| = {norm:.3e}")
        if norm < 1e-8:
            break
        J = sps.csr_array((to_numpy(jacobian(x)), (rows, cols)), shape=plan.pattern.shape)
        x = x - from_numpy(spla.spsolve(J.tocsc(), r))
    print(f"  max u = {float(to_numpy(x).max()):.6f}")


if __name__ == "__main__":
    for fw in ("torch", "jax"):
        solve(fw)
