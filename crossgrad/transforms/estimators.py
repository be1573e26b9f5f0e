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
The same reading serves any set of columns left out, which the standard error needs.
XTrace takes ``2m`` products (``samples = 2m``); XNysTrace (a positive semi-definite ``A``)
takes ``m``: the Nystrom approximation from the directions kept, ``Y_k (Omega_k^T Y_k)^+
Y_k^T``, read from ``G = Omega^T Y`` and ``K = Y^T Y``.  A matrix of rank below the
directions kept is estimated exactly.  XDiag, for the diagonal, is the same exchange:
``diag(P_i A) + w * ((I - P_i) A w)`` (``*``: elementwise), where ``diag(P_i A)`` is the
row sum of ``(Q C_i) * (Z C_i)`` and ``(I - P_i) A w`` is ``y_i - Q C_i C_i^T R_i``.

NOTE [exchangeable standard error]
The estimate is the mean of the ``m`` terms ``t_i = tr(A) + e_i``.  The paper's error
estimate, their spread over ``sqrt(m)``, assumes the ``e_i`` uncorrelated; they are not
(``w_j`` shapes the projection ``t_i`` uses), and measured on five spectra at ``m`` = 6 and
12 it fell to 0.6-0.9 of the true spread, with the truth inside two of them 66-86% of the
time.  Since ``E[s^2] = Var(e) - Cov(e_i, e_j)``, ``Var(mean) = s^2 / m + Cov``, and the
covariance is estimated without bias from leave-two-out terms: with ``t_i^j`` the term for
``i`` when ``j`` is left out of the projection too, and ``d_ij = t_i - t_i^j``, the
leave-two-out errors are independent given the other directions and have mean zero, so
``Cov(e_i, e_j) = E[d_ij d_ji + (t_i^j - tr A) d_ji + d_ij (t_j^i - tr A)]``, where the
``tr A`` drops out (``E[d] = 0``) and the estimate stands in for it.  Over the pairs (at most
``PAIRS``, drawn when there are more) this brought the mean standard error to 0.93-1.08 of
the spread on four of the five spectra (0.7-0.8 on a nearly flat one).  On the benchmark's
case (n = 1000, eigenvalues 0.7^i, 24 products, 200 seeds) XTrace's truth lies within one
and two standard errors 69.5% / 91% (torch's draws) and 73% / 92% (jax's), mean standard
error over spread 1.05 / 1.30, where the paper's estimate gave 50-62% / 85-86% and 0.71-0.84.
The standard error is itself noisy (twelve terms; the largest of 200 is 4-6 times the
spread), which keeps two-standard-error coverage a little under 95%.  A negative
covariance estimate is not used: the standard error never falls below the paper's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any, Literal, NamedTuple, get_args

import numpy as np

TraceEstimator = Literal["hutchinson", "xtrace", "xnystrace"]
DiagonalEstimator = Literal["hutchinson", "xdiag"]
ESTIMATORS: tuple[str, ...] = get_args(TraceEstimator)
DIAGONAL_ESTIMATORS: tuple[str, ...] = get_args(DiagonalEstimator)
PAIRS = 400
"""The most direction pairs the standard error's covariance term reads; past this (``m``
over 29) a fixed draw of pairs keeps its cost to ``PAIRS`` small QR factorizations."""

Term = Callable[[Sequence[int], int], Any]
"""``term(left_out, i)``: the estimate from direction ``i`` with the directions
``left_out`` (``i`` among them) out of the low-rank part."""


class TraceEstimate(NamedTuple):
    """A trace estimate, its standard error, and the products it took."""

    estimate: float
    standard_error: float
    products: int


class DiagonalEstimate(NamedTuple):
    """A diagonal estimate, its standard error per entry (arrays of the diagonal's shape),
    and the products it took."""

    estimate: Any
    standard_error: Any
    products: int


def _pairs(m: int) -> list[tuple[int, int]]:
    pairs = list(combinations(range(m), 2))
    if len(pairs) <= PAIRS:
        return pairs
    drawn = np.random.default_rng(m).choice(len(pairs), PAIRS, replace=False)
    return [pairs[k] for k in sorted(drawn)]


