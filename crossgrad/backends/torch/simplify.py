"""Algebraic simplification of a traced torch graph: products with identity, diagonal and
zero matrices, which torch.func's basis vectors create and eager torch computes in full.

NOTE [identity products]: a Jacobian pushes an identity basis through the function.
torch.func builds it per sample (``new_zeros`` and ``diagonal().fill_(1)``, or
``eye``), and its batching rules multiply by it: ``bmm(W, I)`` costs ``2 k n**2`` flops
per sample for a result that is ``W``; the reverse-mode basis through ``tanh`` becomes
``I * (1 - y**2)``, a diagonal matrix, and ``bmm(A, diag(d))`` is a broadcast product
``A * d``; zero tangents materialised as ``expand(zeros)`` are multiplied too.  XLA's
algebraic simplifier removes all three; this pass does the same on the graph
``make_fx`` records (the ``jit`` routes, NOTE [jit routes]).  It knows nothing of the
user's function: it follows which tensors are structurally zero, a delta (``x[i] =
[i_p == i_q]`` over two axes, constant along the others: the identity basis, also
broadcast over a batch and copied into a fresh buffer, as torch.func's forward mode
does) or diagonal, through shape operations, and rewrites ``mm`` and ``bmm`` that take
one (``mv``: zeros and identities): a product with an identity is the other factor, a ``bmm`` with a delta between its
batch and contracted axes is a gather of the other factor's diagonal, a product with a
diagonal a broadcast product, with zeros zeros.  A product becomes a fresh tensor,
never a view of an input, so results alias nothing.  Zeros also flow through sums: the
sum of two zeros is zero, and a sum with zero is the other term where that term is
already a fresh tensor of the sum's shape and dtype (forward over forward adds a zero
second-order tangent to the product rule's term, each a full pass over the Hessian).
The input watch's copies of the caller's tensors (``clone`` of an input) go where nothing
in the graph writes into them and no output is a view of them.

Last, batched products with a factor that is the same for every batch element become
one ``mm`` (NOTE [batch-constant products], :mod:`crossgrad.backends.torch.folding`).

The pass checks itself: the simplified graph must reproduce the traced graph's outputs
on the example inputs (same draws of the random generators) or it is discarded.

Why one module of ~520 lines: each rewrite reads the others' results on one traced
graph, and the self-check that discards a wrong simplification covers them all together.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.fx

from crossgrad.backends.torch import folding

aten = torch.ops.aten

# Shape operations that move elements without changing them.
_SHAPE_OPS = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.alias.default,
              aten.clone.default, aten._to_copy.default, aten.expand.default, aten.permute.default,
              aten.transpose.int, aten.t.default, aten.detach.default, aten.lift_fresh_copy.default}
_ZERO_SOURCES = {aten.zeros.default, aten.new_zeros.default, aten.zeros_like.default,
                 aten._efficientzerotensor.default}
# Elementwise operations linear in their first argument: f(I, y) is diagonal where y is
# constant along one of the last two axes, with values f(1, y); f(0, y) is 0.
_LINEAR_FIRST = {aten.mul.Tensor, aten.tanh_backward.default, aten.sigmoid_backward.default}


def _val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _shape(node: Any) -> tuple[int, ...] | None:
    v = _val(node)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _is_view(node: Any) -> bool:
    """Whether ``node``'s result may share memory with its first argument."""
    schema = getattr(node.target, "_schema", None) if isinstance(node, torch.fx.Node) else None
    return schema is not None and any(r.alias_info is not None for r in schema.returns)


def _nodes_in(arg: Any) -> list[torch.fx.Node]:
    """The graph nodes an argument names (a node, or nodes inside lists and tuples)."""
    found: list[torch.fx.Node] = []
    torch.fx.node.map_arg(arg, found.append)
    return found


