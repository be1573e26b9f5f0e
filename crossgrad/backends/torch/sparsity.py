"""Sparsity patterns from a function's aten graph: the rules of NOTE [dependency
propagation] (:mod:`crossgrad.sparsity.propagation`) for torch's operations, and sparse
results in torch's formats.

The call is recorded by ``make_fx`` on fake tensors (nothing is computed; a branch on a
value is refused, so the pattern cannot silently hold for one branch only), functionalized
(views and in-place writes become plain operations) and decomposed to core aten.  The
arguments that are not differentiated are fake too: the pattern holds whatever their values;
the tensors the function closes over are constants, read as they are.

Why one module of ~430 lines: the dependency rule of every aten operation the
recording meets is one table with its helpers; a rule is found by its operation's name here.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as tree_util
from torch.utils._python_dispatch import _disable_current_modes

from crossgrad import pytree
from crossgrad.sparsity import propagation as prop
from crossgrad.sparsity.propagation import Value, Walk

_ELEMENTWISE = {
    "add", "sub", "mul", "div", "neg", "exp", "exp2", "log", "log2", "log10", "log1p", "expm1", "tanh", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "sigmoid", "sqrt", "rsqrt", "pow", "abs", "maximum",
    "detach_copy", "clone_copy",
    "minimum", "fmax", "fmin", "clamp", "clamp_min", "clamp_max", "relu", "gelu", "silu", "softplus", "elu", "leaky_relu",
    "hardtanh", "mish", "erf", "erfc", "erfinv", "atan2", "reciprocal", "square", "clone", "alias", "detach",
    "tanh_backward", "sigmoid_backward", "threshold_backward", "gelu_backward", "silu_backward", "softplus_backward",
    "elu_backward", "leaky_relu_backward", "hardtanh_backward", "xlogy", "lerp", "addcmul", "addcdiv", "rsub", "hypot",
    "logaddexp", "nan_to_num", "real", "imag", "conj", "conj_physical", "_conj", "sgn", "copysign", "_to_copy",
    "lift_fresh_copy", "contiguous", "log_sigmoid_forward", "special_xlog1py", "celu", "selu", "hardsigmoid", "hardswish",
    "logit", "sinc", "deg2rad", "rad2deg", "frac", "remainder", "fmod", "trunc_divide",
}
# Derivative zero wherever it is defined (or a value made from shapes alone).
_ZERO = {
    "eq", "ne", "lt", "le", "gt", "ge", "sign", "floor", "ceil", "round", "trunc", "isnan", "isinf", "isfinite", "isneginf",
    "isposinf", "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not",
    "bitwise_xor", "argmax", "argmin", "arange", "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "empty",
    "empty_like", "empty_strided", "new_zeros", "new_ones", "new_full", "new_empty", "scalar_tensor", "rand", "randn",
    "randint", "rand_like", "randn_like", "randint_like", "bernoulli", "eye", "any", "all", "heaviside", "sym_size",
    "_local_scalar_dense", "fill", "floor_divide", "randperm", "normal", "uniform", "exponential", "geometric",
    "multinomial", "sort_indices",
}
# Operations moving elements (each output element from at most one operand element).  The
# floating operands hold data; integer and boolean ones are indices or masks (constants).
_FORWARD = {
    "view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "squeeze", "unsqueeze", "slice", "select",
    "index", "_unsafe_index", "index_select", "gather", "cat", "stack", "constant_pad_nd", "flip", "roll", "repeat",
    "narrow", "split", "split_with_sizes", "unbind", "chunk", "diagonal", "expand_copy", "view_copy", "permute_copy",
    "slice_copy", "select_copy", "transpose_copy", "unsqueeze_copy", "squeeze_copy", "t_copy", "diagonal_copy",
    "_unsafe_view_copy", "alias_copy", "unbind_copy", "split_copy", "split_with_sizes_copy", "slice_scatter",
    "select_scatter", "diagonal_scatter", "unfold", "unfold_copy", "movedim", "tril", "triu", "where", "masked_fill",
    "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "as_strided", "as_strided_copy", "index_put", "_unsafe_index_put", "masked_scatter",
    "copy",  # copy(dst, src): src's values (broadcast) in dst's layout
}
# Forward maps that read a non-constant index operand as elementwise selection (``where`` on
# a computed mask picks each element from one of its operands at the same position).
_SELECTION = {"where", "masked_fill", "index_put"}
_REDUCE = {"sum", "mean", "amax", "amin", "max", "min", "prod", "logsumexp", "var", "std", "var_mean", "std_mean",
           "linalg_vector_norm", "norm", "nansum", "nanmean"}
_ALONG = {"_softmax": "all", "_log_softmax": "all", "softmax": "all", "log_softmax": "all",
          "_softmax_backward_data": "all", "_log_softmax_backward_data": "all", "sort": "all",
          "cumsum": "prefix", "cumprod": "prefix", "cummax": "prefix", "cummin": "prefix", "logcumsumexp": "prefix"}
# Written into at indices: each update element to one output element (found by the
# transpose run on codes), the written-over elements of the first operand dropped (``"set"``).
_SCATTER = {"scatter": "set", "scatter_add": "add", "index_add": "add", "scatter_reduce": "add", "index_copy": "set"}


def _name(node: torch.fx.Node) -> str:
    target = node.target
    packet = getattr(target, "_overloadpacket", None)
    name = str(getattr(packet, "__name__", None) or getattr(target, "__name__", str(target)))
    return name.rstrip("_") if name.endswith("_") and not name.startswith("_") else name


def _meta_shapes(node: torch.fx.Node) -> list[tuple[int, ...]]:
    val = node.meta.get("val")
    leaves = tree_util.tree_leaves(val)
    return [tuple(int(d) for d in t.shape) for t in leaves if isinstance(t, torch.Tensor)]


def _floating(node: Any) -> bool:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else node
    return isinstance(val, torch.Tensor) and (val.is_floating_point() or val.is_complex())


def _tensor_inputs(node: torch.fx.Node) -> list[torch.fx.Node]:
    found: list[torch.fx.Node] = []

    def note(n: torch.fx.Node) -> torch.fx.Node:
        found.append(n)
        return n

    torch.fx.node.map_arg((node.args, node.kwargs), note)
    return found


def _call(node: torch.fx.Node, replace: Callable[[torch.fx.Node], Any]) -> Any:
    args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), replace)
    return node.target(*args, **kwargs)  # type: ignore[operator]


def _scatter_targets(node: torch.fx.Node, known: dict[torch.fx.Node, Value], update: torch.fx.Node,
                     data: list[torch.fx.Node], shape: tuple[int, ...]) -> np.ndarray:
    """For each element of ``update``, ``1 +`` the output element it is written into (``0``:
    none): the operation's transpose in ``update`` (its other data zero) run on output codes."""
    size = int(np.prod(shape, dtype=np.int64))
    with _disable_current_modes():
        zeros = {n: torch.zeros(known[n].shape, dtype=torch.float64) for n in data}

        def applied(x: Any) -> Any:
            def pick(n: torch.fx.Node) -> Any:
                if n is update:
                    return x
                return zeros[n] if n in zeros else torch.as_tensor(known[n].const)

            return _call(node, pick)

        pair: Any = torch.func.vjp(applied, zeros[update])
        transposed = pair[1]
        cotangent = torch.arange(1, size + 1, dtype=torch.float64).reshape(shape)
        return np.asarray(transposed(cotangent)[0].numpy())


