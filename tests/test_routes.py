"""The speed routes: batched Hessians with the batch inside the basis maps, and jit's
traced routes, each against the route it replaces, on every backend that has it."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks, problems
from crossgrad.transforms import policy

STRATEGIES = ("fwd-fwd", "fwd-rev", "rev-rev", "rev-fwd")


@pytest.fixture
def inside_always(monkeypatch):
    """Every batched Hessian with a batched differentiated input runs with the batch
    inside, whatever the backend and sizes (the route is shared code; the policy only
    decides where it pays)."""
    monkeypatch.setattr(policy, "batched_hessian_inside",
                        lambda backend, gpu, strategy, n, m, batch: "fwd-fwd" if strategy == "auto" else strategy)


def _prepared(backend, prob, dtype="float64"):
    f = prob.build(frameworks.ops(backend.name))
    return f, frameworks.convert(prob.inputs(np.random.default_rng(0)), backend.name, dtype)


_OUTSIDE: dict[tuple[str, str], object] = {}


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("prob", problems.batched_catalog(), ids=lambda p: p.name)
def test_batch_inside_equals_batch_outside(backend, inside_always, prob, strategy):
    """On jax compiled (frameworks.quick: the plan is made while tracing, the same one)."""
    f, args = _prepared(backend, prob)
    key = (backend.name, prob.name)
    if key not in _OUTSIDE:  # the reference, once per problem for all strategies
        _OUTSIDE[key] = frameworks.to_numpy(backend.batched_hessian(f, prob.argnums, prob.in_axes, impl="builtin")(*args))
    expected = _OUTSIDE[key]
    got = frameworks.quick(backend, backend.batched_hessian(f, prob.argnums, prob.in_axes, strategy=strategy,
                                                            impl="composed"))(*args)
    frameworks.assert_trees_close(got, expected, **TOL["float64"]["same"], what=f"{strategy} inside")


def test_batch_inside_options(backend, inside_always):
    """Tuple argnums, an unbatched differentiated argument (the batch stays outside
    there), aux, basis chunks and keyword arguments give the outside route's results."""
    prob = problems.tanh_linear(n_in=3, n_out=4, batch=5)
    f, (w, b, x) = _prepared(backend, prob)

    def g(w, b, x, scale=1.0):
        y = f(w, b, x) * scale
        return y, {"norm": (y * y).sum()}

    for argnums in (2, (1, 2), (0, 2)):
        axes = (None, 0, 0) if argnums == (1, 2) else (None, None, 0)
        # a per-sample bias where it is differentiated with the batch
        bb = b if axes[1] is None else frameworks.convert(np.stack([frameworks.to_numpy(b)] * 5), backend.name,
                                                          "float64")
        outside = backend.batched_hessian(g, argnums, axes, has_aux=True, impl="builtin")(w, bb, x, scale=2.0)
        for chunk in (None, 2):
            inside = backend.batched_hessian(g, argnums, axes, has_aux=True, strategy="fwd-fwd", basis_chunk_size=chunk,
                                             impl="composed")(w, bb, x, scale=2.0)
            frameworks.assert_trees_close(inside, outside, **TOL["float64"]["same"], what=f"argnums={argnums}")


def test_batch_inside_matches_the_closed_form(backend, inside_always):
    prob = problems.tanh_linear(n_in=6, n_out=7, batch=9)
    f, args = _prepared(backend, prob)
    got = backend.batched_hessian(f, prob.argnums, prob.in_axes)(*args)
    expected = prob.hessian(*prob.inputs(np.random.default_rng(0)))
    frameworks.assert_trees_close(got, expected, **TOL["float64"]["same"])