class Aliases:
    """Which tensors of a graph may share memory, and which are written in place.

    NOTE [graph aliasing]: the rewrites treat a zero or identity buffer as a constant, and
    drop the input watch's copies, only where nothing writes into that memory.  Memory is
    followed through every operation whose schema declares an alias of an argument
    (views, ``unbind`` and ``split``'s lists of views, in-place operations), through
    ``operator.getitem`` of such lists and ``_unsafe_view`` (an alias its schema does not
    declare); a write is any argument the schema marks written (the first argument of
    ``add_``, each tensor of ``_foreach_add_``'s list, ``out=``).  An operation without a
    schema may alias and write each tensor it takes.  Tensors that may share memory form
    one class; a write into any member writes the class.
    """

    def __init__(self, graph: torch.fx.Graph):
        self.parent: dict[torch.fx.Node, torch.fx.Node] = {}
        self.writers: dict[torch.fx.Node, list[torch.fx.Node]] = {}
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            schema = getattr(node.target, "_schema", None)
            if schema is None:
                tensors = _nodes_in((node.args, node.kwargs))
                if node.target is not operator.getitem:
                    self._write(node, tensors)
                for t in tensors[:1] if node.target is operator.getitem else tensors:
                    self._union(node, t)
                continue
            bound = _bind(schema, node)
            for arg, value in bound:
                info = arg.alias_info
                if info is None:
                    continue
                members = _nodes_in(value)
                if info.is_write:
                    self._write(node, members)
                if any(r.alias_info is not None for r in schema.returns):  # a list's sets sit on its elements
                    for m in members:
                        self._union(node, m)
            if node.target == aten._unsafe_view.default and node.args:
                self._union(node, node.args[0])

    def _find(self, node: torch.fx.Node) -> torch.fx.Node:
        root = node
        while self.parent.get(root, root) is not root:
            root = self.parent[root]
        return root

    def _union(self, a: torch.fx.Node, b: torch.fx.Node) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra is not rb:
            self.parent[ra] = rb
            self.writers.setdefault(rb, []).extend(self.writers.pop(ra, []))

    def _write(self, writer: torch.fx.Node, targets: list[torch.fx.Node]) -> None:
        for t in targets:
            self.writers.setdefault(self._find(t), []).append(writer)

    def same(self, a: Any, b: Any) -> bool:
        """Whether ``a`` and ``b`` may share memory."""
        return isinstance(a, torch.fx.Node) and isinstance(b, torch.fx.Node) and self._find(a) is self._find(b)

    def written(self, node: Any, allowed: frozenset[Any] = frozenset()) -> list[torch.fx.Node]:
        """The operations that write into ``node``'s memory, less those ``allowed``."""
        if not isinstance(node, torch.fx.Node):
            return []
        return [w for w in self.writers.get(self._find(node), []) if w not in allowed]


def _bind(schema: Any, node: torch.fx.Node) -> list[tuple[Any, Any]]:
    """The schema's arguments paired with the node's values (positional, then keyword)."""
    pairs = []
    for k, arg in enumerate(schema.arguments):
        if k < len(node.args):
            pairs.append((arg, node.args[k]))
        elif arg.name in node.kwargs:
            pairs.append((arg, node.kwargs[arg.name]))
    return pairs


def _is_identity_fill(source: torch.fx.Node, writers: list[torch.fx.Node]) -> bool:
    """``source.diagonal(0, -2, -1).fill_(1)`` and nothing else writes into ``source``."""
    shape = _shape(source)
    if shape is None or len(shape) < 2 or shape[-1] != shape[-2] or len(writers) != 1:
        return False
    fill = writers[0]
    if fill.target != aten.fill_.Scalar or fill.args[1] != 1:
        return False
    diag = fill.args[0]
    if not (isinstance(diag, torch.fx.Node) and diag.target == aten.diagonal.default and diag.args[0] is source):
        return False
    args: Any = diag.args  # fx arguments: ints here
    offset, d1, d2 = (list(args[1:]) + [0, 0, 1][len(args) - 1:])[:3]
    rank = len(shape)
    return bool(offset == 0 and {d1 % rank, d2 % rank} == {rank - 2, rank - 1})


