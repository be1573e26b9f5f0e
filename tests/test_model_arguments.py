"""Models passed as arguments, as a user writes them: a torch ``nn.Module`` where arrays are
expected (NOTE [models as arguments]), an Equinox module under ``cg.jit``; each checked
against the framework's own route (``torch.func.functional_call``, ``eqx.filter_grad``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks

F64 = TOL["float64"]["same"]
needs_torch = pytest.mark.skipif("torch" not in frameworks.selected(), reason="torch not selected")
needs_jax = pytest.mark.skipif("jax" not in frameworks.selected(), reason="jax not selected")


def _torch_model(batchnorm: bool = False):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layers = [torch.nn.Linear(3, 5)] + ([torch.nn.BatchNorm1d(5)] if batchnorm else []) + [torch.nn.Tanh()]
            self.body = torch.nn.Sequential(*layers)
            self.head = torch.nn.Linear(5, 2)

        def forward(self, x):
            return self.head(self.body(x))

        def penalty(self):  # a method reading a parameter directly
            return (self.head.weight ** 2).sum()

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Net().double(), torch.randn(7, 3, dtype=torch.float64)


def _close(got, expected):
    assert list(got) == list(expected)
    for k in expected:
        np.testing.assert_allclose(got[k].detach().numpy(), expected[k].detach().numpy(), **F64)


def _loss(model, x):
    return (model(x) ** 2).sum() + model.penalty()


def _reference_grad(model, x):
    import torch

    params = dict(model.named_parameters())
    return torch.func.grad(lambda p: _loss_of(model, p, x))(params)


def _loss_of(model, p, x):
    import torch

    return (torch.func.functional_call(model, p, (x,)) ** 2).sum() + (p["head.weight"] ** 2).sum()


@needs_torch
def test_a_module_is_differentiated_by_its_parameters_in_its_order():
    model, x = _torch_model()
    got = cg.torch.grad(_loss)(model, x)
    assert list(got) == [name for name, _ in model.named_parameters()]
    _close(got, _reference_grad(model, x))
    _close(cg.grad(_loss)(model, x), _reference_grad(model, x))  # the top level picks torch from the model


@needs_torch
def test_a_module_under_batched_transforms_and_products():
    import torch

    model, x = _torch_model()
    params = dict(model.named_parameters())

    def out(p, xi):
        return torch.func.functional_call(model, p, (xi,))

    got = cg.torch.batched_jacobian(lambda m, xi: m(xi), 0, (None, 0))(model, x)
    _close(got, torch.func.vmap(torch.func.jacrev(out), in_dims=(None, 0))(params, x))
    v = {k: torch.ones_like(t) for k, t in params.items()}
    hv = cg.torch.hvp(_loss, (model, x), (v,))
    expected = torch.func.jvp(lambda p: torch.func.grad(lambda q: _loss_of(model, q, x))(p), (params,), (v,))[1]
    _close(hv, expected)
    value, vjp_fn = cg.torch.vjp(lambda m: m(x).sum(), model)
    (cot,) = vjp_fn(torch.ones((), dtype=torch.float64))
    np.testing.assert_allclose(value.detach().numpy(), model(x).sum().detach().numpy(), **F64)
    _close(cot, torch.func.grad(lambda p: out(p, x).sum())(params))


@needs_torch
def test_a_module_under_jit_follows_its_parameters():
    import torch

    model, x = _torch_model()
    step = cg.torch.jit(cg.torch.grad(_loss))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        _close(step(model, x), _reference_grad(model, x))
        with torch.no_grad():  # an optimizer's update, in place
            model.head.weight.mul_(0.5)
        _close(step(model, x), _reference_grad(model, x))
        model.head.weight = torch.nn.Parameter(torch.ones(2, 5, dtype=torch.float64))  # rebound
        _close(step(model, x), _reference_grad(model, x))


@needs_torch
def test_buffers_are_read_and_left_alone_in_eval_mode():
    """functional_call's semantics: buffers stay the model's; in eval mode they are read."""
    import torch

    model, x = _torch_model(batchnorm=True)
    model.eval()
    before = model.body[1].running_mean.clone()
    got = cg.torch.grad(lambda m, x: m(x).sum())(model, x)
    params = dict(model.named_parameters())
    _close(got, torch.func.grad(lambda p: torch.func.functional_call(model, p, (x,)).sum())(params))
    assert torch.equal(model.body[1].running_mean, before) and int(model.body[1].num_batches_tracked) == 0


def _untracked_copy(model):
    """The oracle's model: the same parameters, batch statistics always, no running ones."""
    import copy

    ref = copy.deepcopy(model)
    ref.body[1].track_running_stats = False
    ref.body[1].running_mean = ref.body[1].running_var = None
    return ref


