"""Sparse problems, written once for both backends: known structures for the sparsity
tests and the sparse benchmark.

Each :class:`SparseProblem` builds its function from :class:`Ops` (the few array
functions the problems use, for one framework) and knows the shape of its input; the
true pattern comes from dense derivatives at random points (the tests' oracle), never
from a hand-written list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Ops:
    """Array functions under one name per framework."""

    name: str
    sin: Any
    cos: Any
    tanh: Any
    exp: Any
    roll: Callable[[Any, int, int], Any]
    stack: Callable[[list[Any]], Any]
    concat: Callable[[list[Any], int], Any]
    zeros: Callable[[tuple[int, ...], Any], Any]
    einsum: Any
    take: Callable[[Any, np.ndarray], Any]
    scatter_add: Callable[[Any, np.ndarray, Any], Any]
    conv2d: Callable[[Any, Any], Any]  # NCHW input, OIHW constant kernel, "same" zero padding
    constant: Callable[[np.ndarray, Any], Any]  # a NumPy constant in the dtype of an array


def ops(name: str) -> Ops:
    if name == "torch":
        import torch
        import torch.nn.functional as F

        return Ops(
            "torch", torch.sin, torch.cos, torch.tanh, torch.exp, lambda x, s, a: torch.roll(x, s, a),
            lambda xs: torch.stack(xs), lambda xs, a: torch.cat(xs, a), lambda s, like: torch.zeros(s, dtype=like.dtype),
            torch.einsum, lambda x, i: x[torch.as_tensor(i)],
            lambda z, i, v: z.index_add(0, torch.as_tensor(i), v),
            lambda u, k: F.conv2d(u, k, padding=k.shape[-1] // 2), lambda c, like: torch.as_tensor(c, dtype=like.dtype))
    import jax
    import jax.numpy as jnp

    def conv(u: Any, k: Any) -> Any:
        return jax.lax.conv_general_dilated(u, k, (1, 1), "SAME")

    return Ops(
        "jax", jnp.sin, jnp.cos, jnp.tanh, jnp.exp, lambda x, s, a: jnp.roll(x, s, a), lambda xs: jnp.stack(xs),
        lambda xs, a: jnp.concatenate(xs, a), lambda s, like: jnp.zeros(s, like.dtype), jnp.einsum,
        lambda x, i: x[i], lambda z, i, v: z.at[i].add(v), conv, lambda c, like: jnp.asarray(c, like.dtype))


@dataclass(frozen=True)
class SparseProblem:
    """``build(ops)``: the function of one array; ``shape``: its input's; ``order``: 1 for a
    Jacobian, 2 for a Hessian (scalar output); ``exact``: whether the detected pattern must
    equal the true one (else a superset, by design)."""

    name: str
    build: Callable[[Ops], Callable[..., Any]]
    shape: tuple[int, ...]
    order: int = 1
    exact: bool = True

    def inputs(self, rng: np.random.Generator) -> np.ndarray:
        return rng.standard_normal(self.shape)


def banded(n: int = 12) -> SparseProblem:
    return SparseProblem(f"banded_{n}", lambda o: lambda x: x[2:] * x[1:-1] - o.sin(x[:-2]), (n,))


def block_diagonal(blocks: int = 3, k: int = 4) -> SparseProblem:
    a = np.random.default_rng(1).standard_normal((blocks, k, k))

    def build(o: Ops) -> Callable[..., Any]:
        return lambda x: o.tanh(o.einsum("bij,bj->bi", o.constant(a, x), x.reshape(blocks, k))).reshape(-1)

    return SparseProblem(f"block_diagonal_{blocks}x{k}", build, (blocks * k,))


def arrowhead(n: int = 10) -> SparseProblem:
    return SparseProblem(f"arrowhead_{n}", lambda o: lambda x: x[0] * (x ** 2).sum() + o.cos(x).sum(), (n,), order=2)


def stencil_1d(n: int = 12) -> SparseProblem:
    return SparseProblem(f"stencil_1d_{n}", lambda o: lambda x: x[:-2] - 2 * x[1:-1] + x[2:] + x[1:-1] ** 3, (n,))


def brusselator(n: int = 6, a: float = 1.0, b: float = 3.0, alpha: float = 0.02) -> SparseProblem:
    """The 2-D Brusselator's right-hand side on a periodic ``n x n`` grid (u and v stacked)."""

    def build(o: Ops) -> Callable[..., Any]:
        def lap(w: Any) -> Any:
            return o.roll(w, 1, 0) + o.roll(w, -1, 0) + o.roll(w, 1, 1) + o.roll(w, -1, 1) - 4 * w

        def f(x: Any) -> Any:
            u, v = x.reshape(2, n, n)[0], x.reshape(2, n, n)[1]
            uuv = u * u * v
            return o.stack([a + uuv - (b + 1) * u + alpha * lap(u), b * u - uuv + alpha * lap(v)]).reshape(-1)

        return f

    return SparseProblem(f"brusselator_{n}", build, (2 * n * n,))