def simplify(gm: torch.fx.GraphModule) -> int:
    """Rewrite products with zero, identity and diagonal matrices in ``gm`` in place;
    the number of products rewritten."""
    graph = gm.graph
    walk = _Walk(graph)
    for node in list(graph.nodes):
        if node.op == "call_function" and _shape(node) is not None:  # not a tensor: nothing to rewrite
            walk.visit(node)
    aliases, rewritten, guarded = walk.aliases, walk.rewritten, walk.guarded
    rewritten += folding.fold(graph, lambda n: bool(aliases.written(n)))  # NOTE [batch-constant products]
    parents = {n: list(n.all_input_nodes) for n in graph.nodes}  # before dead code goes
    rewritten += _drop_unwritten_input_copies(graph, aliases)
    if rewritten:
        graph.eliminate_dead_code()
        _drop_unused_identities(graph)
        if guarded:
            _flag_non_finite(gm, graph, _live_sources([x for x in guarded if isinstance(x, torch.fx.Node)], parents,
                                                      set(graph.nodes)))
        graph.lint()
        gm.recompile()
    return rewritten


class _Walk:
    """One pass over a graph in order: what each node is known to hold (``kind``: ``("zero",)``,
    ``("delta", axis, axis)``, ``("diag", op, values, shape, rest)``), the sums and products
    rewritten on the way, and the factors a rewrite no longer reads (NOTE [non-finite guard])."""

    def __init__(self, graph: torch.fx.Graph):
        self.graph = graph
        self.aliases = Aliases(graph)
        self.fills: set[torch.fx.Node] = set()  # the writes that make a known buffer (an identity's fill, a copy)
        self.kind: dict[Any, tuple[Any, ...]] = {}  # fx nodes
        self.guarded: list[Any] = []
        self.rewritten = 0

    def written(self, node: Any, also: Any = None) -> bool:
        """Whether anything but the writes that made a known buffer (and ``also``) writes into
        ``node``'s memory."""
        return bool(self.aliases.written(node, frozenset(self.fills | {also})))

    def visit(self, node: torch.fx.Node) -> None:
        t, kind, args = node.target, self.kind, node.args
        if t in _ZERO_SOURCES:
            self.source(node)
        elif t == aten.eye.default and not self.written(node):
            kind[node] = ("delta", 0, 1)
        elif t == aten.copy_.default and not self.written(node, node) and args[1] in kind \
                and _fresh(args[0]) and _shape(args[0]) == _shape(args[1]):
            # A fresh buffer filled with a copy holds what was copied (the fill is its making).
            kind[node] = kind[args[1]]
            self.fills.add(node)
        elif t in _SHAPE_OPS and node.args and node.args[0] in kind and not self.written(node):
            self.shape_op(node)
        elif t in _LINEAR_FIRST and len(node.args) >= 2 and not self.written(node):
            self.linear(node)
        elif t in (aten.add.Tensor, aten.sub.Tensor) and len(node.args) >= 2 and not self.written(node):
            self.sum(node)
        elif t in (aten.mm.default, aten.bmm.default, aten.mv.default):
            self.product(node)

    def source(self, node: torch.fx.Node) -> None:
        """A new buffer: zeros, or an identity where only its diagonal's fill with 1 writes it."""
        writers = self.aliases.written(node)
        rank = len(_shape(node) or ())
        if not writers:
            self.kind[node] = ("zero",)
        elif _is_identity_fill(node, writers):
            self.fills.add(writers[0])
            self.kind[node] = ("delta", rank - 2, rank - 1)

    def shape_op(self, node: torch.fx.Node) -> None:
        src = node.args[0]
        k = self.kind[src]
        shape = _shape(node)
        if k[0] == "zero":
            self.kind[node] = k
        elif k[0] == "delta":
            moved = _delta_axes(node, _shape(src) or (), k[1], k[2])
            if moved is not None:
                self.kind[node] = ("delta", *moved)
        elif k[0] == "diag" and shape is not None and shape == _shape(src):
            # A diagonal is symmetric: in place or with its two axes exchanged, it stays.
            r = len(shape)
            if _delta_axes(node, shape, r - 2, r - 1) in ((r - 2, r - 1), (r - 1, r - 2)):
                self.kind[node] = k

    def linear(self, node: torch.fx.Node) -> None:
        """An operation linear in its first argument: zero of zero; of an identity and a
        vector-shaped other factor, a diagonal."""
        kind, shape = self.kind, _shape(node) or ()
        first, other = node.args[0], node.args[1]
        if node.target == aten.mul.Tensor and first not in kind and other in kind:
            first, other = other, first
        if first in kind and kind[first][0] == "zero":
            kind[node] = ("zero",)
        elif first in kind and _is_eye(kind[first], shape) and isinstance(other, torch.fx.Node):
            other_shape = _shape(other)
            if other_shape is not None:
                padded = (1,) * (len(shape) - len(other_shape)) + tuple(other_shape)
                if len(padded) == len(shape) and (padded[-2] == 1 or padded[-1] == 1):
                    kind[node] = ("diag", node.target, other, padded, node.args[2:])

    def sum(self, node: torch.fx.Node) -> None:
        """A sum with zero: zero of two zeros, else the other term where it stands for the sum."""
        a, b = node.args[0], node.args[1]
        zero_a, zero_b = (x in self.kind and self.kind[x][0] == "zero" for x in (a, b))
        if zero_a and zero_b:
            self.kind[node] = ("zero",)
            return
        alpha = node.kwargs.get("alpha", 1)
        kept = b if zero_a and node.target == aten.add.Tensor and alpha == 1 else a if zero_b else None
        if kept is not None and _stands_for(kept, node, self.aliases):
            node.replace_all_uses_with(kept)  # type: ignore[arg-type]
            self.graph.erase_node(node)
            self.rewritten += 1

    def product(self, node: torch.fx.Node) -> None:
        """A matrix product with a known factor, rewritten (:func:`_product`)."""
        a, b = node.args[0], node.args[1]  # fx arguments
        replacement = _product(self.graph, node, a, b, self.kind)
        if replacement is None:
            return
        for x in (a, b):  # what the product no longer reads (NOTE [non-finite guard])
            k = self.kind.get(x, (None,))
            if k[0] is None:
                self.guarded.append(x)
            elif k[0] == "diag":
                self.guarded.append(k[2])
        if replacement.target == aten.zeros.default:  # a zero product stays known for what reads it
            self.kind[replacement] = ("zero",)
        node.replace_all_uses_with(replacement)
        self.graph.erase_node(node)
        self.rewritten += 1


