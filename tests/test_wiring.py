"""The wiring: options validated once, when a transform is made; what depends on the
arguments' signature (leaf types, dtypes, axes, batch size) checked once per signature;
nothing of either on later calls; the batched transforms' two kinds of chunks by two names."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import crossgrad as cg
from crossgrad import batch_axes, option_checks, value_checks
from crossgrad.testing import frameworks
from crossgrad.transforms import call, namespace, vectorize
from tests.tolerances import TOL

# Per-signature checks, counted where the shared code calls them.
SIGNATURE_CHECKS = ("check_float_input", "check_axis_sizes", "check_leaves")


@pytest.fixture
def counts(monkeypatch):
    """How often each validation step ran, counted through the names the shared code calls."""
    seen: Counter[str] = Counter()

    def counting(name, fn):
        def counted(*args, **kwargs):
            seen[name] += 1
            return fn(*args, **kwargs)

        return counted

    rooms = {"validate_options": option_checks, "check_callable": option_checks, "check_float_input": value_checks,
             "check_axis_sizes": batch_axes}
    for name, room in rooms.items():
        monkeypatch.setattr(room, name, counting(name, getattr(room, name)))
    leaves = counting("check_leaves", call.check_leaves)
    monkeypatch.setattr(call, "check_leaves", leaves)
    monkeypatch.setattr(vectorize, "check_leaves", leaves)
    return seen


def _scalar(x):
    return (x ** 3).sum() + (x[..., 0] * x[..., -1]).sum()


def _vector(x):
    return x ** 2 * x.sum(-1, keepdims=True) if hasattr(x, "sum") else x


# name -> (options, batched): every public transform that returns a function.
MADE = {
    "grad": ({}, False),
    "value_and_grad": ({}, False),
    "vmap": ({}, True),
    "jacrev": ({}, False),
    "jacfwd": ({}, False),
    "jacobian": ({}, False),
    "hessian": ({}, False),
    "batched_jacobian": ({}, True),
    "batched_hessian": ({}, True),
    "laplacian": ({}, False),
    "hessian_trace": ({"estimator": "hutchinson", "samples": 4, "key": 0}, False),
    "hessian_diagonal": ({}, False),
    "batched_laplacian": ({}, True),
    "batched_hessian_trace": ({}, True),
    "batched_hessian_diagonal": ({}, True),
}
SCALAR = {"grad", "value_and_grad", "laplacian", "hessian_trace", "hessian_diagonal", "batched_laplacian",
          "batched_hessian_trace", "batched_hessian_diagonal", "batched_hessian", "hessian"}


def _inputs(backend, batched, shape=(3,), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=((4, *shape) if batched else shape))
    return frameworks.convert(x, backend.name, "float64")


@pytest.mark.parametrize("impl", ["auto", "builtin", "composed"])
@pytest.mark.parametrize("name", sorted(MADE))
def test_options_validated_once_and_signatures_checked_once(backend, counts, name, impl):
    options, batched = MADE[name]
    if impl == "builtin" and options.get("estimator", "exact") != "exact":
        pytest.skip("the estimators have no built-in")
    g = _scalar if name in SCALAR or name == "vmap" else _vector
    evaluated = [0]

    def f(x):
        evaluated[0] += 1
        return g(x)

    transformed = getattr(backend, name)(f, impl=impl, **options)
    assert counts["validate_options"] == 1, f"{name}: options validated {counts['validate_options']} times when made"
    assert counts["check_callable"] == 1
    first = transformed(_inputs(backend, batched, seed=0))
    after_first = counts.copy()
    assert after_first["validate_options"] == 1, f"{name}: options validated again on a call"
    assert sum(after_first[c] for c in SIGNATURE_CHECKS) >= 1, f"{name}: the first call checked nothing"
    # One transform object's signature is checked once even where it nests others (a Hessian's
    # two Jacobians, a batched Hessian's vmap); the batched forms that are a vmap of the
    # per-sample transform (a batched Jacobian; a batched Hessian with impl="builtin": the
    # batch stays outside) check the batch and the sample apart.
    if name not in ("vmap", "batched_jacobian") and (name, impl) != ("batched_hessian", "builtin"):
        assert after_first["check_leaves"] == 1, f"{name}: the first call checked the leaves {after_first['check_leaves']} times"
    for seed in (1, 2):  # new values, the same signature
        evaluated[0] = 0
        transformed(_inputs(backend, batched, seed=seed))
        assert evaluated[0] == 1, f"{name}: a steady call evaluated f {evaluated[0]} times"
    assert counts == after_first, f"{name}: checks repeated on calls of a known signature: {counts - after_first}"
    transformed(_inputs(backend, batched, shape=(5,), seed=3))  # a new signature is checked
    assert sum(counts[c] for c in SIGNATURE_CHECKS) > sum(after_first[c] for c in SIGNATURE_CHECKS), name
    assert counts["validate_options"] == 1
    assert first is not None


def test_top_level_validates_once_when_made(backend, counts, monkeypatch):
    """``cg.batched_hessian(f)`` checks its options when made (the backend is not known
    yet); its first call binds the backend's transform without checking them again."""
    checked: list[str] = []
    original = option_checks.check_choice

    def counted(transform, name, value, choices):
        checked.append(name)
        return original(transform, name, value, choices)

    monkeypatch.setattr(option_checks, "check_choice", counted)
    transformed = cg.batched_hessian(_scalar, in_axes=0, strategy="auto")
    made = list(checked)
    assert "strategy" in made
    for seed in range(3):
        transformed(_inputs(backend, True, seed=seed))
    assert checked == made, f"options checked again when the backend was bound: {checked[len(made):]}"


