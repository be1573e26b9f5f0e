"""check_grads: forward mode against reverse mode against finite differences.

NOTE [gradient checks]: three independent computations of one directional derivative
must agree.  For a random tangent ``v`` (shaped like the arguments) and cotangent ``u``
(shaped like the output), drawn from a fixed seed: the jvp ``J v`` against the central
difference ``(f(x + eps v) - f(x - eps v)) / (2 eps)``, and the adjoint identity
``u . (J v) == (J^T u) . v`` between the jvp and the vjp.  ``order=2`` checks the
first-order check's directional derivative ``x -> J(x) v`` the same way (second
derivatives by forward over forward, reverse over forward, and differences of the
jvp).  Tolerances per dtype: :mod:`crossgrad.tolerances`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from crossgrad import errors, option_checks, pytree, tolerances
from crossgrad.backends.base import Backend
from crossgrad.transforms import derivatives


def _dot(backend: Backend, a: Any, b: Any) -> float:
    to_numpy = backend.arrays.to_numpy
    # Array leaves only, paired in order: a derivative holds None (no leaf) where the
    # arguments hold a static leaf.
    xs = [x for x in pytree.leaves(a) if _is_array_leaf(x)]
    ys = [y for y in pytree.leaves(b) if _is_array_leaf(y)]
    return float(sum(np.vdot(to_numpy(x).astype(np.float64), to_numpy(y).astype(np.float64)) for x, y in zip(xs, ys)))


def _random_like(backend: Backend, tree: Any, rng: np.random.Generator) -> Any:
    """Random directions for the array leaves; static leaves (a model's activation
    functions, flags) stay as they are, as the transforms hold them."""
    arrays = backend.arrays
    return pytree.map_leaves(
        lambda x: arrays.cast_like(arrays.from_numpy(rng.standard_normal(arrays.shape(x)), x), x)
        if arrays.is_array(x) else x, tree)


def _zip_map(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """``fn`` on the array leaves of two pytrees of one structure, rebuilt as ``a`` (static
    leaves kept from ``a``)."""
    leaves, treedef = pytree.flatten(a)
    return pytree.unflatten(treedef, [fn(x, y) if _is_array_leaf(x) else x for x, y in zip(leaves, pytree.leaves(b))])


def _is_array_leaf(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype")


def _largest(backend: Backend, a: Any, b: Any) -> tuple[float, float]:
    """The largest absolute difference between two pytrees, and their largest magnitude."""
    to_numpy = backend.arrays.to_numpy
    diff, scale = 0.0, 0.0
    for x, y in zip(pytree.leaves(a), pytree.leaves(b)):
        x, y = to_numpy(x).astype(np.float64), to_numpy(y).astype(np.float64)
        if x.size:
            d = float(np.max(np.abs(x - y)))  # NaN where either side has one: a NaN derivative fails
            diff = d if np.isnan(d) or d > diff else diff
            scale = max(scale, float(np.max(np.abs(x))), float(np.max(np.abs(y))))
    return diff, scale


@dataclasses.dataclass(frozen=True)
class GradientCheckPlan:
    """What :func:`check_grads` compares on these arguments (NOTE [plans] in
    :mod:`crossgrad.transforms.jacobians`): the order, the dtype that sets the tolerances,
    the finite-difference step and its relative tolerance, the adjoint identity's tolerance,
    and why (given or the dtype's defaults, :mod:`crossgrad.tolerances`)."""

    transform: str
    order: int
    dtype: str
    eps: float
    rtol: float
    identity_rtol: float
    why: str

    def __str__(self) -> str:
        return (f"{self.transform}: order {self.order}, {self.dtype}: forward mode against central differences "
                f"(eps {self.eps:g}, relative {self.rtol:g}) and against reverse mode (u . (J v) == (J^T u) . v, "
                f"relative {self.identity_rtol:g}); reverse mode against the differences where f has no forward "
                f"rule; {self.why}")


def _checked(f: Callable[..., Any], args: tuple[Any, ...], order: int) -> None:
    name = "check_grads"
    option_checks.check_callable(name, f)
    if not isinstance(args, tuple) or not args:
        raise errors.OptionTypeError(name, "args as a non-empty tuple of the function's arguments",
                                     f"{args!r}"[:80], "Pass check_grads(f, (x,)).")
    if order not in (1, 2) or isinstance(order, bool):
        raise errors.OptionError(name, "order 1 or 2", f"order={order!r}", "Pass order=1 or order=2.")


def check_grads_plan(backend: Backend, f: Callable[..., Any], args: tuple[Any, ...], order: int = 1, *,
                     eps: float | None = None, rtol: float | None = None, seed: int = 0) -> GradientCheckPlan:
    """The plan :func:`check_grads` follows on these arguments (its checks included); nothing
    is computed."""
    _checked(f, args, order)
    dtype = backend.arrays.dtype_name(pytree.leaves(args)[0])
    t = tolerances.of(dtype)
    given = [f"{k}={v!r} given" for k, v in (("eps", eps), ("rtol", rtol)) if v is not None]
    why = ", ".join(given) or f"{dtype}'s default step and tolerances"
    return GradientCheckPlan("check_grads", order, dtype, t.step if eps is None else eps,
                             t.finite_difference if rtol is None else rtol, t.identity,
                             f"{why}; random directions from seed {seed} (NOTE [gradient checks])")


@derivatives.planned_by(check_grads_plan)
def check_grads(backend: Backend, f: Callable[..., Any], args: tuple[Any, ...], order: int = 1, *, eps: float | None = None,
                rtol: float | None = None, seed: int = 0) -> None:
    """Check ``f``'s derivatives at ``args``: forward mode against reverse mode
    against central finite differences (NOTE [gradient checks]).

    Returns None when they agree; raises :class:`crossgrad.errors.GradientCheckError`
    naming the largest discrepancy otherwise.  ``order`` is 1 or 2; ``eps`` the
    finite-difference step and ``rtol`` its relative tolerance (defaults per dtype,
    :mod:`crossgrad.tolerances`); ``seed`` fixes the random directions (drawn with NumPy:
    the frameworks' generators are not touched).

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.check_grads(lambda x: torch.sin(x) * x, (torch.tensor([0.5, 1.0], dtype=torch.float64),))
    """
    _checked(f, args, order)
    rng = np.random.default_rng(seed)
    v = _random_like(backend, args, rng)
    if order == 1:
        _check_first_order(backend, f, args, v, rng, eps, rtol, "")
        return None

    def directional(*xs: Any) -> Any:  # x -> J(x) v
        return derivatives.jvp(backend, f, xs, v)[1]

    _check_first_order(backend, directional, args, _random_like(backend, args, rng), rng, eps, rtol,
                            " of the directional derivative (order 2)")
    return None


def _check_first_order(backend: Backend, f: Callable[..., Any], args: tuple[Any, ...], v: Any, rng: np.random.Generator, eps: float | None,
                       rtol: float | None, what: str) -> None:
    name = "check_grads"
    dtype = backend.arrays.dtype_name(pytree.leaves(args)[0])
    tolerance = tolerances.of(dtype)
    fd_rtol, adjoint_rtol, default_eps = tolerance.finite_difference, tolerance.identity, tolerance.step
    eps = default_eps if eps is None else eps
    fd_rtol = fd_rtol if rtol is None else rtol
    plus = f(*_zip_map(lambda x, t: x + eps * t, args, v))
    minus = f(*_zip_map(lambda x, t: x - eps * t, args, v))
    fd = _zip_map(lambda p, m: (p - m) / (2 * eps), plus, minus)
    try:
        out, jv = derivatives.jvp(backend, f, args, v)
    except Exception as exc:
        if backend.primitives.failure_cause(exc) != "no forward rule":
            raise
        # A custom rule with a backward only (as torch's gradcheck takes it): reverse mode
        # against the finite differences, u . (J v) ~ (J^T u) . v.
        u = _random_like(backend, fd, rng)
        _, vjp_fn = derivatives.vjp(backend, f, *args)
        left, right = _dot(backend, u, fd), _dot(backend, vjp_fn(u), v)
        if not abs(left - right) <= fd_rtol * max(abs(left), abs(right), 1.0):
            raise errors.GradientCheckError(
                name, f"reverse mode to agree with central differences{what} (the function has no forward rule; "
                f"relative {fd_rtol:g}, eps {eps:g})", f"(J^T u) . v = {right:.6g} against u . (central "
                f"differences along v) = {left:.6g}",
                "Check the function's backward (a custom rule), or pass a larger eps or rtol for a rough function.") from None
        return
    # forward mode against finite differences
    diff, scale = _largest(backend, jv, fd)
    if not diff <= fd_rtol * max(scale, 1.0):  # NaN fails too
        raise errors.GradientCheckError(
            name, f"forward mode to agree with central differences{what} (relative {fd_rtol:g}, eps {eps:g})",
            f"a largest difference of {diff:.3g} against a magnitude of {scale:.3g}",
            "Check the function's jvp (a custom rule), or pass a larger eps or rtol for a rough function.")
    # forward mode against reverse mode: u . (J v) == (J^T u) . v
    u = _random_like(backend, out, rng)
    _, vjp_fn = derivatives.vjp(backend, f, *args)
    jtu = vjp_fn(u)
    left, right = _dot(backend, u, jv), _dot(backend, jtu, v)
    bound = adjoint_rtol * max(abs(left), abs(right), 1.0)
    if not abs(left - right) <= bound:  # NaN fails too
        raise errors.GradientCheckError(
            name, f"forward and reverse mode to agree{what}: u . (J v) == (J^T u) . v (relative {adjoint_rtol:g})",
            f"u . (J v) = {left:.6g} against (J^T u) . v = {right:.6g}",
            "Check the function's custom jvp or vjp rule; a function that stops gradients (no_grad, detach) in "
            "one mode only answers differently in the two.")
