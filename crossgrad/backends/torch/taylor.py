"""The aten operations of one call, recorded for the forward Taylor propagation.

NOTE [collapsed taylor] in :mod:`crossgrad.transforms.taylor`.  The call runs once, for
real, under a dispatch mode that records every aten operation with its tensors (no
graph, no fake tensors: the values computed are the outputs returned, and autograd
records through them as usual).  Tensors are keyed by identity; the recording holds
them, so an identity is never reused while it lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as tree_util
from torch.utils._python_dispatch import TorchDispatchMode

from crossgrad import pytree
from crossgrad.backends.recording import Entry, Recording, Unrecorded

aten = torch.ops.aten

# Linear in the tensors that vary, whatever the constants (views, reductions, scalings).
_LINEAR = {
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.expand.default, aten.t.default,
    aten.transpose.int, aten.permute.default, aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default,
    aten.unsqueeze.default, aten.sum.dim_IntList, aten.sum.default, aten.mean.dim, aten.mean.default,
    aten.neg.default, aten.clone.default, aten.alias.default, aten.select.int, aten.slice.Tensor,
    aten.mul.Scalar, aten.div.Scalar, aten.diagonal.default, aten.index_select.default, aten.unbind.int,
    aten.split.Tensor, aten.split_with_sizes.default, aten.flip.default, aten.repeat.default,
    aten.squeeze_copy.dim, aten.view_copy.default, aten.expand_copy.default, aten.permute_copy.default,
    aten.diag_embed.default, aten.narrow.default, aten.movedim.int, aten.index.Tensor,
}
# Linear in each factor: linear when one varies, a product of two varying factors otherwise.
_BILINEAR = {aten.mul.Tensor, aten.mm.default, aten.bmm.default, aten.mv.default, aten.dot.default}
# Whose output carries no derivative.
_CONSTANT = {aten.detach.default, aten.zeros_like.default, aten.ones_like.default, aten.empty_like.default,
             aten.full_like.default, aten.rand_like.default, aten.randn_like.default, aten.lift_fresh.default}
# Written in place, but only their view of the tensor changes (torch.func's vmap uses them on the
# tensors it unwraps): recorded as the functional operation, the same tensor as its output.
_INPLACE_VIEWS = {
    aten.squeeze_.dims: aten.squeeze.dims, aten.squeeze_.dim: aten.squeeze.dim,
    aten.squeeze_.default: aten.squeeze.default, aten.unsqueeze_.default: aten.unsqueeze.default,
    aten.transpose_.default: aten.transpose.int, aten.t_.default: aten.t.default,
}
# Joined with the inputs (all of them must vary for the join to be linear).
_JOINS = {aten.cat.default, aten.stack.default}


# Operations whose second directional derivative torch's forward-over-forward formulas get
# wrong (det at a singular matrix: 8.62 where the answer is 0; solve: 0.235 for 0.470), or
# that no rule here propagates exactly (scatter_reduce's product): a call that reaches one
# takes the exact nested route (NOTE [collapsed taylor]).
_INEXACT = {"det", "slogdet", "logdet", "solve", "inv", "lu", "cholesky", "eigh", "eig", "svd", "qr", "lstsq",
            "scatter_reduce", "matrix_exp", "pinv", "triangular_solve"}


def _inexact(func: Any) -> bool:
    name = func._schema.name.split("::")[-1].strip("_")
    return name in _INEXACT or bool(set(name.split("_")) & _INEXACT)


def _known(func: Any) -> bool:
    return (func in _LINEAR or func in _BILINEAR or func in _CONSTANT or func in _JOINS
            or func in (aten.add.Tensor, aten.sub.Tensor, aten.addmm.default, aten.div.Tensor)
            or torch.Tag.pointwise in func.tags)


def _decomposition(func: Any) -> Callable[..., Any] | None:
    """torch's own decomposition of an operation the rules do not know, if it has one."""
    if _known(func):
        return None
    from torch._decomp import decomposition_table

    return decomposition_table.get(func)


