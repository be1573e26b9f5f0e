"""The primitives of one call, from its jaxpr, for the forward Taylor propagation.

NOTE [collapsed taylor] in :mod:`crossgrad.transforms.taylor`.  ``jax.make_jaxpr``
traces the call abstractly (under an outer ``jax.jit`` or ``jax.vmap`` too); nested
``jit`` calls are inlined so their operations get the cheap rules; a ``custom_jvp``
function stays one operation, differentiated by its own rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from crossgrad import pytree
from crossgrad.backends.recording import Entry, Recording, Unrecorded


class Primitive(NamedTuple):
    """What the rules read of one recorded jax operation."""

    name: str
    pointwise_body: bool  # a sub-program of elementwise primitives (a custom_jvp activation)
    shape: tuple[int, ...]  # of its first output
    params: dict[str, Any]

_LINEAR = {
    "neg", "reshape", "broadcast_in_dim", "transpose", "reduce_sum", "squeeze", "expand_dims", "slice", "rev",
    "copy", "copy_p", "convert_element_type", "cumsum", "real", "imag", "conj", "reduce_precision",
}
# Linear in the first operand (the others are indices or shapes).
_LINEAR_FIRST = {"dynamic_slice", "gather"}
_BILINEAR = {"mul", "dot_general"}
# Joined from the inputs: linear when every input varies.
_JOINS = {"concatenate"}
_POINTWISE = {
    "tanh", "exp", "exp2", "log", "log1p", "expm1", "sin", "cos", "tan", "logistic", "sqrt", "rsqrt", "cbrt",
    "integer_pow", "pow", "erf", "erfc", "erf_inv", "abs", "max", "min", "atan", "asin", "acos", "sinh", "cosh",
    "asinh", "acosh", "atanh", "atan2", "square", "lgamma", "digamma", "sign", "floor", "ceil", "round", "div",
    "mul", "add", "sub", "select_n", "clamp", "ne", "eq", "lt", "le", "gt", "ge", "is_finite", "not", "and", "or",
    "nextafter", "rem",
}
_CONSTANT = {"stop_gradient", "iota", "argmax", "argmin"}
_INLINED = {"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_vjp_call", "custom_vjp_call_jaxpr"}


def _inner(eqn: Any) -> Any:
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if name in eqn.params:
            return eqn.params[name]
    return None


def _is_pointwise_body(closed: Any) -> bool:
    """A sub-program made of elementwise primitives only (a custom_jvp activation)."""
    jaxpr = getattr(closed, "jaxpr", closed)
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in _POINTWISE:
            continue
        inner = _inner(eqn)
        if inner is not None and _is_pointwise_body(inner):
            continue
        if name == "broadcast_in_dim" and all(getattr(v.aval, "shape", ()) == () for v in eqn.invars):
            continue
        return False
    return True


def _binder(eqn: Any) -> Callable[..., Any]:
    primitive = eqn.primitive
    params = primitive.get_bind_params(eqn.params)

    def call(*values: Any) -> list[Any]:
        out = primitive.bind(*values, **params)
        return list(out) if primitive.multiple_results else [out]

    return call


def record(f: Callable[..., Any], primals: tuple[Any, ...]) -> Recording:
    """``f``'s jaxpr at the shapes of ``primals``, nested jit calls inlined."""
    found: dict[str, Any] = {}

    def flat(*p: Any) -> list[Any]:
        leaves, found["treedef"] = pytree.flatten(f(*p))
        return leaves

    closed = jax.make_jaxpr(flat)(*primals)
    scopes = itertools.count()
    entries: list[Entry] = []

    def walk(jaxpr: Any, consts: list[Any], env: dict[Any, Any]) -> list[Any]:
        """Append ``jaxpr``'s operations; ``env`` maps its variables to keys or ("value", v)."""
        scope = next(scopes)
        for var, c in zip(jaxpr.constvars, consts):
            env[var] = ("value", c)

        def atom(v: Any) -> Any:
            if hasattr(v, "val"):  # a Literal
                return ("value", v.val)
            return env[v]

        for eqn in jaxpr.eqns:
            inner = _inner(eqn)
            ins = [atom(v) for v in eqn.invars]
            if eqn.primitive.name in _INLINED and inner is not None:
                inner_jaxpr = getattr(inner, "jaxpr", inner)
                inner_consts = list(getattr(inner, "consts", []))
                sub_env = dict(zip(inner_jaxpr.invars, ins))
                outs = walk(inner_jaxpr, inner_consts, sub_env)
                for v, o in zip(eqn.outvars, outs):
                    env[v] = o
                continue
            if eqn.primitive.name not in _INLINED and any(
                    jnp.issubdtype(getattr(getattr(v, "aval", None), "dtype", jnp.float32), jnp.complexfloating)
                    for v in eqn.outvars):
                # A complex value may pass through a non-holomorphic operation (abs, angle,
                # real, conj), whose second-order rule is not a complex derivative.
                raise Unrecorded(f"{eqn.primitive.name} computes a complex value")
            keys = [None if isinstance(i, tuple) and i[0] == "value" else i for i in ins]
            values = [i[1] if isinstance(i, tuple) and i[0] == "value" else None for i in ins]
            out_keys = [(scope, v) for v in eqn.outvars]
            for v, k in zip(eqn.outvars, out_keys):
                env[v] = k
            info = Primitive(eqn.primitive.name, inner is not None and _is_pointwise_body(inner),
                             tuple(getattr(eqn.outvars[0].aval, "shape", ())), dict(eqn.params))
            entries.append(Entry(eqn.primitive.name, _binder(eqn), keys, values, out_keys, None, info))
        return [atom(v) for v in jaxpr.outvars]

    inputs = [("input", k) for k in range(len(primals))]
    outs = walk(closed.jaxpr, list(closed.consts), dict(zip(closed.jaxpr.invars, inputs)))
    outputs = []
    for o in outs:
        if isinstance(o, tuple) and o[0] == "value":
            key = ("constant", len(entries))
            entries.append(Entry("constant", lambda _v=o[1]: [_v], [], [], [key], None, Primitive("constant", False, (), {})))
            o = key
        outputs.append(o)
    types = [(tuple(v.shape), str(v.dtype)) for v in closed.out_avals]
    return Recording(inputs, entries, outputs, found["treedef"], types=types)


