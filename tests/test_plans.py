"""Plans (NOTE [plans]): what a transform decides per argument signature, in the open, on
every backend.

Oracles: the auto-mode rule's own arithmetic (forward mode where inputs x jvp cost <
outputs), the options given, the route the framework refused (a revision), and the
results, which the plans must not change.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_hardening import _reverse_only_cube
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks
from crossgrad.transforms import policy
from crossgrad.transforms.jacobians import JacobianPlan


def tanh_layer(backend, n_in, n_out):
    o = frameworks.ops(backend.name)
    w = frameworks.convert(np.random.default_rng(0).standard_normal((n_out, n_in)), backend.name, "float64")
    x = frameworks.convert(np.random.default_rng(1).standard_normal(n_in), backend.name, "float64")
    return (lambda v: o.tanh(w @ v)), x


@pytest.mark.parametrize(("n_in", "n_out"), [(4, 64), (64, 4)])
def test_auto_plans_the_mode_its_rule_gives_and_says_why(backend, n_in, n_out):
    f, x = tanh_layer(backend, n_in, n_out)
    jac = backend.jacobian(f)
    plan = cg.explain(jac, x)
    assert isinstance(plan, JacobianPlan) and plan is jac.plan(x)  # one plan per signature, kept
    expected = policy.jacobian_mode(backend.name, False, n_in, n_out)
    assert (plan.mode, plan.route, plan.inputs, plan.outputs) == (expected, "builtin", n_in, n_out)
    assert "auto:" in plan.why and str(plan).startswith(f"jacobian: {expected} mode, builtin route")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.mode = "loop"  # type: ignore[misc]
    reference = backend.jacobian(f, mode="loop")(x)
    np.testing.assert_allclose(frameworks.to_numpy(jac(x)), frameworks.to_numpy(reference), **TOL["float64"]["same"])
    assert jac.plan(x) is plan  # the call followed the plan and kept it


def test_the_options_given_are_the_plan(backend):
    f, x = tanh_layer(backend, 8, 8)
    composed = backend.jacrev(f, impl="composed", chunk_size=3).plan(x)
    assert (composed.mode, composed.route, composed.chunk_size) == ("rev", "composed", 3)
    assert composed.outputs is None  # not chosen by the sizes: f is not evaluated for the plan
    assert backend.jacobian(f, mode="loop").plan(x).route == "composed"
    assert cg.jacfwd(f).plan(x).mode == "fwd"  # the top level's plans are its backend's


def test_a_refusal_revises_the_plan_and_says_so(backend):
    cube = _reverse_only_cube(backend)
    w = frameworks.convert(np.random.default_rng(0).standard_normal((40, 3)), backend.name, "float64")
    x = frameworks.convert(np.array([0.5, -1.0, 2.0]), backend.name, "float64")
    jac = backend.jacobian(lambda v: cube(w @ v))
    assert jac.plan(x).mode == "fwd"  # 3 inputs, 40 outputs
    jac(x)  # forward mode fails: reverse mode answers
    revised = jac.plan(x)
    assert revised.mode == "rev" and "revised: forward mode failed" in revised.why


def test_transforms_without_plans_are_named():
    with pytest.raises(cg.OptionTypeError, match=r"explain.*no plan"):
        cg.explain(lambda x: x, np.ones(3))


@pytest.mark.parametrize("scalar", [True, False])
def test_hessian_plans_follow_the_measured_rule(backend, scalar):
    o = frameworks.ops(backend.name)
    f = (lambda x: o.sum(o.tanh(x) ** 3)) if scalar else (lambda x: o.tanh(x) ** 3)
    x = frameworks.convert(np.linspace(-1, 1, 5), backend.name, "float64")
    hess = backend.hessian(f)
    plan = cg.explain(hess, x)
    strategy, measured = policy.hessian_strategy(backend.name, lambda: 1 if scalar else 5)
    assert (plan.strategy, plan.impl) == (strategy, measured or "auto")
    assert plan is hess.plan(x) and "NOTE [hessian strategy]" in plan.why
    np.testing.assert_allclose(frameworks.to_numpy(hess(x)), frameworks.to_numpy(backend.hessian(f, strategy="loop")(x)),
                               **TOL["float64"]["same"])
    given = backend.hessian(f, strategy="rev-fwd", impl="composed").plan(x)
    assert (given.strategy, given.impl, given.why) == ("rev-fwd", "composed", "strategy='rev-fwd' given")


def test_batched_hessian_plans_where_the_batch_goes(backend):
    o = frameworks.ops(backend.name)
    rng = np.random.default_rng(2)
    w, b, xs = (frameworks.convert(a, backend.name, "float64") for a in
                (rng.standard_normal((5, 4)), rng.standard_normal(5), rng.standard_normal((6, 4))))

    def f(w, b, x):
        return o.tanh(w @ x + b)

    hess = backend.batched_hessian(f, argnums=2, in_axes=(None, None, 0))
    plan = cg.explain(hess, w, b, xs)
    assert plan.order in ("inside", "outside") and plan.batch == 6 and "NOTE [batch inside]" in plan.why
    assert (plan.strategy is not None) == (plan.order == "inside") and plan is hess.plan(w, b, xs)
    expected = np.stack([frameworks.to_numpy(backend.hessian(f, argnums=2, strategy="loop")(w, b, xs[i]))
                         for i in range(6)])
    np.testing.assert_allclose(frameworks.to_numpy(hess(w, b, xs)), expected, **TOL["float64"]["same"])
    chunked = backend.batched_hessian(f, argnums=2, in_axes=(None, None, 0), batch_chunk_size=2).plan(w, b, xs)
    assert chunked.order == "outside" and "batch_chunk_size=2 given" in chunked.why


def test_batched_jacobian_plans_are_vmap_of_the_per_sample_plan(backend):
    o = frameworks.ops(backend.name)
    rng = np.random.default_rng(3)
    w, xs = (frameworks.convert(a, backend.name, "float64") for a in (rng.standard_normal((40, 3)), rng.standard_normal((7, 3))))

    def f(w, x):
        return o.tanh(w @ x)

    batched = backend.batched_jacobian(f, argnums=1, in_axes=(None, 0), batch_chunk_size=4)
    plan = cg.explain(batched, w, xs)
    one = backend.jacobian(f, argnums=1).plan(w, xs[0])
    assert (plan.batch, plan.batch_chunk_size) == (7, 4)
    assert (plan.per_sample.mode, plan.per_sample.route, plan.per_sample.inputs) == (one.mode, one.route, 3)
    assert str(plan).startswith("batched_jacobian: vmap over 7 samples (4 at a time) of batched_jacobian: ")
    expected = np.stack([frameworks.to_numpy(backend.jacobian(f, argnums=1, mode="loop")(w, xs[i])) for i in range(7)])
    np.testing.assert_allclose(frameworks.to_numpy(batched(w, xs)), expected, **TOL["float64"]["same"])


def test_curvature_plans_say_which_route_runs_and_share_the_first_call_check(backend, monkeypatch):
    """The Laplacian's plan: the Taylor route, checked once per signature (the check's verdict
    is the plan's and the call's: explained then called, it runs once); the framework's own
    Hessian with impl='builtin'; the single-point form mapped over the batch where a
    differentiated argument is shared by it; and the results those routes give agree."""
    from crossgrad.transforms import taylor_check

    calls = []
    agrees = taylor_check.agrees
    monkeypatch.setattr(taylor_check, "agrees", lambda *a: calls.append(1) or agrees(*a))
    o = frameworks.ops(backend.name)
    w = frameworks.convert(np.random.default_rng(0).standard_normal((3, 4)), backend.name, "float64")
    xs = frameworks.convert(np.random.default_rng(1).standard_normal((5, 4)), backend.name, "float64")

    def f(x):
        return o.sum(o.tanh(w @ x))

    lap = backend.laplacian(f)
    plan = cg.explain(lap, xs[0])
    assert (plan.route, plan.estimator, plan.batch) == ("taylor", "exact", None) and "checked" in plan.why
    assert str(plan).startswith("laplacian: taylor route, estimator exact")
    value = lap(xs[0])
    assert len(calls) == 1, "the plan's check and the call's are one"
    builtin = backend.laplacian(f, impl="builtin")
    assert cg.explain(builtin, xs[0]).route == "hessian"
    frameworks.assert_trees_close(value, builtin(xs[0]), **TOL["float64"]["same"], what="taylor vs hessian")
    batched = backend.batched_laplacian(lambda w, x: o.sum(o.tanh(w @ x)), argnums=(0, 1), in_axes=(None, 0))
    shared = cg.explain(batched, w, xs)
    assert (shared.route, shared.batch) == ("outside", 5) and "shared by the batch" in shared.why


def test_jit_plans_name_the_route_the_first_call_kept_and_why(backend):
    """Before a signature's first call the plan is the rule's first candidate, undecided;
    after it, the route that call kept (the one the steady calls run) and why; a function
    the compiler cannot take runs eagerly, and its plan says what failed."""
    import warnings

    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.linspace(0.1, 1.0, 4), backend.name, "float64")
    fast = backend.jit(backend.hessian(lambda v: o.sum(o.tanh(v) ** 3)))
    before = cg.explain(fast, x)
    assert not before.decided and before.route in backend.backend.builtins.JIT_ROUTES
    fast(x)
    after = cg.explain(fast, x)
    assert after.decided and after.route in (*backend.backend.builtins.JIT_ROUTES, "eager")
    assert str(after).startswith("jit of ") and after.why
    assert not cg.explain(fast, frameworks.convert(np.ones(3), backend.name, "float64")).decided  # a new signature

    def reads_a_value(v):
        return v * float(o.sum(v))  # a Python float of an array: no compiled program holds it

    eager = backend.jit(reads_a_value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", cg.CompileFallbackWarning)
        eager(x)
    plan = cg.explain(eager, x)
    assert (plan.route, plan.decided) == ("eager", True) and "failed" in plan.why


@pytest.mark.parametrize("impl", ["auto", "builtin", "composed"])
def test_gradient_plans_name_the_route_and_the_results_agree(backend, impl):
    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.linspace(0.1, 1.0, 4), backend.name, "float64")
    for name in ("grad", "value_and_grad"):
        fn = getattr(backend, name)(lambda v: o.sum(o.tanh(v) ** 2), impl=impl)
        plan = cg.explain(fn, x)
        assert plan.route == ("composed" if impl == "composed" else "builtin") and str(plan).startswith(f"{name}: ")
        reference = getattr(backend, name)(lambda v: o.sum(o.tanh(v) ** 2), impl="composed")(x)
        frameworks.assert_trees_close(fn(x), reference, **TOL["float64"]["same"], what=f"{name} {impl}")


def test_vmap_plans_and_a_refusal_revises_the_plan(backend):
    """vmap's plan per signature (the framework's vmap, crossgrad's composition with
    impl='composed', an empty batch); where the framework refuses what crossgrad's spec
    takes (a tuple out_axes prefix for a list output), the composition answers and the plan
    is revised, so the next call goes there directly."""
    o = frameworks.ops(backend.name)
    xs = frameworks.convert(np.arange(6.0).reshape(3, 2), backend.name, "float64")
    v = backend.vmap(lambda x: o.sum(x ** 2))
    plan = cg.explain(v, xs)
    assert (plan.route, plan.batch, plan.axes) == ("builtin", 3, (0,)) and str(plan).startswith("vmap: builtin route")
    assert cg.explain(backend.vmap(lambda x: o.sum(x ** 2), impl="composed"), xs).route == "composed"
    assert cg.explain(v, xs[:0]).route == "empty"
    pair = backend.vmap(lambda x: [x * 2.0, o.sum(x)], out_axes=(1, 0))
    first = pair(xs)
    revised = cg.explain(pair, xs)  # both frameworks refuse this prefix
    assert revised.route == "composed" and revised.why.startswith("revised: the framework's vmap refused")
    frameworks.assert_trees_close(pair(xs), first, **TOL["float64"]["same"], what="after the revision")
    frameworks.assert_trees_close(first[0], frameworks.to_numpy(xs).T * 2.0, **TOL["float64"]["same"], what="out_axes")


@pytest.mark.parametrize("impl", ["auto", "builtin", "composed"])
def test_the_transforms_that_evaluate_at_once_plan_from_the_same_arguments(backend, impl):
    """vjp, jvp, linearize and hvp: ``cg.explain(cg.vjp, f, *primals)`` is the plan the call
    ``cg.vjp(f, *primals)`` follows (nothing computed: f is not called); a None primal, which
    the built-ins refuse, plans the composition; the results of every plan agree with the
    composed route's.  (A None primal is a leaf torch.func refuses and jax's built-ins take.)"""
    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.linspace(0.1, 1.0, 4), backend.name, "float64")
    calls = []

    def f(v, unused=None):
        calls.append(1)
        return o.tanh(v) ** 2

    auto_avoids = policy.AUTO_AVOIDS[backend.name]
    for name, args in (("vjp", (f, x)), ("jvp", (f, (x,), (x,))), ("linearize", (f, x))):
        for where in (backend, cg):
            plan = cg.explain(getattr(where, name), *args, impl=impl)
            builtin = impl == "builtin" or (impl == "auto" and name not in auto_avoids)
            assert plan.route == ("builtin" if builtin else "composed") and str(plan).startswith(f"{name}: ")
        with_none = {"vjp": (f, x, None), "jvp": (f, (x, None), (x, None)), "linearize": (f, x, None)}[name]
        refuses_none = not backend.backend.builtins.NONE_LEAVES
        assert cg.explain(getattr(backend, name), *with_none, impl=impl).route == (
            "composed" if refuses_none or impl == "composed" else plan.route)
    assert not calls, "planning evaluates nothing"
    _, vjp_fn = backend.vjp(f, x, impl=impl)
    frameworks.assert_trees_close(vjp_fn(x), backend.vjp(f, x, impl="composed")[1](x), **TOL["float64"]["same"], what="vjp")
    frameworks.assert_trees_close(backend.jvp(f, (x, None), (x, None), impl=impl)[1], backend.jvp(f, (x,), (x,), impl="composed")[1],
                                  **TOL["float64"]["same"], what="jvp with a None primal")
    frameworks.assert_trees_close(backend.linearize(f, x, None, impl=impl)[1](x, None), backend.jvp(f, (x,), (x,))[1],
                                  **TOL["float64"]["same"], what="linearize with a None primal")

    def scalar(v):
        return o.sum(o.tanh(v) ** 3)

    plan = cg.explain(cg.hvp, scalar, (x,), (x,), impl=impl)
    assert (plan.route, plan.gradient.route) == ("fwd-rev", "composed" if impl == "composed" else "builtin")
    frameworks.assert_trees_close(backend.hvp(scalar, (x,), (x,), impl=impl), backend.hessian(scalar, strategy="loop")(x) @ x,
                                  **TOL["float64"]["same"], what="hvp")


def test_biharmonic_and_weighted_laplacian_plans(backend, monkeypatch):
    """The biharmonic's plan: the fourth-order Taylor route, its first-call check run once
    for the plan and the call together; mapped over the batch where the batch shares a
    differentiated argument.  The weighted Laplacian's plan: C split once by its eigenvalues
    into Laplacians of rank(C+) and rank(C-) directions, each with its own plan; polarized
    per point where C is a function; and the results equal the closed forms."""
    from crossgrad.transforms import biharmonics

    calls = []
    agrees = biharmonics._agrees
    monkeypatch.setattr(biharmonics, "_agrees", lambda *a: calls.append(1) or agrees(*a))
    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.array([1.0, 2.0, 3.0]), backend.name, "float64")

    def f(v):
        return o.sum(v ** 2) ** 2  # lap lap = 8 n (n + 2), lap = (4 n + 8) |v|^2

    bih = backend.biharmonic(f)
    plan = cg.explain(bih, x)
    assert (plan.route, plan.estimator, plan.batch) == ("taylor", "exact", None) and "fourth-order" in plan.why
    np.testing.assert_allclose(float(frameworks.to_numpy(bih(x))), 8 * 3 * 5, **TOL["float64"]["same"])
    assert len(calls) == 1, "the plan's check and the call's are one"
    xs = frameworks.convert(np.ones((2, 3)), backend.name, "float64")
    shared = cg.explain(backend.batched_biharmonic(lambda w, v: f(w * v), argnums=(0, 1), in_axes=(None, 0)), x, xs)
    assert (shared.route, shared.batch) == ("outside", 2) and "shared by the batch" in shared.why

    c = np.array([[2.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # one positive, two negative eigenvalues
    weighted = backend.weighted_laplacian(f, c)
    plan = cg.explain(weighted, x)
    assert plan.coefficients == "constant" and [(s, r) for s, r, _ in plan.parts] == [(1.0, 1), (-1.0, 2)]
    assert all(p.route == "taylor" for _, _, p in plan.parts) and "rank 1 and 2" in plan.why
    v = frameworks.to_numpy(x)
    hess = 4 * np.outer(v, v) * 2 + 4 * (v @ v) * np.eye(3)  # the Hessian of |v|^4
    np.testing.assert_allclose(float(frameworks.to_numpy(weighted(x))), np.trace(c @ hess), **TOL["float64"]["same"])
    eye = frameworks.convert(np.eye(3), backend.name, "float64")
    per_point = cg.explain(backend.weighted_laplacian(f, lambda v: eye), x)
    assert per_point.coefficients == "per point" and [r for _, r, _ in per_point.parts] == [3, 3]
    assert cg.explain(backend.weighted_laplacian(f, np.zeros((3, 3))), x).coefficients == "zero"
    negative = backend.weighted_laplacian(f, -np.eye(3))  # no positive part: the one Laplacian is subtracted
    assert [(s, r) for s, r, _ in cg.explain(negative, x).parts] == [(-1.0, 3)]
    np.testing.assert_allclose(float(frameworks.to_numpy(negative(x))), -np.trace(hess), **TOL["float64"]["same"])


def test_operators_plan_their_products(backend):
    """Both operators say which products they run (the Hessian's jvp of the gradient; the
    Gauss-Newton matrix's jvp, loss product, vjp) and whether they are compiled, as their
    backend's rule says; the products stay the Hessian's (oracle: the dense Hessian)."""
    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.array([0.5, -1.0, 2.0]), backend.name, "float64")
    f = lambda v: o.sum(o.tanh(v) ** 2)  # noqa: E731
    H = backend.hessian_operator(f, x)
    plan = H.plan()
    assert (plan.transform, plan.products, plan.size, plan.dtype) == ("hessian_operator", "fwd-rev", 3, "float64")
    assert plan.compiled == policy.compiled_operator_products(backend.name)
    assert cg.explain(cg.hessian_operator, f, x) == plan == cg.explain(backend.hessian_operator, f, x)
    np.testing.assert_allclose(frameworks.to_numpy(H.dense()), frameworks.to_numpy(backend.hessian(f)(x)),
                               **TOL["float64"]["same"])
    G = cg.explain(cg.ggn_operator, lambda v: o.tanh(v), lambda z: o.sum(z ** 2), x)
    assert (G.transform, G.products, G.size) == ("ggn_operator", "jvp-hvp-vjp", 3)
    assert "NOTE [gauss-newton operator]" in G.why and str(G).startswith("ggn_operator: 3 x 3 float64")


def test_an_operator_plan_shows_its_revision():
    """torch's forward over reverse refuses mse_loss's constant target (its lazy zero
    tangent): the operator's first product revises its route to reverse over reverse, and
    its plan says so (oracle: the closed-form Hessian diag(2 x^2 / n))."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)
    H = cg.hessian_operator(lambda w: F.mse_loss(w * x, t), torch.ones(4, dtype=torch.float64))
    assert H.plan().products == "fwd-rev"  # not known before the framework refuses
    v = torch.linspace(-1, 1, 4, dtype=torch.float64)
    torch.testing.assert_close(H @ v, 2 * x * x / 4 * v)
    revised = H.plan()
    assert revised.products == "rev-rev" and revised.why.startswith("revised: forward over reverse failed")


def test_sparsity_detectors_and_check_grads_have_plans(backend):
    """A detector's plan is the pattern it finds (and how); check_grads' plan the step and
    tolerances it will compare with: the dtype's defaults from the one table, or those given."""
    from crossgrad import tolerances

    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.zeros(5), backend.name, "float64")
    detect = backend.jacobian_sparsity(lambda v: v[1:] - v[:-1])
    plan = cg.explain(detect, x)
    assert plan.detected and plan.pattern.nnz == detect(x).nnz == 8
    assert cg.explain(backend.hessian_sparsity(lambda v: o.sum(v[1:] * v[:-1])), x).pattern.nnz == 8
    f = lambda v: o.sum(o.sin(v) * v)  # noqa: E731
    default = cg.explain(cg.check_grads, f, (x,))
    t = tolerances.of("float64")
    assert (default.order, default.dtype, default.eps, default.rtol, default.identity_rtol) == (
        1, "float64", t.step, t.finite_difference, t.identity)
    given = cg.explain(backend.check_grads, f, (x,), 2, eps=1e-4)
    assert (given.order, given.eps) == (2, 1e-4) and "eps=0.0001 given" in given.why
    with pytest.raises(cg.OptionError, match="order 1 or 2"):
        cg.explain(backend.check_grads, f, (x,), 3)


def test_a_plan_kept_by_the_primals_is_kept_per_number_of_arguments(backend):
    """Python numbers among the arguments: the plan (and the built-in made with it) is kept by
    the primals' signature, and by the number of arguments too, since a negative argnums
    names another position when that number changes (oracle: the closed form 2 x sum(a))."""
    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")
    jac = backend.jacobian(lambda *a: a[-1] ** 2 * sum(a[:-1]), argnums=-1)
    for numbers in ((3.0,), (3.0, 1.0), (0.5,)):
        expected = np.diag(2 * np.array([1.0, 2.0]) * sum(numbers))
        np.testing.assert_allclose(frameworks.to_numpy(jac(*numbers, x)), expected, **TOL["float64"]["same"])
