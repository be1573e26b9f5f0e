"""Batched products with a batch-constant factor folded into one ``mm`` on traced torch
graphs (NOTE [batch-constant products]): the same mathematics written several ways gives
a graph without such ``bmm``, and every rewritten graph computes what it computed."""

from __future__ import annotations

import pytest
from tolerances import TOL

import crossgrad as cg

torch = pytest.importorskip("torch")
aten = torch.ops.aten


def _traced(fn, *args):
    from torch.fx.experimental.proxy_tensor import make_fx

    return make_fx(fn, tracing_mode="real")(*args)


def _folded(fn, *args):
    """(products folded, the rewritten graph, its outputs, eager's outputs)."""
    from crossgrad.backends.torch import simplify

    gm = _traced(fn, *args)
    count = simplify.simplify(gm)
    return count, gm, gm(*args), fn(*args)


def _constant_factor_bmms(gm):
    """``bmm`` nodes one of whose factors comes from an ``expand`` through shape operations."""
    shape_ops = {aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.clone.default,
                 aten.permute.default, aten.transpose.int, aten.unsqueeze.default}

    def from_expand(node):
        while isinstance(node, torch.fx.Node) and node.target in shape_ops:
            node = node.args[0]
        return isinstance(node, torch.fx.Node) and node.target == aten.expand.default

    return [n for n in gm.graph.nodes if n.target == aten.bmm.default and any(from_expand(a) for a in n.args[:2])]


def _layer(form):
    if form == "W @ x":
        return lambda w, h: w @ h
    if form == "x @ W.T":
        return lambda w, h: h @ w.T
    if form == "F.linear":
        return torch.nn.functional.linear
    return lambda w, h: torch.einsum("ij,j->i", w, h)


FORMS = ["W @ x", "x @ W.T", "F.linear", "einsum"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("transform", ["batched_hessian", "batched_jacobian", "batched_laplacian"])
def test_every_form_of_a_layer_leaves_no_product_with_an_expanded_factor(form, transform):
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(s, generator=gen, dtype=torch.float64) / 3 for s in ((7, 5), (6, 7), (3, 6))]
    layer = _layer(form)

    def f(x):
        h = x
        for k, w in enumerate(ws):
            h = layer(w, h)
            h = torch.tanh(h) if k < len(ws) - 1 else h
        return h.sum() if transform != "batched_jacobian" else h

    x = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    _, gm, got, expected = _folded(getattr(cg.torch, transform)(f), x)
    assert _constant_factor_bmms(gm) == []
    torch.testing.assert_close(got, expected, **TOL["float64"]["same"])


def _products(w, v, m, x):
    b = x.shape[0]
    nested = w.expand(3, *w.shape).expand(b, 3, *w.shape).reshape(b * 3, *w.shape)
    return (torch.bmm(w.expand(b, *w.shape), x),                       # M @ x[i], matrices
            torch.bmm(w.expand(b, *w.shape), x[:, :, :1]),             # M @ x[i], vectors
            torch.bmm(x.transpose(1, 2), w.T.expand(b, *w.T.shape)),   # x[i] @ M
            torch.bmm(nested, x.repeat(3, 1, 1)),                      # expanded twice, batch regrouped
            torch.bmm(v[:, None].expand(b, 4, 1).transpose(1, 2), m.expand(b, 4, 2)),  # both constant
            torch.bmm(w.unsqueeze(0).permute(0, 2, 1).expand(b, 5, 4).transpose(1, 2), x))


def test_constant_factors_are_followed_through_shape_operations():
    gen = torch.Generator().manual_seed(1)
    w, v, m = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((4, 5), (4,), (4, 2)))
    x = torch.randn(6, 5, 3, generator=gen, dtype=torch.float64)
    count, gm, got, expected = _folded(_products, w, v, m, x)
    assert count == 6
    assert not [n for n in gm.graph.nodes if n.target == aten.bmm.default]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **TOL["float64"]["same"])
        assert a.is_contiguous()  # bmm's layout: the graph's later views still apply


def test_factors_constant_along_other_axes_or_written_are_not_folded():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    x = torch.randn(6, 5, 3, generator=gen, dtype=torch.float64)

    def products(w, x):
        along_rows = x[:, :1, :].expand(6, 4, 3)  # constant along axis 1 only
        mixed = w.expand(2, 3, 4, 5).reshape(3, 2, 4, 5)[:, 0].repeat(2, 1, 1)  # a copy, no longer an expand
        buf = w.expand(6, 4, 5).clone()
        buf[2].add_(1.0)  # one element differs from the others
        return torch.bmm(along_rows, x.transpose(1, 2)), torch.bmm(mixed, x), torch.bmm(buf, x)

    _, gm, got, expected = _folded(products, w, x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, **TOL["float64"]["same"])
    assert len([n for n in gm.graph.nodes if n.target == aten.bmm.default]) == 3


def test_jit_of_the_weight_first_form_equals_eager():
    """The compiled route (the fold inside the traced graph) against eager, float32."""
    gen = torch.Generator().manual_seed(3)
    ws = [torch.randn(s, generator=gen) / 4 for s in ((16, 8), (16, 16), (1, 16))]

    def f(x):
        return (ws[2] @ torch.tanh(ws[1] @ torch.tanh(ws[0] @ x))).sum()

    x = torch.randn(32, 8, generator=gen)
    transform = cg.torch.batched_hessian(f)
    torch.testing.assert_close(cg.torch.jit(transform, route="trace")(x), transform(x), **TOL["float32"]["same"])
