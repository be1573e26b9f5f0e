"""Stochastic Lanczos quadrature: the spectral density of a symmetric operator from its
products (framework-free: the products come from the operator, the small algebra is NumPy's).

NOTE [stochastic lanczos quadrature]
For a unit vector ``v`` and ``m`` Lanczos steps from it, the tridiagonal ``T = U diag(theta)
U^T`` gives a Gauss quadrature of the spectral measure seen from ``v``:
``v^T g(A) v ~ sum_k tau_k g(theta_k)`` with ``tau_k = U_0k^2``, exact for polynomials of
degree below ``2m``.  Averaged over random unit vectors (Rademacher over ``sqrt(n)``, so that
``E[v v^T] = I / n``) it estimates ``tr(g(A)) / n``: with ``g`` a narrow Gaussian the
spectral density (Ubaru, Chen and Saad, 2017; Ghorbani, Krishnan and Xiao, 2019, for
network Hessians).  The ``samples`` vectors run side by side, so that each step is one
product with an ``(n, samples)`` matrix, and are reorthogonalized in full (twice): Lanczos
without it produces spurious copies of converged eigenvalues.  A vector whose Krylov space
closes early (an invariant subspace: ``beta`` below the breakdown threshold) stops there;
its quadrature is then exact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class SpectralDensity(NamedTuple):
    """The quadrature of the spectrum: ``nodes`` and ``weights``, ``(samples, steps)``
    NumPy arrays (each row's weights sum to 1; a row cut short by an invariant subspace has
    zero weights past its end), and ``n``, the operator's size."""

    nodes: np.ndarray
    weights: np.ndarray
    n: int

    def density(self, grid: np.ndarray, width: float | None = None) -> np.ndarray:
        """The density at the points ``grid``: Gaussians of standard deviation ``width``
        (default: a hundredth of the spread of the nodes) at the nodes, averaged over the
        samples; integrates to 1 (multiply by ``n`` for eigenvalues per unit)."""
        grid = np.asarray(grid, np.float64)
        if width is None:
            span = float(self.nodes.max() - self.nodes.min())
            width = span / 100 if span > 0 else 1.0
        z = (grid[:, None, None] - self.nodes[None]) / width
        kernel = np.exp(-0.5 * z ** 2) / (width * np.sqrt(2 * np.pi))
        density: np.ndarray = (kernel * self.weights[None]).sum(axis=2).mean(axis=1)
        return density

    def trace_of(self, g: Callable[[np.ndarray], np.ndarray]) -> float:
        """``tr(g(A))`` estimated from the quadrature (``g`` elementwise on NumPy arrays):
        ``tr(A)`` with ``g = lambda t: t``, ``log det A`` with ``np.log``."""
        return float(self.n * (self.weights * g(self.nodes)).sum(axis=1).mean())


def lanczos_quadrature(apply: Callable[[np.ndarray], np.ndarray], starts: np.ndarray, steps: int) -> SpectralDensity:
    """The quadrature from ``steps`` Lanczos steps from each column of ``starts``
    (``(n, samples)``; NOTE [stochastic lanczos quadrature])."""
    n, samples = starts.shape
    steps = max(1, min(steps, n))
    q = starts / np.linalg.norm(starts, axis=0)
    basis = np.zeros((steps, n, samples))
    alpha = np.zeros((samples, steps))
    beta = np.zeros((samples, steps))
    alive = np.ones(samples, bool)
    length = np.full(samples, steps)
    scale = np.zeros(samples)
    for j in range(steps):
        basis[j] = q
        w = apply(q)
        alpha[:, j] = np.einsum("ij,ij->j", q, w)
        for _ in range(2):
            w = w - np.einsum("kij,kj->ij", basis[: j + 1], np.einsum("kij,ij->kj", basis[: j + 1], w))
        b = np.linalg.norm(w, axis=0)
        scale = np.maximum(scale, np.abs(alpha[:, j]) + b)
        if j + 1 == steps:
            break
        ended = alive & (b <= 1e-10 * np.maximum(scale, np.finfo(np.float64).tiny))
        length[ended] = j + 1
        alive &= ~ended
        beta[:, j] = np.where(alive, b, 0.0)
        q = np.where(alive, w / np.where(b > 0, b, 1.0), 0.0)
        if not alive.any():
            break
    nodes = np.zeros((samples, steps))
    weights = np.zeros((samples, steps))
    for s in range(samples):
        m = int(length[s])
        t = np.diag(alpha[s, :m]) + np.diag(beta[s, : m - 1], 1) + np.diag(beta[s, : m - 1], -1)
        theta, u = np.linalg.eigh(t)
        nodes[s, :m], weights[s, :m] = theta, u[0] ** 2
        nodes[s, m:] = theta[-1]
    return SpectralDensity(nodes, weights, n)