def test_default_takes_the_measured_order(caplog):
    """NOTE [batch inside]: torch runs the notebook's shape batch-inside, the MLP not."""
    pytest.importorskip("torch")
    ns = cg.backend("torch")
    cases = {"inside": problems.tanh_linear(31, 33, batch=8), "outside": problems.mlp((3, 6, 6, 2), batch=8)}
    for where, prob in cases.items():
        f, args = _prepared(ns, prob, "float32")
        with caplog.at_level(logging.INFO, logger="crossgrad"):
            caplog.clear()
            ns.batched_hessian(f, prob.argnums, prob.in_axes)(*args)
        inside = any("batch inside" in r.getMessage() for r in caplog.records)
        assert inside == (where == "inside"), (where, [r.getMessage() for r in caplog.records])


@pytest.mark.parametrize(("n", "m", "batch", "expected"), [
    (31, 33, 64, "fwd-fwd"), (31, 33, 4, None), (2, 3, 256, None), (512, 32, 64, None), (64, 1, 64, None),
])
def test_batch_inside_rule(n, m, batch, expected):
    assert policy.batched_hessian_inside("torch", False, "auto", n, lambda: m, batch) == expected
    assert policy.batched_hessian_inside("torch", True, "auto", n, lambda: m, batch) is None
    assert policy.batched_hessian_inside("jax", False, "auto", n, lambda: m, batch) is None


# -- jit's traced routes (torch) -----------------------------------------------------

def _torch():
    pytest.importorskip("torch")
    return cg.backend("torch")


TRACE_ROUTES = [("trace", None), ("trace-compile", {"backend": "aot_eager"})]


@pytest.mark.parametrize(("route", "options"), TRACE_ROUTES, ids=[r for r, _ in TRACE_ROUTES])
@pytest.mark.parametrize("transform", ["jacobian", "hessian", "batched_jacobian", "batched_hessian", "hvp"])
def test_traced_routes_agree_with_eager(transform, route, options):
    """Every Jacobian/Hessian transform through the traced routes, no fallback warning."""
    ns = _torch()
    batched = transform.startswith("batched")
    prob = problems.tanh_linear(n_in=4, n_out=5, batch=3 if batched else None)
    f, args = _prepared(ns, prob)
    if transform == "hvp":
        t = frameworks.convert(np.ones(4), "torch", "float64")

        def fn(w, b, x):
            return ns.hvp(lambda w, b, x: f(w, b, x).sum(), (w, b, x), (w * 0, b * 0, t), argnums=(0, 1, 2))
    elif batched:
        fn = getattr(ns, transform)(f, prob.argnums, prob.in_axes)
    else:
        fn = getattr(ns, transform)(f, prob.argnums)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        fast = ns.jit(fn, route=route, options=options)
        first, again = fast(*args), fast(*args)
    expected = fn(*args)
    for got in (first, again):
        frameworks.assert_trees_close(got, expected, **TOL["float64"]["same"], what=f"{transform} by {route}")


@pytest.mark.parametrize("strategy", ["fwd-fwd", "fwd-rev", "rev-rev", "rev-fwd", "loop"])
def test_traced_hessians_of_every_strategy_with_aux_and_chunks(strategy):
    ns = _torch()
    prob = problems.tanh_linear(n_in=3, n_out=4, batch=4)
    f, args = _prepared(ns, prob)

    def g(w, b, x):
        y = f(w, b, x)
        return y, y.sum()

    h = ns.batched_hessian(g, prob.argnums, prob.in_axes, has_aux=True, strategy=strategy, basis_chunk_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        got = ns.jit(h, route="trace")(*args)
    frameworks.assert_trees_close(got, h(*args), **TOL["float64"]["same"])


def test_measure_route_times_every_candidate_on_the_notebook_hessian(caplog):
    """The notebook's batched Hessian under ``route="measure"``: the traced graph is built
    for every candidate route, each is measured once per signature, none falls back, and
    the result is right (NOTE [jit routes])."""
    ns = _torch()
    prob = problems.tanh_linear(n_in=31, n_out=33, batch=8)
    f, args = _prepared(ns, prob, "float32")
    h = ns.batched_hessian(f, prob.argnums, prob.in_axes)
    fast = ns.jit(h, route="measure")
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="crossgrad"):
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        got = fast(*args)
        again = fast(*args)
    measured = [r.getMessage() for r in caplog.records if "measured" in r.getMessage()]
    assert len(measured) == 1, measured  # once per signature
    assert all(f"{route} " in measured[0] for route in policy.jit_routes("torch", False)), measured
    for out in (got, again):
        frameworks.assert_trees_close(out, h(*args), **TOL["float32"]["same"])