def being_compiled() -> bool:
    """jax programs are compiled by ``jax.jit``: the rules are traced, never run per operation."""
    return True


def derivatives(entry: Entry) -> None:
    """jax differentiates its primitives twice under jit at no run-time cost: no closed forms."""
    return None


def is_float(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating))


def kind(entry: Entry, live: tuple[int, ...]) -> Any:
    """How NOTE [collapsed taylor] treats the primitive, given the input positions that
    vary (see the torch backend's ``kind``)."""
    name, pointwise_body, shape, _ = entry.info
    if name in _CONSTANT:
        return "constant"
    if name == "dot_general" and live == (1,):
        rows_first = _rows_first_product(entry)
        if rows_first is not None:
            return rows_first
    if name in _LINEAR or (name in _LINEAR_FIRST and live == (0,)):
        return "linear"
    if name in _JOINS:
        return "linear" if len(live) == len(entry.keys) else "general"
    if name == "select_n" and 0 not in live and len(live) == len(entry.keys) - 1:
        return "linear"
    if name in _BILINEAR:
        return "linear" if len(live) == 1 else "bilinear"
    if name == "div" and live == (0,):
        return "linear"
    if name in ("add", "sub", "add_any") and len(live) <= 2:
        signs = [(-1 if (name == "sub" and i == 1) else 1) for i in live]

        def added(*ts: Any) -> tuple[Any, ...]:
            total: Any = None
            for s, t in zip(signs, ts):
                missing = len(shape) - (t.ndim - 1)
                if missing > 0:  # a rank-0 operand broadcast against the other
                    t = t.reshape((t.shape[0],) + (1,) * missing + t.shape[1:])
                term = t if s == 1 else -t
                total = term if total is None else total + term
            return (jnp.broadcast_to(total, (total.shape[0], *shape)),)

        return added
    if len(live) == 1 and (name in _POINTWISE or pointwise_body):
        return "pointwise"
    return "general"


def _rows_first_product(entry: Entry) -> Callable[..., tuple[Any, ...]] | None:
    """``W @ t`` for a varying vector ``t`` (``W`` fixed), over the rows of ``t``'s
    coefficients, as ``T @ W^T``: NOTE [rows-first products].  None where it does not apply
    (batch dimensions, or ``t`` with free dimensions of its own: the product's output would
    need a transpose either way)."""
    params = entry.info.params
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = params["dimension_numbers"]
    w = entry.values[0]
    if lhs_batch or rhs_batch or w is None or len(entry.info.shape) != w.ndim - len(lhs_contract):
        return None
    dims = ((tuple(c + 1 for c in rhs_contract), tuple(lhs_contract)), ((), ()))
    precision, element = params.get("precision"), params.get("preferred_element_type")

    def product(t: Any) -> tuple[Any, ...]:
        return (jax.lax.dot_general(t, w, dims, precision=precision, preferred_element_type=element),)

    return product