# NOTE [non-finite guard]: eager torch multiplies every element of a product's factors,
# so a NaN or an infinity in the factor a rewrite no longer reads (the other factor of a
# product with zeros or an identity, a diagonal's values) spreads along the contracted axis
# (``0 * inf`` is NaN).  The rewritten graph does not see them: it writes one flag, whether
# any such factor held a non-finite value, and a call whose flag is set is computed again
# by the graph as traced (:class:`crossgrad.backends.torch.tracing.Trace`), so NaN and
# infinities come out where eager execution puts them.  A factor the rewritten graph no
# longer computes at all is guarded through the nearest values it came from that the graph
# still computes (its inputs' non-finite values are seen; one its own eliminated operations
# would create from finite values, such as log(0), is not: computing the factor for the
# guard alone would undo the rewrite).
NON_FINITE_FLAG = "_crossgrad_non_finite"


def _live_sources(factors: list[torch.fx.Node], parents: dict[Any, list[Any]], live: set[Any]) -> list[torch.fx.Node]:
    """The tensors to guard for ``factors``: each factor the graph still computes, and for one
    it no longer computes (only a rewritten product read it), the nearest values it came
    from that the graph still computes (computing it again for the guard alone would undo
    the rewrite)."""
    found: dict[torch.fx.Node, None] = {}
    seen: set[Any] = set()
    stack = list(factors)
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x in live:
            found[x] = None
        else:
            stack.extend(parents.get(x, []))
    return list(found)


