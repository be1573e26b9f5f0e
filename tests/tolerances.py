"""One table of tolerances per dtype, for every numerical comparison in the suite.

``same``: two implementations of one transform on one backend (or a closed form);
``parity``: torch against jax, which round differently (issue: ~1e-12 in float64,
~1e-5 in float32); ``fd``: against float64 central finite differences.
"""

TOL = {
    "float64": {"same": dict(rtol=1e-10, atol=1e-12), "parity": dict(rtol=1e-11, atol=1e-12), "fd": dict(rtol=1e-6, atol=1e-7)},
    "float32": {"same": dict(rtol=2e-5, atol=2e-6), "parity": dict(rtol=2e-5, atol=5e-6), "fd": dict(rtol=1e-2, atol=1e-3)},
}