class _Walker:
    def __init__(self, gm: torch.fx.GraphModule, walk: Walk):
        self.gm, self.walk = gm, walk
        self.env: dict[torch.fx.Node, list[Value]] = {}

    def value(self, node: torch.fx.Node) -> Value:
        return self.env[node][0]

    def run(self, inputs: list[Value]) -> list[Value]:
        it = iter(inputs)
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.env[node] = [next(it)]
            elif node.op == "get_attr":
                const = getattr(self.gm, node.target)
                self.env[node] = [Value(tuple(const.shape), None, const.detach().cpu().numpy())]
            elif node.op == "call_function":
                self.env[node] = self.apply(node)
            elif node.op == "output":
                outs = tree_util.tree_leaves(node.args[0])
                return [self.value(o) for o in outs if isinstance(o, torch.fx.Node)]
        raise AssertionError("graph without output")

    def apply(self, node: torch.fx.Node) -> list[Value]:
        if node.target is operator.getitem:
            return [self.env[node.args[0]][node.args[1]]]  # type: ignore[index]
        ins = _tensor_inputs(node)
        shapes = _meta_shapes(node)
        values = [self.value(n) for n in ins]
        name = _name(node)
        if all(v.deps is None for v in values):
            return self.constant(node, ins, values, shapes)
        if name in _ZERO or (name == "_to_copy" and not _floating(node)):
            return [Value(s) for s in shapes]
        rule = getattr(self, "rule_" + name, None)
        if rule is not None:
            out: list[Value] = rule(node, ins, values, shapes)
            return out
        if name in ("index_put", "_unsafe_index_put") and (node.args[3:4] == (True,) or node.kwargs.get("accumulate")):
            return self.scatter(node, "index_add", ins, values, shapes)
        if name in _SELECTION and not all(v.const is not None for n, v in zip(ins, values) if not _floating(n)):
            return [self.elementwise([v for n, v in zip(ins, values) if _floating(n)], shapes[0])]
        if name in _FORWARD:
            return self.forward(node, ins, values, shapes)
        if name in _ELEMENTWISE:
            return [self.elementwise([v for n, v in zip(ins, values) if _floating(n)], shapes[0])]
        if name in _REDUCE:
            return self.reduce(node, values[0], shapes)
        if name in _ALONG:
            return self.along(node, name, ins, values, shapes)
        if name in _SCATTER:
            return self.scatter(node, name, ins, values, shapes)
        return self.dense(name, values, shapes)

    def dense(self, name: str, values: Sequence[Value], shapes: list[tuple[int, ...]]) -> list[Value]:
        self.walk.unruled.add(name)
        deps = [v.deps for v in values if v.deps is not None]
        return [Value(s, prop.dense_terms(int(np.prod(s, dtype=np.int64)), self.walk.n, deps)) for s in shapes]

    def constant(self, node: torch.fx.Node, ins: list[torch.fx.Node], values: list[Value],
                 shapes: list[tuple[int, ...]]) -> list[Value]:
        known = dict(zip(ins, values))
        if all(v.const is not None for v in values):
            try:
                with _disable_current_modes():
                    out = _call(node, lambda n: torch.as_tensor(known[n].const))
            except Exception:  # a value that cannot be computed here stays unknown
                return [Value(s) for s in shapes]
            leaves = [t for t in tree_util.tree_leaves(out) if isinstance(t, torch.Tensor)]
            return [Value(s, None, t.detach().cpu().numpy()) for s, t in zip(shapes, leaves)]
        return [Value(s) for s in shapes]

    def elementwise(self, values: Sequence[Value], shape: tuple[int, ...]) -> Value:
        return Value(shape, prop.gathered(shape, self.walk.n, [(v, None) for v in values]))

    def rule_mul(self, node: torch.fx.Node, ins: list[torch.fx.Node], values: list[Value],
                 shapes: list[tuple[int, ...]]) -> list[Value]:
        keeps: list[Any] = [None] * len(values)
        if len(values) == 2:  # a constant's zeros are structural
            keeps = [None if other.const is None else other.const != 0 for other in (values[1], values[0])]
        return [Value(shapes[0], prop.gathered(shapes[0], self.walk.n, list(zip(values, keeps))))]

    def forward(self, node: torch.fx.Node, ins: list[torch.fx.Node], values: list[Value],
                shapes: list[tuple[int, ...]]) -> list[Value]:
        offsets: dict[torch.fx.Node, int] = {}
        offset = 0
        for n, v in zip(ins, values):
            if _floating(n) and n not in offsets:
                offsets[n] = offset
                offset += v.size
            elif not _floating(n) and v.const is None:
                return self.dense(_name(node) + " (indices not constant)", values, shapes)
        known = dict(zip(ins, values))

        def coded(n: torch.fx.Node) -> Any:
            if n in offsets:
                return torch.arange(offsets[n] + 1, offsets[n] + 1 + known[n].size, dtype=torch.float64).reshape(known[n].shape)
            return torch.as_tensor(known[n].const)

        with _disable_current_modes():
            out = _call(node, coded)
        leaves = [t for t in tree_util.tree_leaves(out) if isinstance(t, torch.Tensor)]
        results = []
        for s, codes in zip(shapes, leaves):
            c = np.rint(codes.detach().cpu().numpy()).astype(np.int64)
            terms = [(prop.forward_map(c, offsets[n], known[n].size), known[n].deps) for n in offsets if known[n].deps is not None]
            results.append(Value(s, prop.combine(c.size, self.walk.n, terms)))
        return results

    def reduce(self, node: torch.fx.Node, value: Value, shapes: list[tuple[int, ...]]) -> list[Value]:
        dims: Any = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        name = _name(node)
        if name in ("linalg_vector_norm", "norm"):
            dims = node.kwargs.get("dim", node.args[2] if len(node.args) > 2 else None)
        rank = len(value.shape)
        if dims is None or dims == [] or (isinstance(dims, (list, tuple)) and len(dims) == 0):
            axes: list[int] = list(range(rank))
        elif isinstance(dims, int):
            axes = [dims % max(rank, 1)]
        else:
            axes = [int(d) % max(rank, 1) for d in dims]
        r = prop.reduce_map(value.shape, axes)
        out = []
        for k, s in enumerate(shapes):
            size = int(np.prod(s, dtype=np.int64))
            if k > 0 and name in ("max", "min"):  # the indices
                out.append(Value(s))
                continue
            out.append(Value(s, prop.combine(size, self.walk.n, [(r, value.deps)])))
        return out

    def along(self, node: torch.fx.Node, name: str, ins: list[torch.fx.Node], values: list[Value],
              shapes: list[tuple[int, ...]]) -> list[Value]:
        dim = node.kwargs.get("dim", next((a for a in node.args[1:] if isinstance(a, int) and not isinstance(a, bool)), 0))
        shape = shapes[0]
        size = int(np.prod(shape, dtype=np.int64))
        r = prop.along_axis_map(shape, int(dim), _ALONG[name], False) if shape else None  # type: ignore[arg-type]
        terms = [(r, v.deps) for n, v in zip(ins, values) if v.deps is not None and _floating(n)]
        deps = prop.combine(size, self.walk.n, terms)
        return [Value(s, deps if k == 0 or (name == "sort" and k == 0) else None) for k, s in enumerate(shapes)]

    def scatter(self, node: torch.fx.Node, name: str, ins: list[torch.fx.Node], values: list[Value],
                shapes: list[tuple[int, ...]]) -> list[Value]:
        known = dict(zip(ins, values))
        if any(not _floating(n) and known[n].const is None for n in ins):
            return self.dense(name + " (indices not constant)", values, shapes)
        base, updates = ins[0], [n for n in ins[1:] if _floating(n)]
        shape = shapes[0]
        size = int(np.prod(shape, dtype=np.int64))
        terms = []
        written = np.zeros(size, bool)
        for u in updates:
            targets = _scatter_targets(node, known, u, [base, *updates], shape)
            hit = np.rint(targets).astype(np.int64).ravel()
            written[hit[hit > 0] - 1] = True
            if known[u].deps is not None:
                terms.append((prop.backward_map(targets, size), known[u].deps))
        if known[base].deps is not None:
            terms.append((prop.masked(None, size, ~written) if _SCATTER[name] == "set" else None, known[base].deps))
        return [Value(shape, prop.combine(size, self.walk.n, terms))]

    def contraction(self, a: Value, b: Value, shape: tuple[int, ...], contract: tuple[Sequence[int], Sequence[int]],
                    batch: tuple[Sequence[int], Sequence[int]]) -> list[tuple[Any, Any]]:
        r_a, r_b = prop.contraction_maps(a.shape, b.shape, contract, batch, a.const, b.const)
        return [(r, v.deps) for r, v in ((r_a, a), (r_b, b)) if v.deps is not None]

    def _product(self, node: torch.fx.Node, values: list[Value], shapes: list[tuple[int, ...]], bias: bool) -> list[Value]:
        a, b = values[-2], values[-1]
        if len(a.shape) == 3:
            dims: tuple[Any, Any] = (((2,), (1,)), ((0,), (0,)))
        elif len(b.shape) == 1 and len(a.shape) == 2:
            dims = (((1,), (0,)), ((), ()))
        elif len(a.shape) == 1:
            dims = (((0,), (0,)), ((), ()))
        else:
            dims = (((1,), (0,)), ((), ()))
        shape = shapes[0]
        terms = self.contraction(a, b, shape, *dims)
        if bias and values[0].deps is not None:
            terms.append((prop.broadcast_map(values[0].shape, shape), values[0].deps))
        return [Value(shape, prop.combine(int(np.prod(shape, dtype=np.int64)), self.walk.n, terms))]

    def rule_mm(self, node: torch.fx.Node, ins: list[torch.fx.Node], values: list[Value],
                shapes: list[tuple[int, ...]]) -> list[Value]:
        return self._product(node, values, shapes, bias=False)

    rule_bmm = rule_mv = rule_dot = rule_mm

    def rule_addmm(self, node: torch.fx.Node, ins: list[torch.fx.Node], values: list[Value],
                   shapes: list[tuple[int, ...]]) -> list[Value]:
        return self._product(node, values, shapes, bias=True)

    rule_baddbmm = rule_addmv = rule_addmm

    def rule_convolution(self, node: torch.fx.Node, ins: list[torch.fx.Node], values: list[Value],
                         shapes: list[tuple[int, ...]]) -> list[Value]:
        """Output ``(n, o, p)`` from the input elements under the kernel's window at ``p``
        (the convolution run on codes with a patch-extracting kernel) whose kernel entry
        ``(o, c, tap)`` is not a known zero; from every kernel entry of its output channel
        and from its channel's bias."""
        args = list(node.args)
        x, w = values[0], values[1]
        transposed, groups = bool(args[6]), int(args[8])  # type: ignore[arg-type]  # aten.convolution's schema
        if transposed or groups != 1:
            return self.dense("convolution (transposed or grouped)", values, shapes)
        eye = torch.from_numpy(prop.patch_kernel(x.shape[1], w.shape[2:]))
        with _disable_current_modes():
            codes = torch.arange(1, x.size + 1, dtype=torch.float64).reshape(x.shape)
            patched = torch.ops.aten.convolution.default(codes, eye, None, *args[3:])
        patches = np.rint(patched.numpy()).astype(np.int64)
        shape = shapes[0]
        outs, sp1 = shape[1], (1,) * (len(shape) - 2)
        size = int(np.prod(shape, dtype=np.int64))
        r_in, r_kernel = prop.convolution_maps(patches, np.arange(size).reshape(shape), w.shape, w.const, x.size)
        terms = []
        if x.deps is not None:
            terms.append((r_in, x.deps))
        if w.deps is not None:
            terms.append((r_kernel, w.deps))
        if len(values) > 2 and values[2].deps is not None:
            bias = values[2]
            per_channel = np.broadcast_to(np.arange(1, outs + 1).reshape(1, outs, *sp1), shape)
            terms.append((prop.forward_map(per_channel, 0, bias.size), bias.deps))
        return [Value(shape, prop.combine(size, self.walk.n, terms))]