@needs_torch
@pytest.mark.parametrize("transform", ["grad", "jacobian", "hessian", "hvp"])
def test_a_training_batchnorm_is_differentiated_with_batch_statistics_and_updated_once(transform):
    """NOTE [statistics once per call]: the derivative is training mode's (batch statistics,
    as torch.func computes it on a BatchNorm that tracks none) and each call updates the
    running statistics once, to the values one eager call gives."""
    import copy

    import torch

    model, x = _torch_model(batchnorm=True)
    eager, ref = copy.deepcopy(model), _untracked_copy(model)
    params = dict(ref.named_parameters())

    def loss_of(p):
        return (torch.func.functional_call(ref, p, (x,)) ** 2).sum()

    v = {k: torch.ones_like(t) for k, t in params.items()}
    calls = {
        "grad": (lambda: cg.torch.grad(lambda m: (m(x) ** 2).sum())(model), lambda: torch.func.grad(loss_of)(params)),
        "jacobian": (lambda: cg.torch.jacobian(lambda m: m(x)[:, 0])(model),
                     lambda: torch.func.jacrev(lambda p: torch.func.functional_call(ref, p, (x,))[:, 0])(params)),
        "hessian": (lambda: cg.torch.hessian(lambda m: (m(x) ** 2).sum())(model)["head.bias"],
                    lambda: torch.func.hessian(loss_of)(params)["head.bias"]),
        "hvp": (lambda: cg.torch.hvp(lambda m: (m(x) ** 2).sum(), (model,), (v,)),
                lambda: torch.func.jvp(torch.func.grad(loss_of), (params,), (v,))[1]),
    }
    got_fn, expected_fn = calls[transform]
    for k in range(1, 3):
        _close(got_fn(), expected_fn())
        eager(x)
        assert int(model.body[1].num_batches_tracked) == int(eager.body[1].num_batches_tracked) == k
        for name in ("running_mean", "running_var"):
            torch.testing.assert_close(getattr(model.body[1], name), getattr(eager.body[1], name))


@needs_torch
def test_a_training_batchnorm_under_a_batched_transform_updates_once_per_sample():
    """Under a batched transform each sample's f normalizes over its own rows, and the
    statistics are updated as the loop over samples would, in order."""
    import copy

    import torch

    model, _ = _torch_model(batchnorm=True)
    xs = torch.randn(3, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # 3 samples, 6 rows
    eager, ref = copy.deepcopy(model), _untracked_copy(model)
    params = dict(ref.named_parameters())
    got = cg.torch.batched_jacobian(lambda m, xi: m(xi).sum(0), 0, (None, 0))(model, xs)
    expected = torch.func.vmap(torch.func.jacrev(lambda p, xi: torch.func.functional_call(ref, p, (xi,)).sum(0)),
                               in_dims=(None, 0))(params, xs)
    _close(got, expected)
    for xi in xs:
        eager(xi)
    assert int(model.body[1].num_batches_tracked) == int(eager.body[1].num_batches_tracked) == 3
    torch.testing.assert_close(model.body[1].running_var, eager.body[1].running_var)


@needs_torch
def test_a_closed_over_training_batchnorm_is_named_with_the_fix():
    """Closed over, the module's update is a write torch.func refuses: the error says to pass it."""
    import torch

    bn = torch.nn.BatchNorm1d(3).double()
    x = torch.ones(4, 3, dtype=torch.float64)
    with pytest.raises(cg.InputMutationError, match="Pass the module as an argument"):
        cg.torch.grad(lambda x: bn(x).sum())(x)


@needs_torch
def test_a_module_inside_a_container_is_named():
    model, x = _torch_model()
    with pytest.raises(cg.InputDtypeError, match="pass the module itself as an argument"):
        cg.torch.grad(lambda held: held[0](x).sum())((model,))


@needs_jax
def test_an_equinox_module_under_jit_without_fallback():
    eqx = pytest.importorskip("equinox")
    import jax
    import jax.numpy as jnp

    model = eqx.nn.MLP(3, 2, 8, 2, activation=jax.nn.softplus, key=jax.random.key(0))
    x = jnp.linspace(-1.0, 1.0, 3)
    loss = lambda m, x: (m(x) ** 2).sum()  # noqa: E731
    step = cg.jax.jit(cg.jax.grad(loss))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        got = step(model, x)
        again = step(model, x + 1.0)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(eqx.filter_grad(loss)(model, x))):
        np.testing.assert_allclose(a, b, **F64)
    for a, b in zip(jax.tree_util.tree_leaves(again),
                    jax.tree_util.tree_leaves(eqx.filter_grad(loss)(model, x + 1.0))):
        np.testing.assert_allclose(a, b, **F64)
