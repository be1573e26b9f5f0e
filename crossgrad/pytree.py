"""Framework-free pytrees: tuples, lists, dicts, namedtuples and nestings of them.

Both backends see the user's containers through this module, so they agree on the
one thing the frameworks disagree on: **dict keys are visited in sorted order**
(JAX's rule; torch keeps insertion order).  Results that contain dicts therefore
come back with sorted keys on both backends.  ``None`` is an empty node (it holds no
leaves), as in JAX.  Anything else is a leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class TreeDef(NamedTuple):
    """The structure of a pytree: a node kind, its static data, and its children."""

    kind: str  # "leaf", "none", "tuple", "list", "dict", "namedtuple"
    data: Any  # dict keys, or the namedtuple class
    children: tuple[TreeDef, ...]
    num_leaves: int


LEAF = TreeDef("leaf", None, (), 1)
_NONE = TreeDef("none", None, (), 0)


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _node(kind: str, data: Any, children: tuple[TreeDef, ...]) -> TreeDef:
    return TreeDef(kind, data, children, sum(c.num_leaves for c in children))


def _children(tree: Any) -> tuple[str, Any, Sequence[Any]] | None:
    if tree is None:
        return "none", None, ()
    if isinstance(tree, dict):
        keys = tuple(sorted(tree))
        return "dict", keys, [tree[k] for k in keys]
    if _is_namedtuple(tree):
        return "namedtuple", type(tree), tree
    if isinstance(tree, tuple):
        return "tuple", None, tree
    if isinstance(tree, list):
        return "list", None, tree
    return None


def flatten(tree: Any) -> tuple[list[Any], TreeDef]:
    """Leaves in a fixed order (dict keys sorted) and the structure to rebuild from."""
    leaves: list[Any] = []

    def visit(node: Any) -> TreeDef:
        split = _children(node)
        if split is None:
            leaves.append(node)
            return LEAF
        kind, data, kids = split
        if kind == "none":
            return _NONE
        return _node(kind, data, tuple(visit(k) for k in kids))

    return leaves, visit(tree)


def leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree`` in flatten order."""
    return flatten(tree)[0]


def unflatten(treedef: TreeDef, leaves: Sequence[Any]) -> Any:
    """Rebuild the tree that ``treedef`` describes from ``leaves`` (flatten order)."""
    it = iter(leaves)

    def build(td: TreeDef) -> Any:
        if td.kind == "leaf":
            return next(it)
        if td.kind == "none":
            return None
        kids = [build(c) for c in td.children]
        if td.kind == "dict":
            return dict(zip(td.data, kids))
        if td.kind == "namedtuple":
            return td.data(*kids)
        if td.kind == "list":
            return kids
        return tuple(kids)

    out = build(treedef)
    rest = next(it, _END)
    if rest is not _END:
        raise ValueError("unflatten: more leaves than the tree definition holds")
    return out


_END = object()


def map_leaves(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``fn`` to every leaf and rebuild the same structure."""
    flat, td = flatten(tree)
    return unflatten(td, [fn(x) for x in flat])


def canonical(tree: Any) -> Any:
    """The same tree with every dict rebuilt in sorted key order (new containers only).

    Used where a framework's own pytree code would otherwise see insertion order.
    Containers without dicts come back as they are.
    """
    if isinstance(tree, dict):
        return {k: canonical(tree[k]) for k in sorted(tree)}
    if _is_namedtuple(tree):
        return type(tree)(*(canonical(v) for v in tree))
    if isinstance(tree, (tuple, list)):
        if not any(isinstance(v, (dict, tuple, list)) for v in tree):
            return tree
        return type(tree)(canonical(v) for v in tree)
    return tree


def _family(kind: str) -> str:
    # A tuple of axes may describe a list or namedtuple argument, as users expect.
    return "sequence" if kind in ("tuple", "list", "namedtuple") else kind


def broadcast_prefix(prefix: Any, tree: Any, is_leaf: Callable[[Any], bool]) -> list[Any]:
    """Expand ``prefix`` (a tree prefix of ``tree`` whose leaves satisfy ``is_leaf``) to one
    value per leaf of ``tree``, as JAX does for ``in_axes``.  Raises ``ValueError`` when
    ``prefix`` is not a prefix of ``tree``."""
    out: list[Any] = []

    def visit(p: Any, t: Any) -> None:
        if is_leaf(p):
            out.extend([p] * len(leaves(t)))
            return
        ps, ts = _children(p), _children(t)
        mismatch = (
            ps is None
            or ts is None
            or _family(ps[0]) != _family(ts[0])
            or len(ps[2]) != len(ts[2])
            or (ps[0] == "dict" and ps[1] != ts[1])
        )
        if mismatch:
            raise ValueError(f"{type(p).__name__} does not match {type(t).__name__}")
        for pc, tc in zip(ps[2], ts[2]):
            visit(pc, tc)

    visit(prefix, tree)
    return out