def _built_routes(monkeypatch):
    """The options of every traced route jit builds (None: the graph as traced)."""
    from crossgrad.transforms import compiled

    built = []
    route = compiled.Traced.route

    def counting(self, options, replay=False):
        built.append(options)
        return route(self, options, replay)

    monkeypatch.setattr(compiled.Traced, "route", counting)
    return built


@pytest.mark.parametrize(("prob", "expected"), [
    (problems.tanh_linear(n_in=6, n_out=7, batch=5), "trace"),  # the Jacobian is most of what the graph writes
    (problems.mlp((3, 8, 8, 1), batch=4), "trace-compile"),  # layers of intermediates to fuse
], ids=["jacobian-writes-its-answer", "mlp-hessian"])
def test_default_route_is_the_rules_and_builds_one_route(monkeypatch, caplog, prob, expected):
    """``route="auto"`` builds one route, the one the rule picks from the traced graph
    (NOTE [jit routes]), measures nothing, and picks the same route on every run."""
    ns = _torch()
    f, args = _prepared(ns, prob, "float32")
    transform = (ns.batched_jacobian if "tanh_linear" in prob.name else ns.batched_hessian)(
        f, prob.argnums, prob.in_axes)
    built = _built_routes(monkeypatch)
    taken = []
    for _ in range(2):  # two fresh cg.jit objects: the same choice
        with caplog.at_level(logging.INFO, logger="crossgrad"):
            caplog.clear()
            got = ns.jit(transform, options={"backend": "aot_eager"})(*args)
        assert not [r for r in caplog.records if "measured" in r.getMessage()]
        taken.append([r.getMessage().rsplit("route", 1)[-1].strip(" '") for r in caplog.records
                      if "runs by route" in r.getMessage()])
        frameworks.assert_trees_close(got, transform(*args), **TOL["float32"]["same"])
    assert taken == [[expected], [expected]]
    assert len(built) == 2  # one route per cg.jit object


def test_the_rule_orders_routes_by_what_the_graph_writes():
    assert policy.jit_routes("torch", False, 0.9)[0] == "trace"
    assert policy.jit_routes("torch", False, 0.1)[0] == "trace-compile"
    assert policy.jit_routes("torch", True, 0.9)[0] == "trace-cudagraph"
    assert policy.jit_routes("torch", False, 0.1, records_grad=True)[0] == "trace"
    assert policy.jit_routes("jax", False, 0.9) == ("compile",)


def test_a_training_step_runs_as_traced_by_default(caplog):
    """Autograd records through the call (parameters require grad): the rule runs the graph
    as traced, no compile (NOTE [jit routes]); the gradients are eager's."""
    ns = _torch()
    import torch

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64).requires_grad_()
    x = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    laplacian = ns.batched_laplacian(lambda w, x: torch.tanh(w @ x).sum(), 1, (None, 0))

    def loss(w, x):
        return (laplacian(w, x) ** 2).mean()

    with caplog.at_level(logging.INFO, logger="crossgrad"):
        got = torch.autograd.grad(ns.jit(loss)(w, x), w)[0]
    assert any("runs by route 'trace'" in r.getMessage() for r in caplog.records)
    torch.testing.assert_close(got, torch.autograd.grad(loss(w, x), w)[0], **TOL["float64"]["same"])


def _noisy(x):
    import torch

    return x * torch.rand(x.shape, dtype=x.dtype)