def _flag_non_finite(gm: torch.fx.GraphModule, graph: torch.fx.Graph, factors: list[torch.fx.Node]) -> None:
    """Write into ``gm``'s flag whether any of ``factors`` holds a non-finite value."""
    example = next(iter(_val(x) for x in factors if isinstance(_val(x), torch.Tensor)), None)
    if example is None:
        return
    gm.register_buffer(NON_FINITE_FLAG, torch.zeros((), dtype=torch.bool, device=example.device))
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        # A sum is non-finite where any term is (and, rarely, where finite terms overflow:
        # then the call is only computed again): one read of each factor.
        sums = [graph.call_function(aten.sum.default, (x,)) for x in factors if isinstance(_val(x), torch.Tensor)]
        total = graph.call_function(aten.sum.default, (graph.call_function(aten.stack.default, (sums,)),))
        flag = graph.call_function(aten.bitwise_not.default, (graph.call_function(aten.isfinite.default, (total,)),))
        graph.call_function(aten.copy_.default, (graph.get_attr(NON_FINITE_FLAG), flag))


def _product(graph: torch.fx.Graph, node: torch.fx.Node, a: Any, b: Any, kind: dict[Any, Any]) -> torch.fx.Node | None:
    """The node replacing ``mm/bmm(a, b)``, or None where neither factor is known."""
    out = _val(node)
    ka, kb = kind.get(a, (None,)), kind.get(b, (None,))
    with graph.inserting_before(node):
        if "zero" in (ka[0], kb[0]):
            return graph.call_function(aten.zeros.default, (list(out.shape),),
                                       {"dtype": out.dtype, "device": out.device})
        for eye_side, side, other in ((kb, b, a), (ka, a, b)):
            if _is_eye(eye_side, _shape(side)) and _same(other, out):
                return graph.call_function(aten.clone.default, (other,))
        if node.target == aten.mv.default:  # a matrix times a vector: zeros and identities only
            return None
        if node.target == aten.bmm.default:
            gathered = _batched_delta_product(graph, a, b, ka, kb, out)
            if gathered is not None:
                return gathered
        for diag, other, row in ((kb, a, True), (ka, b, False)):
            if diag[0] == "diag" and _broadcasts_to(other, diag, row, out):
                return graph.call_function(aten.mul.Tensor, (other, _diagonal_values(graph, diag, row)))
    return None


def _broadcasts_to(x: Any, diag: tuple[Any, ...], row: bool, out: torch.Tensor) -> bool:
    """Whether ``x * d`` (``d`` the diagonal as a row or a column) has ``out``'s shape and dtype."""
    xv = _val(x)
    if not isinstance(xv, torch.Tensor) or xv.dtype != out.dtype:
        return False
    padded = diag[3]
    if (padded[-2] == 1) != row:
        padded = (*padded[:-2], padded[-1], padded[-2])
    try:
        return bool(torch.broadcast_shapes(tuple(xv.shape), padded) == tuple(out.shape))  # type: ignore[no-untyped-call]
    except RuntimeError:
        return False


def _stands_for(term: Any, total: torch.fx.Node, aliases: Aliases) -> bool:
    """Whether ``term`` can replace ``total`` (a sum of ``term`` and zeros): a fresh tensor
    computed in the graph (not a view, not written in place, not an output already) of the
    sum's shape and dtype."""
    out, val = _val(total), _val(term)
    return (_computed(term) and not aliases.written(term) and isinstance(val, torch.Tensor)
            and isinstance(out, torch.Tensor) and val.shape == out.shape and val.dtype == out.dtype
            and not any(user.op == "output" for user in term.users))


