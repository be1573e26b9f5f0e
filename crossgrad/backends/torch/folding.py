"""Batched matrix products with a factor that is the same for every batch element, folded
into one ``mm`` on a traced torch graph.

NOTE [batch-constant products]: torch.func's batching rule for a matrix product with
one unbatched factor (``W @ x`` with ``x`` batched, a weight against a batch of
samples or of tangents) expands the unbatched factor along the batch and calls
``bmm``; under nested maps the expanded ``[T, k, n]`` factor is expanded again and
reshaped to ``[B * T, k, n]``.  Eager torch then runs one matrix-vector product per
batch element against the same matrix, at memory speed, and inductor materialises the
expanded copy (``B * k * n`` elements) before it multiplies.  Written ``x @ W.T``
the same mathematics batches into one ``mm``: how a function is written decided its
speed.  XLA canonicalises dots by folding batch axes a factor does not have into the
free axis; this pass does the same on the graph ``make_fx`` records (the ``jit``
routes, NOTE [jit routes]).  It knows nothing of the user's function: it follows,
structurally, which tensors are constant along their leading axes (``expand`` over new
or size-1 leading axes; then reshapes that regroup only those axes, permutations that
keep them in front, ``unsqueeze``, copies and dtype casts) and rewrites ``bmm`` with
such a factor as ``mm`` of that factor's first batch element with the other factor's
batch folded into its free axis (``[B, n, p] -> [n, B * p]``, or ``[B, k, n] -> [B *
k, n]``).  The result has ``bmm``'s shape, dtype and contiguous layout and is a fresh
tensor.  Tensors written in place anywhere in the graph are never taken as constant
(NOTE [graph aliasing]).  The graph pass's self-check (``tracing.simplified``) then
compares the rewritten graph's outputs with the traced ones; a fold changes only the
order of the sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.fx

aten = torch.ops.aten

_SAME_SHAPE = {aten.clone.default, aten._to_copy.default, aten.alias.default, aten.detach.default,
               aten.lift_fresh_copy.default}
_REGROUPS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default}


def _shape(node: Any) -> tuple[int, ...] | None:
    v = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _expanded(src: tuple[int, ...], out: tuple[int, ...], lead: int) -> int:
    """Leading axes of ``expand(x, out)`` along which it is constant, ``x`` of shape ``src``
    constant along its ``lead`` leading axes."""
    offset = len(out) - len(src)
    k = 0
    while k < len(out) and (k < offset or src[k - offset] == 1 or k - offset < lead):
        k += 1
    return k


def _regrouped(src: tuple[int, ...], out: tuple[int, ...], lead: int) -> int:
    """Leading axes of a reshape to ``out`` along which it is constant: those whose product
    divides the product of the source's ``lead`` constant axes (in row-major order each
    index of them then steps over whole copies of the repeated block)."""
    block, k, size = math.prod(src[:lead]), 0, 1
    while k < len(out) and size * out[k] <= block and block % (size * out[k]) == 0:
        size *= out[k]
        k += 1
    return k


def _permuted(perm: list[int], lead: int) -> int:
    k = 0
    while k < len(perm) and perm[k] < lead:
        k += 1
    return k


def constant_axes(node: torch.fx.Node, const: dict[torch.fx.Node, int]) -> int:
    """How many leading axes ``node``'s value is constant along, from its source's count
    (0: none known).  Only shape operations and copies are followed."""
    t = node.target
    args: Any = node.args  # fx arguments: a node, then ints here
    out = _shape(node)
    src_node = args[0] if args else None
    src = _shape(src_node)
    if out is None or src is None or not isinstance(src_node, torch.fx.Node):
        return 0
    lead = const.get(src_node, 0)
    if t == aten.expand.default:
        return _expanded(src, out, lead)
    if lead == 0:
        return 0
    if t in _SAME_SHAPE:
        return lead if out == src else 0
    if t in _REGROUPS:
        return _regrouped(src, out, lead)
    if t == aten.permute.default:
        return _permuted([int(d) % len(src) for d in args[1]], lead)
    if t in (aten.transpose.int, aten.t.default):
        perm = list(range(len(src)))
        d0, d1 = (int(args[1]) % len(src), int(args[2]) % len(src)) if t == aten.transpose.int else (0, 1)
        if len(src) >= 2:
            perm[d0], perm[d1] = perm[d1], perm[d0]
        return _permuted(perm, lead)
    if t == aten.unsqueeze.default:
        return lead + 1 if int(args[1]) % len(out) <= lead else lead
    return 0


def fold(graph: torch.fx.Graph, written: Callable[[Any], bool]) -> int:
    """Rewrite every ``bmm`` with a batch-constant factor in ``graph`` as one ``mm``
    (NOTE [batch-constant products]); ``written(node)`` says whether anything writes into
    a node's memory.  The number of products rewritten."""
    const: dict[torch.fx.Node, int] = {}
    folded = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target == aten.bmm.default:
            a, b = node.args[0], node.args[1]
            ca, cb = (isinstance(x, torch.fx.Node) and const.get(x, 0) >= 1 for x in (a, b))
            if ca or cb:
                with graph.inserting_before(node):
                    replacement = _folded(graph, node, a, b, ca, cb)
                replacement.meta["val"] = node.meta.get("val")
                node.replace_all_uses_with(replacement)
                graph.erase_node(node)
                folded += 1
            continue
        lead = constant_axes(node, const)
        if lead and not written(node):
            const[node] = lead
    return folded


def _folded(graph: torch.fx.Graph, node: torch.fx.Node, a: Any, b: Any, ca: bool, cb: bool) -> torch.fx.Node:
    """``bmm(a, b)`` as one ``mm``, ``a`` (``ca``) or ``b`` (``cb``) the same in every batch
    element; the result contiguous, as ``bmm``'s is."""
    call = graph.call_function
    batch, k, p = _shape(node)  # type: ignore[misc]
    n = (_shape(a) or (0, 0, 0))[2]
    if ca and cb:  # the same product for every element
        one = call(aten.mm.default, (call(aten.select.int, (a, 0, 0)), call(aten.select.int, (b, 0, 0))))
        return call(aten.clone.default, (call(aten.expand.default, (call(aten.unsqueeze.default, (one, 0)),
                                                                     [batch, k, p])),),
                    {"memory_format": torch.contiguous_format})
    if cb:  # a[i] @ M: the rows of every a[i] against M at once
        rows = call(aten.reshape.default, (a, [batch * k, n]))
        return call(aten.reshape.default, (call(aten.mm.default, (rows, call(aten.select.int, (b, 0, 0)))),
                                           [batch, k, p]))
    m = call(aten.select.int, (a, 0, 0))  # M @ b[i]
    if p == 1:  # M @ b[i] for vectors b[i]: [B, n] @ M.T
        vectors = call(aten.reshape.default, (b, [batch, n]))
        return call(aten.reshape.default, (call(aten.mm.default, (vectors, call(aten.t.default, (m,)))),
                                           [batch, k, 1]))
    columns = call(aten.reshape.default, (call(aten.permute.default, (b, [1, 0, 2])), [n, batch * p]))
    product = call(aten.reshape.default, (call(aten.mm.default, (m, columns)), [k, batch, p]))
    return call(aten.clone.default, (call(aten.permute.default, (product, [1, 0, 2])),),
                {"memory_format": torch.contiguous_format})