def exchangeable(m: int, term: Term) -> tuple[Any, Any]:
    """The mean of the leave-one-out terms and its standard error
    (NOTE [exchangeable standard error]); scalars, or arrays for a diagonal."""
    terms = np.stack([np.asarray(term((i,), i), np.float64) for i in range(m)])
    mean = terms.mean(axis=0)
    spread = terms.var(axis=0, ddof=1) / m
    covariance = np.zeros_like(mean)
    pairs = _pairs(m)
    for i, j in pairs:
        tij, tji = np.asarray(term((i, j), i)), np.asarray(term((i, j), j))
        dij, dji = terms[i] - tij, terms[j] - tji
        covariance = covariance + dij * dji + (tij - mean) * dji + dij * (tji - mean)
    covariance = covariance / len(pairs)
    return mean, np.sqrt(spread + np.maximum(covariance, 0.0))


def hutchinson(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    """The mean of ``w^T A w`` over the columns of ``omega`` (independent terms)."""
    values = np.einsum("ij,ij->j", omega, apply(omega))
    m = values.size
    return TraceEstimate(float(values.mean()), float(values.std(ddof=1) / np.sqrt(m)) if m > 1 else float("inf"), m)


def _orth_without(r: np.ndarray, left_out: Sequence[int]) -> np.ndarray:
    """An orthonormal basis of the columns of ``r`` other than ``left_out``."""
    q, _ = np.linalg.qr(np.delete(r, list(left_out), axis=1))
    return q


class _Sketch(NamedTuple):
    """``Y = A Omega``, ``Q R = Y``, ``Z = A Q`` and the small matrices the terms read."""

    omega: np.ndarray
    y: np.ndarray
    q: np.ndarray
    r: np.ndarray
    z: np.ndarray
    w: np.ndarray
    h: np.ndarray


def _sketch(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> _Sketch:
    y = apply(omega)
    q, r = np.linalg.qr(y)
    z = apply(q)
    h = q.T @ z
    return _Sketch(omega, y, q, r, z, q.T @ omega, (h + h.T) / 2)


def xtrace(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    """XTrace with the ``m`` columns of ``omega``: ``2m`` products (NOTE [exchangeable trace estimators])."""
    s = _sketch(apply, omega)
    t = s.z.T @ omega
    wy = np.einsum("ij,ij->j", omega, s.y)

    def term(left_out: Sequence[int], i: int) -> float:
        c = _orth_without(s.r, left_out)
        cc = c @ c.T
        wi, ri, ti = s.w[:, i], s.r[:, i], t[:, i]
        return float(np.trace(c.T @ s.h @ c) + wy[i] - wi @ cc @ ri - ti @ cc @ wi + wi @ cc @ s.h @ cc @ wi)

    mean, error = exchangeable(omega.shape[1], term)
    return TraceEstimate(float(mean), float(error), 2 * omega.shape[1])


def xnystrace(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> TraceEstimate:
    """XNysTrace with the ``m`` columns of ``omega`` (``A`` positive semi-definite): ``m`` products."""
    m = omega.shape[1]
    y = apply(omega)
    g = omega.T @ y
    g = (g + g.T) / 2
    k = y.T @ y

    def term(left_out: Sequence[int], i: int) -> float:
        keep = np.delete(np.arange(m), list(left_out))
        inverse = np.linalg.pinv(g[np.ix_(keep, keep)], rcond=1e-10, hermitian=True)
        gi = g[keep, i]
        return float(np.trace(inverse @ k[np.ix_(keep, keep)]) + g[i, i] - gi @ inverse @ gi)

    mean, error = exchangeable(m, term)
    return TraceEstimate(float(mean), float(error), m)


def hutchinson_diagonal(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> DiagonalEstimate:
    """The mean of ``w * (A w)`` over the columns of ``omega`` (independent terms)."""
    values = omega * apply(omega)
    m = values.shape[1]
    return DiagonalEstimate(values.mean(axis=1), values.std(axis=1, ddof=1) / np.sqrt(m), m)


def xdiag(apply: Callable[[np.ndarray], np.ndarray], omega: np.ndarray) -> DiagonalEstimate:
    """XDiag with the ``m`` columns of ``omega``: ``2m`` products (NOTE [exchangeable trace estimators])."""
    s = _sketch(apply, omega)

    def term(left_out: Sequence[int], i: int) -> np.ndarray:
        c = _orth_without(s.r, left_out)
        qc = s.q @ c
        low_rank: np.ndarray = np.einsum("jk,jk->j", qc, s.z @ c)
        correction: np.ndarray = omega[:, i] * (s.y[:, i] - qc @ (c.T @ s.r[:, i]))
        total: np.ndarray = low_rank + correction
        return total

    mean, error = exchangeable(omega.shape[1], term)
    return DiagonalEstimate(mean, error, 2 * omega.shape[1])
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