@pytest.mark.parametrize("name", ["batched_jacobian", "batched_hessian", "batched_laplacian",
                                  "batched_hessian_trace", "batched_hessian_diagonal"])
@pytest.mark.parametrize("old", [2, "auto"])
def test_batched_chunk_size_is_refused_with_the_name_to_use(backend, name, old):
    with pytest.raises(cg.OptionError, match="basis_chunk_size" if old == 2 else "batch_chunk_size") as err:
        getattr(backend, name)(_scalar, chunk_size=old)
    assert "chunk_size=" in str(err.value) and name in str(err.value)
    with pytest.raises(cg.OptionError):  # the top level says the same when the transform is made
        getattr(cg, name)(_scalar, chunk_size=old)


@pytest.mark.parametrize("name", ["batched_jacobian", "batched_hessian"])
def test_batch_and_basis_chunks_agree_with_no_chunks(backend, name):
    f = _scalar if name == "batched_hessian" else _vector
    x = _inputs(backend, True)
    whole = getattr(backend, name)(f)(x)
    for chunks in ({"batch_chunk_size": 3}, {"batch_chunk_size": "auto"}, {"basis_chunk_size": 2},
                   {"batch_chunk_size": 2, "basis_chunk_size": 1}):
        got = getattr(backend, name)(f, **chunks)(x)
        frameworks.assert_trees_close(got, whole, **TOL["float64"]["same"], what=f"{name} {chunks}")
    with pytest.raises(cg.OptionError, match="batch_chunk_size"):
        getattr(backend, name)(f, basis_chunk_size="auto")


def test_namespace_binds_each_function_once_behind_one_watch(backend):
    """The namespace attribute is the transform function with the backend bound: made once
    per namespace, with the function's signature less the backend."""
    assert backend.hessian is backend.hessian
    bound = namespace.public("hessian")
    assert str(bound.signature).startswith("(f")
    assert backend.hessian.__doc__ == bound.fn.__doc__


@pytest.mark.parametrize("name", ["hvp", "check_grads", "hessian", "batched_hessian"])
def test_one_public_call_watches_its_inputs_once(backend, monkeypatch, name):
    """The input watch wraps the public call only: compositions (hvp's jvp of a gradient,
    check_grads' jvp and vjp, a Hessian's two Jacobians) call the functions, not the
    namespace, so the caller's arrays are copied and checked once."""
    arrays = backend.backend.arrays
    shields: list[int] = []
    original = arrays.shield

    def counted(*args, **kwargs):
        shields.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(arrays, "shield", counted)
    x = _inputs(backend, name.startswith("batched"))
    if name == "hvp":
        backend.hvp(_scalar, (x,), (x,))
    elif name == "check_grads":
        backend.check_grads(_scalar, (x,))
    else:
        getattr(backend, name)(_scalar)(x)
    assert len(shields) == 1, f"{name}: the input watch ran {len(shields)} times"


@pytest.mark.parametrize("name", ["biharmonic", "batched_biharmonic", "weighted_laplacian",
                                  "batched_weighted_laplacian"])
def test_the_fourth_order_and_weighted_transforms_check_a_signature_once(backend, counts, name):
    """The transforms without ``impl`` hold the same wiring: a steady call evaluates f once
    and repeats none of the first call's signature checks."""
    batched = name.startswith("batched_")
    evaluated = [0]

    def f(x):
        evaluated[0] += 1
        return _scalar(x)

    extra = (np.eye(3),) if "weighted" in name else ()
    transformed = getattr(backend, name)(f, *extra)
    first = transformed(_inputs(backend, batched, seed=0))
    after_first = counts.copy()
    assert sum(after_first[c] for c in SIGNATURE_CHECKS) >= 1, f"{name}: the first call checked nothing"
    for seed in (1, 2):
        evaluated[0] = 0
        transformed(_inputs(backend, batched, seed=seed))
        assert evaluated[0] == 1, f"{name}: a steady call evaluated f {evaluated[0]} times"
    assert counts == after_first, f"{name}: checks repeated on calls of a known signature: {counts - after_first}"
    assert first is not None