def _computed(node: Any) -> bool:
    """A tensor the graph computes into memory of its own: not an input, not a view of one
    (``_unsafe_view`` declares no alias but is one: its source must be computed too)."""
    if not (isinstance(node, torch.fx.Node) and node.op == "call_function") or _is_view(node):
        return False
    return node.target != aten._unsafe_view.default or _computed(node.args[0])


def _is_eye(k: tuple[Any, ...], shape: tuple[int, ...] | None) -> bool:
    """An identity in the last two axes (constant along the leading ones)."""
    return k[0] == "delta" and shape is not None and len(shape) >= 2 and (k[1], k[2]) == (len(shape) - 2, len(shape) - 1)


def _fresh(node: Any) -> bool:
    """A buffer made to be filled (its own values are never read before the fill)."""
    return isinstance(node, torch.fx.Node) and node.target in (
        aten.new_zeros.default, aten.zeros.default, aten.empty.memory_format, aten.new_empty.default,
        aten._new_zeros_with_same_feature_meta.default, aten.zeros_like.default, aten.empty_like.default)


def _delta_axes(node: torch.fx.Node, src_shape: tuple[int, ...], p: int, q: int) -> tuple[int, int] | None:
    """Where a shape operation takes the two axes of a delta (``x[i] = [i_p == i_q]``,
    constant along every other axis), or None where it mixes them with others."""
    out = _shape(node)
    if out is None or not src_shape:
        return None
    t = node.target
    r = len(src_shape)
    if t == aten.permute.default:
        args: Any = node.args  # fx arguments: ints here
        perm = [d % r for d in args[1]]
        return perm.index(p), perm.index(q)
    if t == aten.transpose.int:
        args = node.args
        d0, d1 = args[1] % r, args[2] % r
        swap = {d0: d1, d1: d0}
        return swap.get(p, p), swap.get(q, q)
    if t == aten.t.default:
        return (1 - p, 1 - q) if r == 2 else (p, q)
    if t == aten.expand.default:
        offset = len(out) - r  # new leading axes
        if out[p + offset] != src_shape[p] or out[q + offset] != src_shape[q]:
            return None
        return p + offset, q + offset
    if out == src_shape:
        return p, q
    # A view that inserts or removes axes of size 1, or regroups axes outside the delta's
    src_big = [d for d in range(r) if src_shape[d] != 1]
    out_big = [d for d in range(len(out)) if out[d] != 1]
    if [src_shape[d] for d in src_big] == [out[d] for d in out_big] and p in src_big and q in src_big:
        return out_big[src_big.index(p)], out_big[src_big.index(q)]
    k = r - min(p, q)
    if out[-k:] == src_shape[-k:]:
        return p + len(out) - r, q + len(out) - r
    return None