class _Recorder(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's class is unannotated
    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: list[Entry] = []
        self.held: list[Any] = []
        self.used: set[int] = set()  # tensors some recorded operation read
        self.decomposing = False  # one level: decompositions of decompositions reach prims, which torch.func lacks

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[Any, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        functional = _INPLACE_VIEWS.get(func)
        if functional is not None and id(args[0]) in self.used:
            # Read before its view changed: the earlier reads would see the new shape.
            raise Unrecorded(f"{func} changes the view of a tensor already read")
        if func._schema.is_mutable and functional is None:
            raise Unrecorded(f"{func} writes into a tensor in place")
        if _inexact(func):
            raise Unrecorded(f"{func}'s second derivatives are not propagated exactly forward")
        decomposition = None if self.decomposing else _decomposition(func)
        if decomposition is not None:
            # Recorded as the operations it is made of: their rules are cheaper, and
            # torch's forward-over-forward formulas of some composite operations are
            # wrong (native_layer_norm's second directional derivative).  A
            # decomposition that reaches torch's prims (which torch.func does not
            # differentiate: zeros) is undone, and the operation recorded whole.
            start = len(self.entries)
            self.decomposing = True
            try:
                with self:
                    out = decomposition(*args, **kwargs)
            finally:
                self.decomposing = False
            if not any(e.info[0].namespace == "prims" for e in self.entries[start:]):
                return out
            del self.entries[start:]
        recorded = functional or func
        if not kwargs and not any(isinstance(a, (list, tuple)) for a in args):
            leaves: list[Any] = list(args)  # the common case, without pytree machinery

            def call(*values: Any) -> list[Any]:
                out = recorded(*values)
                return list(out) if isinstance(out, (tuple, list)) else [out]
        else:
            leaves, spec = tree_util.tree_flatten((args, kwargs))

            def call(*values: Any) -> list[Any]:
                a, kw = tree_util.tree_unflatten(list(values), spec)
                return tree_util.tree_flatten(recorded(*a, **kw))[0]

        keys = [id(x) if isinstance(x, torch.Tensor) else None for x in leaves]
        out = func(*args, **kwargs)
        results = list(out) if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(r, torch.Tensor) and r.is_complex() for r in results):
            # A complex value may pass through a non-holomorphic operation (abs, angle,
            # real, conj), whose second-order rule is not a complex derivative.
            raise Unrecorded(f"{func} computes a complex value")
        self.used.update(k for k in keys if k is not None)

        shapes = [tuple(r.shape) if isinstance(r, torch.Tensor) else None for r in results]
        self.entries.append(Entry(str(recorded), call, keys, leaves, [id(r) for r in results], results,
                                  (recorded, args, kwargs, shapes)))
        self.held.append(out)
        return out


def record(f: Callable[..., Any], primals: tuple[Any, ...]) -> Recording:
    """``f(*primals)`` run once with its aten operations recorded.  Raises
    :class:`Unrecorded` under an outer torch.func transform or for in-place writes."""
    if torch._C._functorch.maybe_current_level() is not None:
        raise Unrecorded("called under a torch.func transform")
    inputs = tuple(x.view_as(x) for x in primals)  # fresh identities: an input passed twice stays two inputs
    recorder = _Recorder()
    with recorder:
        out = f(*inputs)
    leaves, treedef = pytree.flatten(out)
    return Recording([id(x) for x in inputs], recorder.entries, [id(x) for x in leaves], treedef,
                     values=leaves)


def being_compiled() -> bool:
    """Whether this call is recorded into a graph to compile (``cg.jit``'s traced routes,
    ``torch.compile``): the rules' per-operation overhead is then paid once."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None or torch.compiler.is_compiling()


def is_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


def _lift(t: Any, rank: int) -> Any:
    """Coefficients ``(rows, *shape)`` with axes of size 1 inserted after the rows, so that
    they broadcast against an output of ``rank`` axes as the value broadcasts."""
    missing = rank - (t.dim() - 1)
    return t.reshape((t.shape[0],) + (1,) * missing + tuple(t.shape[1:])) if missing > 0 else t


def _axis(d: int) -> int:
    """An axis of the value as an axis of its coefficients (one leading axis of rows)."""
    return d + 1 if d >= 0 else d


def _direct(func: Any, args: tuple[Any, ...], kwargs: dict[Any, Any], live: tuple[int, ...], shapes: list[Any]) -> Callable[..., Any] | None:
    """The linear map of the commonest linear operations on the coefficients, written with
    the rows as a leading axis (no torch.func.vmap: its per-call cost dominates small
    programs); None for the others."""
    if kwargs or live != (0,):
        return None
    rest = args[1:]
    x = args[0]
    if func in (aten.view.default, aten._unsafe_view.default, aten.reshape.default):
        return lambda t: (t.reshape((t.shape[0], *rest[0])),)
    if func == aten.expand.default:
        return lambda t: (_lift(t, len(rest[0])).expand((t.shape[0], *rest[0])),)
    if func == aten.t.default:
        return lambda t: (t.transpose(-1, -2) if x.dim() == 2 else t,)
    if func == aten.transpose.int:
        return lambda t: (t.transpose(_axis(rest[0]), _axis(rest[1])),)
    if func == aten.permute.default:
        return lambda t: (t.permute(0, *(_axis(d % x.dim()) for d in rest[0])),)
    if func == aten.unsqueeze.default:
        return lambda t: (t.unsqueeze(_axis(rest[0])),)
    if func in (aten.squeeze.dim, aten.squeeze.dims):
        return lambda t: (t.reshape((t.shape[0], *shapes[0])),)  # the recorded output shape
    if func == aten.sum.dim_IntList and 1 <= len(rest) <= 2 and rest[0]:
        keep = bool(rest[1]) if len(rest) > 1 else False
        return lambda t: (t.sum([_axis(d) for d in rest[0]], keepdim=keep),)
    if func == aten.sum.default and len(rest) == 0:
        return lambda t: (t.reshape(t.shape[0], -1).sum(1),)
    if func in (aten.neg.default,):
        return lambda t: (-t,)
    if func in (aten.clone.default, aten.alias.default):
        return lambda t: (t,)
    if func in (aten.mul.Scalar, aten.div.Scalar):
        scale = rest[0] if func == aten.mul.Scalar else 1.0 / rest[0]
        return lambda t: (t * scale,)
    if func == aten.select.int:
        return lambda t: (t.select(_axis(rest[0]), rest[1]),)
    return None


def _direct_product(func: Any, args: tuple[Any, ...], kwargs: dict[Any, Any], live: tuple[int, ...], shapes: list[Any]) -> Callable[..., Any] | None:
    """Products with one varying factor, on the coefficients directly."""
    if kwargs or len(live) != 1:
        return None
    i = live[0]
    if i not in (0, 1):
        return None
    other = args[1 - i]
    if func == aten.mm.default:
        return (lambda t: (torch.matmul(t, other),)) if i == 0 else (lambda t: (torch.matmul(other, t),))
    if func == aten.mul.Tensor and isinstance(other, torch.Tensor):
        rank = len(shapes[0])
        return lambda t: (_lift(t, rank) * other,)
    if func == aten.div.Tensor and i == 0 and isinstance(other, torch.Tensor):
        rank = len(shapes[0])
        return lambda t: (_lift(t, rank) / other,)
    return None


def derivatives(entry: Entry) -> tuple[Any, Any] | None:
    """``(g'(x), g''(x))`` of a common elementwise operation of one input in closed form,
    from its input and output; None for the others (the caller differentiates twice)."""
    func, args, kwargs, _ = entry.info
    if kwargs:
        return None
    assert entry.results is not None  # recorded by the run
    x, y = args[0], entry.results[0]
    if func == aten.tanh.default:
        d1 = 1 - y * y
        return d1, -2 * y * d1
    if func == aten.exp.default:
        return y, y
    if func == aten.sigmoid.default:
        d1 = y * (1 - y)
        return d1, d1 * (1 - 2 * y)
    if func == aten.sin.default:
        return torch.cos(x), -y
    if func == aten.cos.default:
        return -torch.sin(x), -y
    if func == aten.log.default:
        r = 1 / x
        return r, -r * r
    if func == aten.pow.Tensor_Scalar and len(args) == 2 and isinstance(args[1], (int, float)):
        e = args[1]
        # A zero coefficient is a zero derivative: 0 * x ** -1 at x = 0 would be NaN.
        d1 = e * x ** (e - 1) if e != 0 else torch.zeros_like(x)
        d2 = e * (e - 1) * x ** (e - 2) if e * (e - 1) != 0 else torch.zeros_like(x)
        return d1, d2
    return None


def kind(entry: Entry, live: tuple[int, ...]) -> Any:
    """How NOTE [collapsed taylor] treats the operation, given the input positions that vary:
    ``"linear"``, ``"pointwise"`` (one varying input), ``"bilinear"`` (two varying factors),
    ``"constant"``, ``"general"``, or a function mapping the varying coefficients to the
    output's (the tangent part of an affine operation)."""
    func, args, kwargs, shapes = entry.info
    if func in _CONSTANT:
        return "constant"
    if func in _LINEAR:
        return _direct(func, args, kwargs, live, shapes) or "linear"
    tensors = [i for i, v in enumerate(entry.values) if isinstance(v, torch.Tensor)]
    if func in _JOINS:
        return "linear" if len(live) == len(tensors) else "general"
    if func in _BILINEAR:
        return (_direct_product(func, args, kwargs, live, shapes) or "linear") if len(live) == 1 else "bilinear"
    if func == aten.div.Tensor and live == (0,):
        return _direct_product(func, args, kwargs, live, shapes) or "linear"
    if func in (aten.add.Tensor, aten.sub.Tensor) and len(live) <= 2:
        alpha = kwargs.get("alpha", 1)
        sign = (1, -alpha if func == aten.sub.Tensor else alpha)
        scales = [sign[i] for i in live]
        shape = shapes[0]

        def added(*ts: Any) -> tuple[Any, ...]:
            total: Any = None
            for s, t in zip(scales, ts):
                t = _lift(t, len(shape))
                term = t if s == 1 else t * s
                total = term if total is None else total + term
            return (total.expand((total.shape[0], *shape)),)

        return added
    if func == aten.addmm.default and not {1, 2} <= set(live):
        beta, alpha = kwargs.get("beta", 1), kwargs.get("alpha", 1)
        a, b = args[1:3]
        shape = shapes[0]

        def affine(*ts: Any) -> tuple[Any, ...]:
            parts = dict(zip(live, ts))
            total = None
            if 1 in parts:
                total = torch.matmul(parts[1], b)
            if 2 in parts:
                total = torch.matmul(a, parts[2])
            if alpha != 1 and total is not None:
                total = total * alpha
            if 0 in parts:
                t = _lift(parts[0] * beta if beta != 1 else parts[0], len(shape))
                t = t.expand((t.shape[0], *shape))
                total = t if total is None else total + t
            return (total,)

        return affine
    if len(live) == 1 and torch.Tag.pointwise in func.tags:
        return "pointwise"
    return "general"