def _draws_as_one_call(fast):
    """``fast(x)`` draws what one call of ``_noisy`` draws, and leaves torch's generator
    where one call leaves it."""
    import torch

    x = torch.ones(4, dtype=torch.float64)
    with torch.random.fork_rng():
        start = torch.get_rng_state()
        expected = _noisy(x)
        after_one = torch.get_rng_state()
        torch.set_rng_state(start)
        with warnings.catch_warnings():
            warnings.simplefilter("error", cg.CompileFallbackWarning)
            got = fast(x)
        assert torch.equal(torch.get_rng_state(), after_one)
    assert torch.equal(got, expected)


def test_measuring_leaves_the_random_state_as_one_call_would(monkeypatch):
    """route="measure" calls the function several times; the global generator ends where
    one call leaves it, and the draws are one call's."""
    ns = _torch()
    monkeypatch.setattr(policy, "jit_routes", lambda *args: ("trace", "eager"))
    _draws_as_one_call(ns.jit(_noisy, route="measure"))


@pytest.mark.parametrize("route", ["trace", "trace-compile"])
def test_a_branch_on_values_is_never_baked_in(route):
    """The branch's direction changes between calls: both answers are right (the traced
    routes refuse the branch and that signature runs eagerly, with a warning)."""
    ns = _torch()
    import torch

    def branchy(x):
        return torch.sin(x).sum() if x.sum() > 0 else torch.cos(x).sum()

    fast = ns.jit(ns.grad(branchy), route=route, options={"backend": "aot_eager"} if route == "trace-compile" else None)
    with pytest.warns(cg.CompileFallbackWarning, match="ControlFlowError"):
        up = fast(torch.ones(3, dtype=torch.float64))
    down = fast(-torch.ones(3, dtype=torch.float64))
    np.testing.assert_allclose(up.numpy(), np.cos(np.ones(3)), rtol=1e-12)
    np.testing.assert_allclose(down.numpy(), np.sin(np.ones(3)), rtol=1e-12)


@pytest.mark.parametrize("route", ["trace", "trace-compile"])
def test_closed_over_weights_are_inputs_not_constants(route):
    """A model's weights updated in place between calls (an optimizer step) change the result."""
    ns = _torch()
    import torch

    gen = torch.Generator().manual_seed(0)  # the test's own draws: the global generator stays untouched
    with torch.random.fork_rng():  # nn.Linear initialises from the global generator
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    fast = ns.jit(ns.batched_hessian(lambda x: model(x)), route=route,
                  options={"backend": "aot_eager"} if route == "trace-compile" else None)
    x = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    before = fast(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    after = fast(x)
    assert not torch.allclose(before, after)
    eager = ns.batched_hessian(lambda x: model(x))(x)
    frameworks.assert_trees_close(after, eager, **TOL["float64"]["same"])


def test_autograd_flows_through_the_traced_route():
    """A loss built from per-sample Hessians trains a torch model through cg.jit."""
    ns = _torch()
    import torch

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen)

    def loss(w, x):
        h = ns.batched_hessian(lambda w, x: torch.tanh(w @ x), argnums=1, in_axes=(None, 0))(w, x)
        return (h ** 2).sum()

    (expected,) = torch.autograd.grad(loss(w, x), w)
    (got,) = torch.autograd.grad(ns.jit(loss, route="trace")(w, x), w)
    frameworks.assert_trees_close(got, expected, **TOL["float64"]["same"])


def test_a_new_signature_is_traced_anew():
    ns = _torch()
    import torch

    fast = ns.jit(ns.hessian(lambda x, p: (x ** p).sum()), route="trace")
    for n, p in ((3, 3), (5, 3), (3, 4)):
        x = torch.arange(1.0, n + 1, dtype=torch.float64)
        np.testing.assert_allclose(fast(x, p).numpy(), np.diag(p * (p - 1) * x.numpy() ** (p - 2)), rtol=1e-12)


