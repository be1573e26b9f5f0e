"""ggn_operator: the generalized Gauss-Newton matrix ``J^T H_l J`` of a loss of a model's
output, as a linear operator, never formed.

NOTE [gauss-newton operator]
For ``L(w) = loss(model(w))`` the Hessian is ``J^T H_l J`` plus the loss gradient's pairing
with the model's second derivatives; the Gauss-Newton matrix keeps the first term: positive
semi-definite for a convex loss, the curvature second-order optimizers and Laplace
approximations use.  A product is a model jvp (``J v``), a Hessian-vector product of the
loss alone at the model's output (``H_l J v``) and a model vjp: no second derivative of the
model is taken.  Exact traces and diagonals need no ``n`` products: with ``H_l = V diag(l)
V^T`` (``c x c``, ``c`` the output elements: ``c`` loss products, the loss being cheap) and
``B = J^T V`` (``c`` vjps), ``G = B diag(l) B^T``, so ``tr G = sum_k l_k |B_k|^2`` and
``diag G = (B * B) l``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from crossgrad import errors, option_checks, pytree, spec
from crossgrad.backends.base import Backend
from crossgrad.transforms.call import Call, call_user
from crossgrad.transforms.derivatives import planned_by
from crossgrad.transforms.hessian_vector import hessian_products
from crossgrad.transforms.operators import HessianOperator, OperatorPlan, joined, split


class GaussNewtonOperator(HessianOperator):
    """The ``n x n`` Gauss-Newton matrix ``J^T H_l J`` of ``loss(model(*primals))`` in the
    differentiated arguments (NOTE [gauss-newton operator]); the interface of
    :class:`~crossgrad.transforms.operators.HessianOperator` (``@``, ``matmat``, ``dense()``,
    ``trace()``, ``diagonal()``, the estimators, ``eigenvalues``, ``spectral_density``,
    ``to_scipy()``), its products ``J^T (H_l (J v))``.

    Example:
        >>> import torch, crossgrad as cg
        >>> x = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
        >>> G = cg.torch.ggn_operator(lambda w: x @ w, lambda z: 0.5 * (z ** 2).sum(), torch.zeros(2))
        >>> G.dense()
        tensor([[1., 2.],
                [2., 5.]])
    """

    name = "ggn_operator"

    def __init__(self, backend: Backend, model: Callable[..., Any], loss: Callable[..., Any], primals: tuple[Any, ...],
                 argnums: Any):
        self._model_call = Call(self.name, backend, model, primals, {}, argnums, False)
        self._loss = loss
        super().__init__(backend, lambda *args: loss(model(*args)), primals, argnums)
        self._factors: tuple[np.ndarray, np.ndarray] | None = None

    def _pieces(self, primals: tuple[Any, ...]) -> tuple[tuple[Any, ...], Callable[..., Any], Callable[..., Any]]:
        """The model's output leaves at ``primals``, its vjp and the loss's Hessian products there."""
        backend, mcall = self._backend, self._model_call
        outs, vjp_fn, _ = backend.primitives.vjp(lambda *x: mcall.flat_output(*x), primals, False)

        def loss_of(*leaves: Any) -> Any:
            return call_user(self.name, backend, self._loss, pytree.unflatten(mcall.output_structure(), list(leaves)))

        return tuple(outs), vjp_fn, hessian_products(backend, loss_of, tuple(outs))

    def _products_at(self, primals: tuple[Any, ...]) -> Callable[..., Any]:
        backend, mcall = self._backend, self._model_call

        def product(*t: Any) -> Any:
            _, vjp_fn, loss_products = self._pieces(primals)
            _, jv, _ = backend.primitives.jvp(lambda *x: mcall.flat_output(*x), primals, t, False)
            return tuple(vjp_fn(tuple(loss_products(*jv))))

        return product

    def _product_route(self) -> tuple[str, str]:
        return "jvp-hvp-vjp", ("J^T (H_l (J v)): a model jvp, the loss's Hessian-vector product at the model's output, "
                               "a model vjp; no second derivative of the model (NOTE [gauss-newton operator])")

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """``(l, B)``: ``G = B diag(l) B^T`` (NumPy float64, ``(c,)`` and ``(n, c)``)."""
        if self._factors is None:
            a, p = self._backend.arrays, self._backend.primitives
            outs, vjp_fn, loss_products = self._pieces(self._call.primals)
            shapes = [a.shape(o) for o in outs]
            c = sum(a.size(o) for o in outs)
            eye = a.eye(c, outs[0])
            h = p.vmap(lambda e: joined(a, loss_products(*split(a, e, shapes))), 1, 1)(eye)
            h = np.asarray(a.to_numpy(h), np.float64)
            values, vectors = np.linalg.eigh((h + h.T) / 2)
            v = a.cast_like(a.from_numpy(np.ascontiguousarray(vectors), outs[0]), outs[0])
            b = p.vmap(lambda u: joined(a, vjp_fn(tuple(split(a, u, shapes)))), 1, 1)(v)
            self._factors = values, np.asarray(a.to_numpy(b), np.float64)
        return self._factors

    def _exact_only(self, what: str, estimator: str, samples: int | None, key: Any) -> Any:
        option_checks.check_choice(f"{self.name}.{what}", "estimator", estimator, ("exact", "hutchinson"))
        if estimator == "exact":
            return None
        if what == "trace":
            return self._array(np.asarray(self.estimate_trace("hutchinson", samples or 64, key).estimate))
        return self.estimate_diagonal("hutchinson", samples or 64, key).estimate

    def trace(self, estimator: str = "exact", samples: int | None = None, key: Any = None) -> Any:
        """The trace (a scalar array): exact from the factors, or ``"hutchinson"`` from
        ``samples`` products."""
        estimated = self._exact_only("trace", estimator, samples, 0 if key is None else key)
        if estimated is not None:
            return estimated
        values, b = self.factors()
        return self._array(np.asarray((b * b).sum(axis=0) @ values))

    def diagonal(self, estimator: str = "exact", samples: int | None = None, key: Any = None) -> Any:
        """The diagonal, ``(n,)``: exact from the factors, or ``"hutchinson"``."""
        estimated = self._exact_only("diagonal", estimator, samples, 0 if key is None else key)
        if estimated is not None:
            return estimated
        values, b = self.factors()
        return self._array((b * b) @ values)

    def dense(self) -> Any:
        """The matrix, ``(n, n)``, from the factors (``c`` loss products and ``c`` vjps)."""
        values, b = self.factors()
        return self._array((b * values) @ b.T)


def ggn_operator_plan(backend: Backend, model: Callable[..., Any], loss: Callable[..., Any], *primals: Any,
                      argnums: spec.Argnums = 0) -> OperatorPlan:
    """The plan of :func:`ggn_operator`'s products on these arguments (its checks included);
    no product is computed."""
    return ggn_operator(backend, model, loss, *primals, argnums=argnums).plan()


@planned_by(ggn_operator_plan)
def ggn_operator(backend: Backend, model: Callable[..., Any], loss: Callable[..., Any], *primals: Any,
                 argnums: spec.Argnums = 0) -> GaussNewtonOperator:
    """The generalized Gauss-Newton matrix of ``loss(model(*primals))`` in ``primals[argnums]``
    as a :class:`GaussNewtonOperator`, never formed: ``model`` maps the primals to an output
    (any pytree), ``loss`` that output to a scalar (close over the targets).

    Example:
        >>> import torch, crossgrad as cg
        >>> x, y = torch.randn(16, 3), torch.randn(16)
        >>> G = cg.torch.ggn_operator(lambda w: torch.tanh(x @ w), lambda z: ((z - y) ** 2).mean(), torch.ones(3))
        >>> G.shape
        (3, 3)
    """
    option_checks.check_callable("ggn_operator", model)
    option_checks.check_callable("ggn_operator", loss)
    option_checks.validate_options("ggn_operator", argnums=argnums)
    if not primals:
        raise errors.OptionError("ggn_operator", "at least one primal (the point)", "no primals",
                                 "Pass the point: ggn_operator(model, loss, w).")
    return GaussNewtonOperator(backend, model, loss, primals, argnums)

