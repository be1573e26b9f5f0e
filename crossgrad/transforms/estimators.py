"""Trace and diagonal estimators that return their standard error: Hutchinson, XTrace,
XNysTrace and XDiag
(framework-free: the products come from the operator, the small linear algebra is NumPy's).

NOTE [exchangeable trace estimators]
XTrace and XNysTrace (Epperly, Tropp and Webber, 2024) use every random direction both to
build a low-rank approximation and to correct it, by leaving each direction out in turn:
with ``m`` directions ``Omega`` and the products ``Y = A Omega``, ``Z = A Q`` (``Q R = Y``),
the estimate left-one-out ``i`` is ``tr(Q_i^T A Q_i) + w^T (I - P_i) A (I - P_i) w`` where
``Q_i`` spans ``A Omega`` without column ``i``, ``P_i = Q_i Q_i^T`` and ``w = omega_i``
(unbiased: ``w`` is independent of ``Q_i``).  Since ``Q_i = Q C_i`` lies in the span of
``Q`` (``C_i``: an orthonormal basis of ``R`` without column ``i``), every term is read
from ``m x m`` matrices: ``W = Q^T Omega``, ``R``, ``H = Q^T Z`` and ``T = Z^T Omega``:
``tr(C^T H C) + w^T y_i - W_i^T C C^T R_i - T_i^T C C^T W_i + W_i^T C C^T H C C^T W_i``.
The estimate is the mean over ``i`` and its standard error the spread of the ``m``
estimates over ``sqrt(m)``.  XTrace takes ``2m`` products (``samples = 2m``); XNysTrace (a
positive semi-definite ``A``) takes ``m``: the Nystrom approximation from ``Omega`` without
column ``i``, ``Y_i (Omega_i^T Y_i)^+ Y_i^T``, read from ``G = Omega^T Y`` and ``K = Y^T Y``.
A matrix of rank below the directions kept is estimated exactly.  XDiag, for the
diagonal, is the same exchange: ``diag(P_i A) + w * ((I - P_i) A w)`` (``*``: elementwise),
where ``diag(P_i A)`` is the row sum of ``(Q C_i) * (Z C_i)`` and ``(I - P_i) A w`` is
``y_i - Q C_i C_i^T R_i``; ``2m`` products.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

ESTIMATORS = ("hutchinson", "xtrace", "xnystrace")
DIAGONAL_ESTIMATORS = ("hutchinson", "xdiag")


class TraceEstimate(NamedTuple):
    """A trace estimate, its standard error, and the products it took."""

    estimate: float
    standard_error: float
    products: int


def hutchinson(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    """The mean of ``w^T A w`` over the columns of ``omega``."""
    values = np.einsum("ij,ij->j", omega, apply(omega))
    m = values.size
    return TraceEstimate(float(values.mean()), float(values.std(ddof=1) / np.sqrt(m)) if m > 1 else float("inf"), m)


def _orth_without(r: np.ndarray, i: int) -> np.ndarray:
    """An orthonormal basis of the columns of ``r`` other than ``i``."""
    kept = np.delete(r, i, axis=1)
    q, _ = np.linalg.qr(kept)
    return q


def xtrace(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    """XTrace with the ``m`` columns of ``omega``: ``2m`` products (NOTE [exchangeable trace estimators])."""
    m = omega.shape[1]
    y = apply(omega)
    q, r = np.linalg.qr(y)
    z = apply(q)
    w, h, t = q.T @ omega, q.T @ z, z.T @ omega
    h = (h + h.T) / 2
    wy = np.einsum("ij,ij->j", omega, y)
    estimates = np.empty(m)
    for i in range(m):
        c = _orth_without(r, i)
        cc = c @ c.T
        wi, ri, ti = w[:, i], r[:, i], t[:, i]
        estimates[i] = (np.trace(c.T @ h @ c) + wy[i] - wi @ cc @ ri - ti @ cc @ wi + wi @ cc @ h @ cc @ wi)
    return TraceEstimate(float(estimates.mean()), float(estimates.std(ddof=1) / np.sqrt(m)), 2 * m)


def xnystrace(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    """XNysTrace with the ``m`` columns of ``omega`` (``A`` positive semi-definite): ``m`` products."""
    m = omega.shape[1]
    y = apply(omega)
    g = omega.T @ y
    g = (g + g.T) / 2
    k = y.T @ y
    estimates = np.empty(m)
    for i in range(m):
        keep = np.delete(np.arange(m), i)
        inverse = np.linalg.pinv(g[np.ix_(keep, keep)], rcond=1e-10, hermitian=True)
        gi = g[keep, i]
        low_rank = np.trace(inverse @ k[np.ix_(keep, keep)])
        estimates[i] = low_rank + g[i, i] - gi @ inverse @ gi
    return TraceEstimate(float(estimates.mean()), float(estimates.std(ddof=1) / np.sqrt(m)), m)


class DiagonalEstimate(NamedTuple):
    """A diagonal estimate, its standard error per entry (arrays of the diagonal's shape),
    and the products it took."""

    estimate: Any
    standard_error: Any
    products: int


def hutchinson_diagonal(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> DiagonalEstimate:
    """The mean of ``w * (A w)`` over the columns of ``omega``."""
    values = omega * apply(omega)
    m = values.shape[1]
    return DiagonalEstimate(values.mean(axis=1), values.std(axis=1, ddof=1) / np.sqrt(m), m)


def xdiag(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> DiagonalEstimate:
    """XDiag with the ``m`` columns of ``omega``: ``2m`` products (NOTE [exchangeable trace estimators])."""
    m = omega.shape[1]
    y = apply(omega)
    q, r = np.linalg.qr(y)
    z = apply(q)
    estimates = np.empty((omega.shape[0], m))
    for i in range(m):
        c = _orth_without(r, i)
        qc = q @ c
        low_rank = np.einsum("jk,jk->j", qc, z @ c)
        estimates[:, i] = low_rank + omega[:, i] * (y[:, i] - qc @ (c.T @ r[:, i]))
    return DiagonalEstimate(estimates.mean(axis=1), estimates.std(axis=1, ddof=1) / np.sqrt(m), 2 * m)


def estimate(estimator: str, apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    return {"hutchinson": hutchinson, "xtrace": xtrace, "xnystrace": xnystrace}[estimator](apply, omega)


def estimate_diagonal(estimator: str, apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> DiagonalEstimate:
    return {"hutchinson": hutchinson_diagonal, "xdiag": xdiag}[estimator](apply, omega)


def directions(estimator: str, samples: int) -> int:
    """The random directions ``samples`` products buy: XTrace spends two products per direction."""
    return max(2, samples // 2) if estimator in ("xtrace", "xdiag") else max(2, samples)


def as_numpy_products(matmat: Callable[[Any], Any], to_numpy: Callable[[Any], Any],
                      from_numpy: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``A @ V`` on NumPy matrices through a framework's products (float64 on the NumPy side)."""
    def apply(v: np.ndarray) -> np.ndarray:
        return np.asarray(to_numpy(matmat(from_numpy(v))), np.float64)

    return apply