def test_jax_has_no_trace_route():
    pytest.importorskip("jax")
    with pytest.raises(cg.UnsupportedOptionError, match=r"^jit: expected a route the jax backend has \('auto', "
                       r"'measure', 'compile'\), but got route='trace'"):
        cg.jax.jit(lambda x: x, route="trace")


def test_unknown_route(backend):
    with pytest.raises(cg.OptionError, match=r"^jit: expected"):
        backend.jit(lambda x: x, route="fastest")


def test_cudagraph_route_is_refused_on_cpu_tensors():
    ns = _torch()
    import torch

    fast = ns.jit(ns.hessian(lambda x: (x ** 3).sum()), route="trace-cudagraph")
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    with pytest.warns(cg.CompileFallbackWarning, match="CUDA graph needs every input on the GPU"):
        got = fast(x)
    np.testing.assert_allclose(got.numpy(), np.diag([6.0, 12.0]))


def _cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return cg.backend("torch"), torch


def test_cudagraph_route_on_the_gpu():
    """Replayed results equal eager ones, are fresh tensors (a later call does not change
    an earlier result), and follow weights updated in place."""
    ns, torch = _cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(33, 31, device="cuda", generator=gen)
    x = torch.randn(16, 31, device="cuda", generator=gen)
    h = ns.batched_hessian(lambda x: torch.tanh(w @ x))
    fast = ns.jit(h, route="trace-cudagraph")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        first = fast(x)
        kept = first.clone()
        second = fast(x * 2)
    torch.testing.assert_close(first, kept)
    torch.testing.assert_close(second, h(x * 2), rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        w.mul_(0.5)
    torch.testing.assert_close(fast(x), h(x), rtol=1e-4, atol=1e-5)


def test_cudagraph_route_refuses_where_autograd_records():
    ns, torch = _cuda()
    w = torch.randn(4, 3, device="cuda", requires_grad=True, generator=torch.Generator(device="cuda").manual_seed(0))
    x = torch.ones(5, 3, device="cuda")
    fast = ns.jit(lambda w, x: ns.batched_hessian(lambda w, x: torch.tanh(w @ x), 1, (None, 0))(w, x).sum(),
                  route="trace-cudagraph")
    with pytest.warns(cg.CompileFallbackWarning, match="autograd records through this call"):
        loss = fast(w, x)
    loss.backward()
    assert w.grad is not None


def test_default_route_on_the_gpu_measures_the_replay(caplog):
    ns, torch = _cuda()
    x = torch.randn(8, 5, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    h = ns.batched_hessian(lambda x: torch.tanh(x) * x.sum())
    with caplog.at_level(logging.INFO, logger="crossgrad"):
        got = ns.jit(h)(x)
    assert any("trace-cudagraph " in r.getMessage() for r in caplog.records if "measured" in r.getMessage())
    torch.testing.assert_close(got, h(x), rtol=1e-4, atol=1e-5)


# -- the algebraic simplification of traced graphs (torch) ------------------------------

def _traced(fn, *args):
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(fn, tracing_mode="real")(*args)


def _simplified_count(fn, *args):
    """(rewrites, simplified graph's output, eager output)."""
    from crossgrad.backends.torch import simplify

    gm = _traced(fn, *args)
    count = simplify.simplify(gm)
    return count, gm(*args), fn(*args)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_identity_products_are_removed_from_batched_jacobians(mode):
    """torch.func multiplies by its per-sample identity basis (NOTE [identity products]):
    the pass rewrites those products and the graph's result is unchanged."""
    ns = _torch()
    import torch

    prob = problems.tanh_linear(n_in=6, n_out=7, batch=5)
    f, args = _prepared(ns, prob)
    count, got, expected = _simplified_count(ns.batched_jacobian(f, 2, (None, None, 0), mode=mode), *args)
    assert count >= 1
    assert torch.equal(got, expected)


def test_products_with_identities_diagonals_and_zeros():
    _torch()
    import torch

    gen = torch.Generator().manual_seed(0)
    a, w, v = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((4, 3), (3, 5), (3,)))

    def products(a, w, v):
        eye = torch.eye(3, dtype=a.dtype)
        batched = eye.expand(2, 3, 3)
        return (a @ eye, eye @ w, (eye * v) @ w, a @ (v[:, None] * eye),
                torch.bmm(a.expand(2, 4, 3), batched), torch.zeros(4, 3, dtype=a.dtype) @ w)

    count, got, expected = _simplified_count(products, a, w, v)
    assert count == 6
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert got[0].data_ptr() != a.data_ptr()  # a fresh tensor, never a view of an input


def test_matrix_vector_products_with_zeros_and_identities():
    _torch()
    import torch

    v = torch.arange(3.0, dtype=torch.float64)

    def products(v):
        return torch.zeros(3, 3, dtype=v.dtype) @ v, torch.eye(3, dtype=v.dtype) @ v

    count, got, expected = _simplified_count(products, v)
    assert count == 2
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert got[1].data_ptr() != v.data_ptr()  # a fresh tensor, never the input


def test_buffers_written_in_place_are_not_taken_for_zeros_or_identities():
    _torch()
    import torch

    def written(x, w):
        z = torch.zeros(3, 3, dtype=x.dtype)
        z.unsqueeze(0)[0].copy_(x)  # through two views
        e = torch.eye(3, dtype=x.dtype)
        e.diagonal().mul_(2.0)
        return z @ w, e @ w

    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 3, generator=gen, dtype=torch.float64), torch.randn(3, 3, generator=gen, dtype=torch.float64)
    count, got, expected = _simplified_count(written, x, w)
    assert count == 0
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)