def _graph(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], argnum: int, order: int
           ) -> tuple[torch.fx.GraphModule, list[Any], int]:
    """``f`` (``order`` 1) or its gradient in argument ``argnum`` (``order`` 2) recorded on fake
    tensors, with every tensor argument an input, and where the differentiated one sits."""
    from torch._decomp import core_aten_decompositions

    leaves, treedef = pytree.flatten((args, kwargs))
    is_arr = [isinstance(x, torch.Tensor) for x in leaves]
    before = len(pytree.leaves((args[:argnum], {})))
    position = sum(1 for a in is_arr[:before] if a)

    def flat(*arrays: Any) -> Any:
        it = iter(arrays)
        full = [next(it) if a else leaf for leaf, a in zip(leaves, is_arr)]
        a, k = pytree.unflatten(treedef, full)
        return f(*a, **k)

    target = flat if order == 1 else torch.func.grad(flat, argnums=position)
    arrays = [x.detach() for x, a in zip(leaves, is_arr) if a]
    with _disable_current_modes():
        decompositions: Any = core_aten_decompositions()
        gm = make_fx(torch.func.functionalize(target, remove="mutations_and_views"), tracing_mode="fake",
                     decomposition_table=decompositions, _allow_non_fake_inputs=True)(*arrays)
    return gm, arrays, position