def stencil_3d(n: int = 4) -> SparseProblem:
    def build(o: Ops) -> Callable[..., Any]:
        def f(x: Any) -> Any:
            u = x.reshape(n, n, n)
            lap = sum(o.roll(u, s, ax) for s in (1, -1) for ax in range(3)) - 6 * u
            return (lap + u ** 2).reshape(-1)

        return f

    return SparseProblem(f"stencil_3d_{n}", build, (n ** 3,))


def poisson(n: int = 6) -> SparseProblem:
    """A finite-difference Poisson residual with zero Dirichlet boundaries (padding by
    concatenation), plus a nonlinear source."""

    def build(o: Ops) -> Callable[..., Any]:
        def f(x: Any) -> Any:
            u = x.reshape(n, n)
            zc, zr = o.zeros((n, 1), x), o.zeros((1, n + 2), x)
            p = o.concat([zr, o.concat([zc, u, zc], 1), zr], 0)
            lap = p[2:, 1:-1] + p[:-2, 1:-1] + p[1:-1, 2:] + p[1:-1, :-2] - 4 * u
            return (lap * (n + 1) ** 2 - o.exp(u)).reshape(-1)

        return f

    return SparseProblem(f"poisson_{n}", build, (n * n,))


def convolution(n: int = 6, channels: int = 2, out_channels: int = 3) -> SparseProblem:
    """A convolution layer's Jacobian in its input (constant 3x3 kernels, one of them a
    5-point stencil with structural zeros)."""
    k = np.random.default_rng(2).standard_normal((out_channels, channels, 3, 3))
    k[0, 0] = [[0, 1, 0], [1, -4, 1], [0, 1, 0]]

    def build(o: Ops) -> Callable[..., Any]:
        return lambda x: o.tanh(o.conv2d(x.reshape(1, channels, n, n), o.constant(k, x))).reshape(-1)

    return SparseProblem(f"convolution_{channels}x{n}x{n}", build, (channels * n * n,))


def gather_scatter(n: int = 10) -> SparseProblem:
    """Products of gathered elements scattered (summed) into fewer outputs, constant indices."""
    rng = np.random.default_rng(3)
    i1, i2 = rng.integers(0, n, 8), rng.integers(0, n, 8)
    target = rng.integers(0, 5, 8)

    def build(o: Ops) -> Callable[..., Any]:
        return lambda x: o.scatter_add(o.zeros((5,), x), target, o.take(x, i1) * o.take(x, i2))

    return SparseProblem(f"gather_scatter_{n}", build, (n,))


def rosenbrock(n: int = 12) -> SparseProblem:
    """The chained Rosenbrock function (tridiagonal Hessian)."""
    return SparseProblem(f"rosenbrock_{n}", lambda o: lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum(),
                         (n,), order=2)


def chained_hessian(n: int = 12) -> SparseProblem:
    """A 2-D grid energy: neighbours coupled through a nonlinearity (a 5-point Hessian)."""
    side = round(n ** 0.5)

    def build(o: Ops) -> Callable[..., Any]:
        def f(x: Any) -> Any:
            u = x.reshape(side, side)
            return (o.cos(u[1:, :] - u[:-1, :]).sum() + o.cos(u[:, 1:] - u[:, :-1]).sum() + (u ** 4).sum())

        return f

    return SparseProblem(f"grid_energy_{side}x{side}", build, (side * side,), order=2)


def catalog() -> list[SparseProblem]:
    """The known structures the tests check exactly."""
    return [banded(), block_diagonal(), stencil_1d(), brusselator(), stencil_3d(), poisson(), convolution(),
            gather_scatter(), arrowhead(), rosenbrock(), chained_hessian(16)]