def test_sums_with_zero_tangents_are_removed_from_forward_over_forward_hessians(inside_always):
    """Forward over forward adds a zero second-order tangent to the product rule's term, a
    full pass over the Hessian each: the pass follows the zeros through the sums and keeps
    the term (NOTE [identity products]); the result is unchanged."""
    ns = _torch()
    import torch

    from crossgrad.backends.torch import simplify

    prob = problems.tanh_linear(n_in=6, n_out=7, batch=5)
    f, args = _prepared(ns, prob)
    h = ns.batched_hessian(f, 2, (None, None, 0), strategy="fwd-fwd")
    gm = _traced(h, *args)
    adds = sum(n.target == torch.ops.aten.add.Tensor for n in gm.graph.nodes)
    assert simplify.simplify(gm) >= 1
    zeros = {n for n in gm.graph.nodes if n.target == torch.ops.aten.zeros.default}
    sums_with_zeros = [n for n in gm.graph.nodes if n.target == torch.ops.aten.add.Tensor and zeros & set(n.args)]
    assert not sums_with_zeros, sums_with_zeros
    assert sum(n.target == torch.ops.aten.add.Tensor for n in gm.graph.nodes) < adds
    torch.testing.assert_close(gm(*args), h(*args), rtol=1e-12, atol=1e-12)


def test_a_sum_with_zero_never_hands_back_an_input():
    """``x + zeros`` where ``x`` is an input (or a view of one) stays a sum: the result must
    not alias the caller's tensor."""
    _torch()
    import torch

    def f(x):
        return x + torch.zeros(3, dtype=x.dtype), x.view(3) + torch.zeros(3, dtype=x.dtype)

    x = torch.ones(3, dtype=torch.float64)
    from crossgrad.backends.torch import simplify

    gm = _traced(f, x)
    simplify.simplify(gm)
    got = gm(x)
    assert all(g.data_ptr() != x.data_ptr() for g in got)