def outside_compiler(fn: Callable[[], Any]) -> Any:
    """``fn()`` with dynamo off: a sparse plan is prepared in NumPy and scipy (and by tracing
    on fake tensors), which ``torch.compile`` must not try to compile."""
    return torch._dynamo.disable(fn)()  # type: ignore[no-untyped-call]  # torch's function is unannotated


def pattern(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], argnum: int, order: int
            ) -> tuple[tuple[int, int], np.ndarray, np.ndarray, set[str]]:
    """The Jacobian (``order`` 1) or Hessian (``order`` 2) pattern of ``f`` in argument
    ``argnum`` (one tensor): its shape, rows, columns, and the operations met without a rule."""
    gm, arrays, position = _graph(f, args, kwargs, argnum, order)
    n = int(arrays[position].numel())
    walk = Walk(n)
    result = _Walker(gm, walk).run(prop.inputs([tuple(a.shape) for a in arrays], position))[0]
    return (*prop.pattern_of(result, n), walk.unruled)


def sparse_result(values: Any, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], form: str,
                  batch: int | None, cache: dict[Any, Any]) -> Any:
    """The entries ``values`` (row-major, at ``rows, cols``; ``[batch, nnz]`` with a batch) as
    ``form``: ``"coo"`` (a coalesced sparse COO tensor, the batch its first sparse axis), ``"csr"``
    (a sparse CSR tensor, batched CSR with a batch) or ``"dense"``.  ``cache`` keeps the index
    tensors between calls."""
    device = values.device
    key = (form, batch, str(device))
    index = cache.get(key)
    if index is None:
        r = torch.tensor(rows, device=device)
        c = torch.tensor(cols, device=device)
        if form == "dense":
            index = (r, c) if batch is None else (torch.arange(batch, device=device)[:, None], r[None, :], c[None, :])
        elif form == "csr":
            crow = torch.tensor(np.searchsorted(rows, np.arange(shape[0] + 1)), device=device)
            index = (crow, c) if batch is None else (crow.expand(batch, -1).contiguous(), c.expand(batch, -1).contiguous())
        elif batch is None:
            index = (torch.stack([r, c]),)
        else:
            b = torch.arange(batch, device=device).repeat_interleave(r.numel())
            index = (torch.stack([b, r.repeat(batch), c.repeat(batch)]),)
        cache[key] = index
    full = shape if batch is None else (batch, *shape)
    if form == "dense":
        return torch.zeros(full, dtype=values.dtype, device=device).index_put(index, values)
    if form == "csr":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr: Any = torch.sparse_csr_tensor
            return csr(*index, values, full, check_invariants=False)
    return torch.sparse_coo_tensor(index[0], values.reshape(-1), full, is_coalesced=True, check_invariants=False)
