"""Trace estimators with standard errors (Hutchinson, XTrace, XNysTrace) on every backend.

Oracles: the exact trace of a matrix with a known spectrum (a quadratic form's Hessian);
exactness on matrices of low rank; the spread of the estimates over seeds against the
standard errors they report.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks
from crossgrad.transforms import estimators

N = 120


def spectrum_matrix(rank: int | None = None) -> tuple[np.ndarray, float]:
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.standard_normal((N, N)))
    lam = 0.7 ** np.arange(N)
    if rank is not None:
        lam[rank:] = 0.0
    return (u * lam) @ u.T, float(lam.sum())


def operator(backend, a: np.ndarray):
    m = frameworks.convert(a, backend.name, "float64")
    x = frameworks.convert(np.zeros(N), backend.name, "float64")
    return backend.hessian_operator(lambda x: 0.5 * (x @ (m @ x)), x)


@pytest.mark.parametrize("estimator", ["xtrace", "xnystrace"])
def test_a_low_rank_hessian_is_estimated_exactly(backend, estimator):
    a, trace = spectrum_matrix(rank=5)
    got = operator(backend, a).estimate_trace(estimator, samples=24, key=1)
    assert got.estimate == pytest.approx(trace, rel=1e-10)
    assert got.standard_error < 1e-8
    assert got.products == 24


def test_exchangeable_estimators_beat_hutchinson_and_report_their_error(backend):
    a, trace = spectrum_matrix()
    h = operator(backend, a)
    errors, covered = {e: [] for e in estimators.ESTIMATORS}, {e: 0 for e in estimators.ESTIMATORS}
    for seed in range(12):
        for e in estimators.ESTIMATORS:
            r = h.estimate_trace(e, samples=24, key=seed)
            errors[e].append(abs(r.estimate - trace) / trace)
            covered[e] += abs(r.estimate - trace) <= 3 * r.standard_error
    median = {e: float(np.median(v)) for e, v in errors.items()}
    assert median["xtrace"] < median["hutchinson"] / 5, median
    assert median["xnystrace"] < median["hutchinson"] / 5, median
    for e in estimators.ESTIMATORS:
        assert covered[e] >= 8, (e, covered[e])  # within 3 standard errors on most seeds


def test_the_estimators_on_numpy_matrices_agree_with_the_operator(backend):
    a, _ = spectrum_matrix()
    omega = np.sign(np.random.default_rng(3).standard_normal((N, 12)))
    for name in estimators.ESTIMATORS:
        direct = estimators.estimate(name, lambda v: a @ v, omega)
        assert direct.products == (24 if name == "xtrace" else 12)
        assert np.isfinite(direct.estimate) and direct.standard_error >= 0


def test_bad_estimator_options_are_named(backend):
    h = operator(backend, spectrum_matrix()[0])
    with pytest.raises(cg.OptionError, match="estimator"):
        h.estimate_trace("hutch+++")
    with pytest.raises(cg.OptionError, match="samples"):
        h.estimate_trace("xtrace", samples=0)
    with pytest.raises(cg.OptionTypeError, match="random key"):
        h.estimate_trace("xtrace", key=None)


def test_xdiag_is_exact_on_low_rank_and_beats_hutchinson(backend):
    a, _ = spectrum_matrix(rank=5)
    got = operator(backend, a).estimate_diagonal("xdiag", samples=24, key=2)
    np.testing.assert_allclose(frameworks.to_numpy(got.estimate), np.diag(a), rtol=1e-8, atol=1e-12)
    full, _ = spectrum_matrix()
    h = operator(backend, full)
    errors = {e: [] for e in estimators.DIAGONAL_ESTIMATORS}
    for seed in range(6):
        for e in errors:
            r = h.estimate_diagonal(e, samples=24, key=seed)
            errors[e].append(np.linalg.norm(frameworks.to_numpy(r.estimate) - np.diag(full)) / np.linalg.norm(np.diag(full)))
            assert frameworks.to_numpy(r.standard_error).shape == (N,)
    assert np.median(errors["xdiag"]) < np.median(errors["hutchinson"]) / 3, errors
    with pytest.raises(cg.OptionError, match="estimator"):
        h.estimate_diagonal("xtrace")


@pytest.mark.parametrize("estimator", ["xtrace", "xnystrace"])
def test_the_standard_error_matches_the_spread_across_seeds(estimator):
    # Framework-free: the terms' correlation (NOTE [exchangeable standard error]) is what
    # this checks, against the spread of 150 estimates (its own relative error about 6%).
    a, trace = spectrum_matrix()
    runs = [estimators.estimate(estimator, lambda v: a @ v, np.sign(np.random.default_rng(s).standard_normal((N, 8))))
            for s in range(150)]
    values = np.array([r.estimate for r in runs])
    errors = np.array([r.standard_error for r in runs])
    ratio = errors.mean() / values.std(ddof=1)
    assert 0.75 < ratio < 1.33, ratio
    covered = np.mean(np.abs(values - trace) <= 2 * errors)
    assert covered > 0.8, covered


def test_the_covariance_term_is_what_raises_the_standard_error():
    # With independent terms the correction averages out; the paper's error is its floor.
    rng = np.random.default_rng(5)
    independent = rng.standard_normal(40)
    mean, error = estimators.exchangeable(40, lambda left_out, i: independent[i])
    assert mean == pytest.approx(independent.mean())
    assert error == pytest.approx(independent.std(ddof=1) / np.sqrt(40))