def _batched_delta_product(graph: torch.fx.Graph, a: Any, b: Any, ka: tuple[Any, ...], kb: tuple[Any, ...],
                           out: torch.Tensor) -> torch.fx.Node | None:
    """``bmm`` with a factor that is a delta between the batch axis and its contracted
    axis: a gather of the other factor's diagonal, broadcast over the free axis.
    ``bmm(A, D)`` with ``D[b, n, m] = [b == n]`` is ``A[b, k, b]``; ``bmm(D, A)`` with
    ``D[b, k, n] = [b == n]`` is ``A[b, b, m]``."""
    av, bv = _val(a), _val(b)
    if not (isinstance(av, torch.Tensor) and isinstance(bv, torch.Tensor)) or av.dtype != out.dtype != bv.dtype:
        return None
    batch, k, m = out.shape
    if kb[0] == "delta" and (kb[1], kb[2]) == (0, 1) and av.shape[0] == av.shape[2] == batch:
        diag = graph.call_function(aten.diagonal.default, (a, 0, 0, 2))  # [k, B]
        rows = graph.call_function(aten.unsqueeze.default, (graph.call_function(aten.t.default, (diag,)), -1))
        return graph.call_function(aten.clone.default, (graph.call_function(aten.expand.default,
                                                                               (rows, [batch, k, m])),),
                                   {"memory_format": torch.contiguous_format})
    if ka[0] == "delta" and (ka[1], ka[2]) == (0, 2) and bv.shape[0] == bv.shape[1] == batch:
        diag = graph.call_function(aten.diagonal.default, (b, 0, 0, 1))  # [m, B]
        cols = graph.call_function(aten.unsqueeze.default, (graph.call_function(aten.t.default, (diag,)), 1))
        return graph.call_function(aten.clone.default, (graph.call_function(aten.expand.default,
                                                                               (cols, [batch, k, m])),),
                                   {"memory_format": torch.contiguous_format})
    return None


def _same(x: Any, out: torch.Tensor) -> bool:
    v = _val(x)
    return isinstance(v, torch.Tensor) and tuple(v.shape) == tuple(out.shape) and v.dtype == out.dtype


def _diagonal_values(graph: torch.fx.Graph, k: tuple[Any, ...], row: bool) -> torch.fx.Node:
    """The diagonal of ``op(I, y)`` as ``op(1, y)``, shaped to broadcast along the rows
    (``row``: ``[..., 1, n]``, multiplying on the right) or the columns (``[..., n, 1]``)."""
    _, op, y, padded, rest = k
    ones = graph.call_function(aten.ones_like.default, (y,))
    values = graph.call_function(aten.reshape.default, (graph.call_function(op, (ones, y, *rest)), list(padded)))
    if (padded[-2] == 1) != row:
        values = graph.call_function(aten.transpose.int, (values, -2, -1))
    return values


def _drop_unwritten_input_copies(graph: torch.fx.Graph, aliases: Aliases) -> int:
    """The input watch's copies (``clone`` of an input) where nothing in the graph writes
    into the copy or the input and no output shares the copy's memory (NOTE [graph
    aliasing]): the graph reads the input itself (one copy fewer per input and call); the
    count removed."""
    returned = [n for out in graph.nodes if out.op == "output" for n in _nodes_in(out.args)]
    dropped = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target == aten.clone.default and len(node.args) == 1
                and not node.kwargs and isinstance(node.args[0], torch.fx.Node) and node.args[0].op == "placeholder"):
            continue
        source = node.args[0]
        if aliases.written(node) or aliases.written(source) or any(aliases.same(node, r) for r in returned):
            continue
        node.replace_all_uses_with(source)
        graph.erase_node(node)
        dropped += 1
    return dropped


def _drop_unused_identities(graph: torch.fx.Graph) -> None:
    """An identity built by ``diagonal().fill_(1)`` that nothing reads any more: the fill
    (an in-place write, which dead-code elimination keeps) and its buffer go too."""
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target == aten.fill_.Scalar:
            diag = node.args[0]
            if not (isinstance(diag, torch.fx.Node) and diag.target == aten.diagonal.default):
                continue
            source: Any = diag.args[0]
            if set(source.users) == {diag} and set(diag.users) == {node} and not node.users:
                graph.erase_node(node)
                graph.erase_node(diag)
                graph.erase_node(source)


def agree(a: Any, b: Any) -> bool:
    """Whether two graph outputs (tuples of tensors) agree to rounding."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            if x != y:
                return False
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.numel() and not torch.allclose(x, y, rtol=1e-5 if x.dtype != torch.float64 else 1e-10,
                                            atol=1e-6 if x.dtype != torch.float64 else 1e-12, equal_nan=True):
            return False
    return True

