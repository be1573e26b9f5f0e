"""The problem catalog, written once for every backend.

Each :class:`Problem` builds its function from an :class:`~crossgrad.testing.frameworks.Ops`
namespace, so the same definition runs on torch and on jax.  Inputs are made in
NumPy float64 and converted per backend and dtype.  Closed forms, where they exist,
are NumPy functions of the same inputs.  Sizes are parameters: the tests use small
ones, the benchmarks the notebook's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossgrad.testing.frameworks import Ops


@dataclass(frozen=True)
class Problem:
    """A function, its inputs, what to differentiate, and what is known in closed form.

    ``build(ops)`` returns the function; ``inputs(rng)`` its positional arguments
    (NumPy, float64); ``argnums`` the differentiated arguments; ``in_axes`` the
    batch layout when the inputs carry a batch (None when they do not);
    ``jacobian``/``hessian``: closed forms of the (per-sample) derivatives of
    ``f(*inputs)`` with respect to ``argnums``, or None.
    """

    name: str
    build: Callable[[Ops], Callable[..., Any]]
    inputs: Callable[[np.random.Generator], tuple[Any, ...]]
    argnums: Any = 0
    scalar: bool = False
    in_axes: Any = None
    jacobian: Callable[..., Any] | None = None
    hessian: Callable[..., Any] | None = None
    tags: tuple[str, ...] = field(default=())


# -- the seed notebook's tanh(linear(x, W, b)) --------------------------------

def tanh_linear(n_in: int = 4, n_out: int = 5, batch: int | None = None, argnums: Any = 2) -> Problem:
    """``f(W, b, x) = tanh(W x + b)``; with ``batch``, ``x`` has a leading batch axis."""

    def build(o: Ops) -> Callable[..., Any]:
        def f(weight: Any, bias: Any, x: Any) -> Any:
            return o.tanh(weight @ x + bias)

        return f

    def inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        x_shape = (n_in,) if batch is None else (batch, n_in)
        return (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in), rng.standard_normal(n_out), rng.standard_normal(x_shape))

    def jac_x(w: Any, b: Any, x: Any) -> Any:
        t = np.tanh(np.einsum("mi,...i->...m", w, x) + b)
        return (1 - t**2)[..., :, None] * w

    def hess_x(w: Any, b: Any, x: Any) -> Any:
        t = np.tanh(np.einsum("mi,...i->...m", w, x) + b)
        s = -2 * t * (1 - t**2)
        return s[..., :, None, None] * w[:, :, None] * w[:, None, :]

    closed = argnums == 2
    return Problem(
        name=f"tanh_linear_{n_in}to{n_out}" + (f"_B{batch}" if batch else "") + ("" if closed else f"_argnums{argnums}"),
        build=build, inputs=inputs, argnums=argnums,
        in_axes=(None, None, 0) if batch else None,
        jacobian=jac_x if closed else None, hessian=hess_x if closed else None,
        tags=("vector",),
    )


# -- the notebook's critic / td_err, done right --------------------------------

def critic_td_err(dim: int = 4, batch: int = 3) -> Problem:
    """Per sample: ``td_err(state, action, q_target) = (q_target - q1, q_target - q2)``,
    ``q = tanh(w · (state + sum(action)))``; per-sample Jacobians of both heads with
    respect to the actions (argnums=1), the batch on every argument."""
    # Multiples of 2**-10: exact in float32 as in float64, so one constant serves both.
    w = np.round(np.random.default_rng(1234).standard_normal((1, dim)) / np.sqrt(dim) * 1024) / 1024

    def build(o: Ops) -> Callable[..., Any]:
        weight = o.asarray(w, "float32")

        def td_err(state: Any, action: Any, q_target: Any) -> Any:
            tmp = state + o.sum(action)
            wt = weight.to(tmp.dtype) if o.name == "torch" else weight.astype(tmp.dtype)
            q1 = o.tanh(wt @ tmp)
            q2 = o.tanh(wt @ tmp)
            return q_target - q1, q_target - q2

        return td_err

    def inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        return rng.standard_normal((batch, dim)), rng.standard_normal((batch, dim)), rng.standard_normal((batch, 1))

    def jac_action(state: Any, action: Any, q_target: Any) -> Any:
        q = np.tanh((state + action.sum(-1, keepdims=True)) @ w.T)  # (B, 1)
        head = -(1 - q**2)[..., None] * w.sum() * np.ones((1, 1, dim))  # (B, 1, dim)
        return head, head

    return Problem(f"critic_td_err_{dim}_B{batch}", build, inputs, argnums=1, in_axes=0, jacobian=jac_action,
                   tags=("two_heads",))


# -- scalar functions -----------------------------------------------------------

def rosenbrock(n: int = 5) -> Problem:
    def build(o: Ops) -> Callable[..., Any]:
        def f(x: Any) -> Any:
            return o.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

        return f

    def grad(x: Any) -> Any:
        g = np.zeros_like(x)
        g[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
        g[1:] += 200 * (x[1:] - x[:-1] ** 2)
        return g

    def hess(x: Any) -> Any:
        h = np.zeros((n, n))
        i = np.arange(n - 1)
        h[i, i] += 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
        h[i + 1, i + 1] += 200
        h[i, i + 1] = h[i + 1, i] = -400 * x[:-1]
        return h

    return Problem(f"rosenbrock_{n}", build, lambda rng: (rng.uniform(-1.5, 1.5, n),), scalar=True,
                   jacobian=grad, hessian=hess, tags=("scalar",))


def logsumexp(n: int = 6, batch: int | None = None) -> Problem:
    def build(o: Ops) -> Callable[..., Any]:
        def f(x: Any) -> Any:
            m = x.max()
            return m + o.log(o.sum(o.exp(x - m)))

        return f

    def softmax(x: Any) -> Any:
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def hess(x: Any) -> Any:
        p = softmax(x)
        return np.einsum("...i,ij->...ij", p, np.eye(n)) - p[..., :, None] * p[..., None, :]

    shape = (n,) if batch is None else (batch, n)
    return Problem(f"logsumexp_{n}" + (f"_B{batch}" if batch else ""), build, lambda rng: (rng.standard_normal(shape),),
                   scalar=True, in_axes=0 if batch else None, jacobian=softmax, hessian=hess, tags=("scalar",))


def mlp_dict(n_in: int = 3, hidden: int = 4) -> Problem:
    """A scalar loss of an MLP whose parameters are a dict (a pytree), argnums=0."""

    def build(o: Ops) -> Callable[..., Any]:
        def loss(params: Any, x: Any, y: Any) -> Any:
            h = o.tanh(x @ params["w1"] + params["b1"])
            pred = h @ params["w2"] + params["b2"]
            return o.sum((pred - y) ** 2)

        return loss

    def inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        # Insertion order is deliberately not sorted: results come back with sorted keys.
        params = {"w2": rng.standard_normal(hidden), "w1": rng.standard_normal((n_in, hidden)),
                  "b2": rng.standard_normal(()), "b1": rng.standard_normal(hidden)}
        return params, rng.standard_normal((5, n_in)), rng.standard_normal(5)

    return Problem(f"mlp_dict_{n_in}x{hidden}", build, inputs, scalar=True, tags=("scalar", "pytree"))


def mlp(sizes: tuple[int, ...], batch: int | None = None, wrt: str = "input", seed: int = 5) -> Problem:
    """A tanh MLP with parameters in a dict: ``f(params, x)``, or the scalar loss
    ``f(params, x, y)`` when differentiating the parameters.

    ``wrt="input"``: per-sample input derivatives (argnums=1); a last layer of width 1
    gives a scalar output (shape ()).  ``batch`` puts a batch axis on ``x`` (in_axes
    ``(None, 0)``).  ``wrt="params"``: the mean squared error over ``batch`` samples as
    a function of the parameter dict (argnums=0), as for a parameter Hessian or an hvp.
    """

    def build(o: Ops) -> Callable[..., Any]:
        depth = len(sizes) - 1

        def forward(params: Any, x: Any) -> Any:
            h = x
            for k in range(depth):
                h = h @ params[f"w{k}"] + params[f"b{k}"]
                if k < depth - 1:
                    h = o.tanh(h)
            return h

        if wrt == "params":
            def loss(params: Any, x: Any, y: Any) -> Any:
                return o.sum((forward(params, x) - y) ** 2) / x.shape[0]

            return loss

        def f(params: Any, x: Any) -> Any:
            out = forward(params, x)
            return out[..., 0] if sizes[-1] == 1 else out

        return f

    def inputs(rng: np.random.Generator) -> tuple[Any, ...]:
        params = {}
        for k, (a, b) in enumerate(itertools.pairwise(sizes)):
            params[f"w{k}"] = rng.standard_normal((a, b)) / np.sqrt(a)
            params[f"b{k}"] = 0.1 * rng.standard_normal(b)
        if wrt == "params":
            n = batch or 8
            return params, rng.standard_normal((n, sizes[0])), rng.standard_normal((n, sizes[-1]))
        return params, rng.standard_normal((sizes[0],) if batch is None else (batch, sizes[0]))

    label = "-".join(map(str, sizes))
    if wrt == "params":
        return Problem(f"mlp_params_{label}", build, inputs, argnums=0, scalar=True, tags=("scalar", "pytree"))
    return Problem(f"mlp_input_{label}" + (f"_B{batch}" if batch else ""), build, inputs, argnums=1,
                   scalar=sizes[-1] == 1, in_axes=(None, 0) if batch else None, tags=("mlp",))


def catalog() -> list[Problem]:
    """The small problems every transform is tested on."""
    return [
        tanh_linear(),
        tanh_linear(argnums=(0, 1)),
        rosenbrock(),
        logsumexp(),
        mlp_dict(),
        mlp((2, 5, 3), wrt="params"),
    ]


def batched_catalog() -> list[Problem]:
    """Problems whose inputs carry a batch (for vmap, batched_jacobian, batched_hessian)."""
    return [tanh_linear(n_in=3, n_out=4, batch=5), critic_td_err(), logsumexp(n=4, batch=3),
            mlp((3, 6, 6, 1), batch=4), mlp((2, 5, 5, 3), batch=3)]