def test_input_copies_go_where_nothing_writes_them_and_stay_where_something_does():
    """The input watch copies the caller's tensors; in a traced graph a copy that nothing
    writes and no output is a view of is dropped (the graph reads the input), and kept
    where the function writes into it or returns a view of it."""
    ns = _torch()
    import torch

    from crossgrad.backends.torch import simplify

    def clones(gm):
        return sum(n.target == torch.ops.aten.clone.default and n.args[0].op == "placeholder" for n in gm.graph.nodes)

    prob = problems.tanh_linear(n_in=6, n_out=7, batch=5)
    f, args = _prepared(ns, prob)
    jac = ns.batched_jacobian(f, 2, (None, None, 0))
    gm = _traced(jac, *args)
    assert clones(gm) == 3
    simplify.simplify(gm)
    assert clones(gm) == 0
    torch.testing.assert_close(gm(*args), jac(*args), rtol=0, atol=0)

    def writes(x):
        x.mul_(2.0)
        return x.sum()

    def view_of(x):
        return x.view(-1)

    def written_copy(t):
        return writes(t.clone())

    x = torch.ones(2, 3, dtype=torch.float64)
    for name, gm in (("written", _traced(written_copy, x)), ("viewed", _traced(ns.vmap(view_of), x))):
        before = clones(gm)
        assert before >= 1, name
        simplify.simplify(gm)
        assert clones(gm) == before, name


# -- hvp's per-function cache (issue: keyed by equality, kept every function alive) -------

def test_hvp_cache_tells_equal_callables_apart(backend):
    """Two callables that compare equal but compute different functions."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Power:
        p: float = dataclasses.field(compare=False)

        def __call__(self, x):
            return (x ** self.p).sum()

    cube, square = Power(3.0), Power(2.0)
    assert cube == square
    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")
    t = frameworks.convert(np.ones(2), backend.name, "float64")
    np.testing.assert_allclose(frameworks.to_numpy(backend.hvp(cube, (x,), (t,))), [6.0, 12.0])
    np.testing.assert_allclose(frameworks.to_numpy(backend.hvp(square, (x,), (t,))), [2.0, 2.0])


def test_hvp_keeps_no_function_alive(backend):
    import gc
    import weakref

    x = frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64")
    refs = []
    for k in range(5):
        big = frameworks.convert(np.full(1000, float(k)), backend.name, "float64")

        def f(x, big=big):
            return (x ** 3).sum() + big.sum() * 0

        backend.hvp(f, (x,), (x,))
        refs.append(weakref.ref(f))
        del f, big
    gc.collect()
    assert all(r() is None for r in refs)


def test_check_and_measuring_leave_the_caller_as_one_call_would():
    """jit's extra evaluations (building, measuring, check=True) run on copies with the
    generators restored: a stochastic function agrees with itself, the generator
    advances once, and a function writing into its input writes once."""
    ns = _torch()
    import torch

    _draws_as_one_call(ns.jit(_noisy, check=True, route="trace"))

    def bump(x):
        x.add_(1.0)
        return x * 2

    y = torch.zeros(3, dtype=torch.float64)
    out = ns.jit(bump, check=True)(y)
    assert y.tolist() == [1.0, 1.0, 1.0] and out.tolist() == [2.0, 2.0, 2.0]


def test_identity_over_other_axes_copied_into_a_fresh_buffer():
    """torch.func's forward-mode basis: an identity over axes (0, 2), broadcast along axis
    1, copied into a fresh buffer and permuted, then multiplied in a bmm (on either side):
    rewritten as a gather of the other factor's diagonal, the same values."""
    _torch()
    import torch

    gen = torch.Generator().manual_seed(0)
    w, u = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(4, 6, generator=gen, dtype=torch.float64)

    def products(w, u):
        basis = torch.eye(4, dtype=w.dtype).view(4, 1, 4).expand(4, 3, 4)
        buffer = torch.zeros(4, 3, 4, dtype=w.dtype)
        buffer.copy_(basis)
        right = torch.bmm(w.expand(4, 5, 4), buffer.permute(0, 2, 1))  # delta over (0, 1)
        left = torch.bmm(buffer.permute(0, 1, 2).transpose(1, 2).transpose(1, 2), u.expand(4, 4, 6))
        return right, left

    count, got, expected = _simplified_count(products, w, u)
    assert count == 2
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
        assert x.is_contiguous()
