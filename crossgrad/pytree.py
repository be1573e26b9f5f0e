"""Pytrees: tuples, lists, dicts, namedtuples, and every node the frameworks' registries know.

Containers are walked here, once, for both backends, with each framework's conventions
(NOTE [pytree conventions]):

* **dict key order is the framework's**: jax visits and returns plain dicts with sorted
  keys (``jax.tree_util``); torch keeps insertion order (``torch.utils._pytree``, as
  ``torch.func`` and ``state_dict()`` do).  The order in force is the backend's, set by
  the transforms around each call (:func:`dict_order`); outside any transform, sorted.
* ``OrderedDict`` keeps its order and type on both, ``defaultdict`` its type and default
  factory (its keys sorted on jax, as jax does); namedtuples keep their class.
* ``None`` is an empty node (no leaves) on both backends, as in jax (torch's registry
  calls it a leaf: crossgrad does not).
* Any other class registered with ``jax.tree_util`` (Equinox modules, Flax NNX states,
  registered dataclasses) or torch's pytree registry is a node, flattened by that
  registry, when the framework is imported (this module imports neither).
* Anything else is a leaf.

NOTE [pytree conventions]: where the registries differ and what crossgrad does.
| | jax | torch | crossgrad |
|---|---|---|---|
| plain dict order | sorted keys | insertion | the backend's |
| defaultdict order | sorted keys | insertion | the backend's |
| OrderedDict | insertion | insertion | insertion |
| None | empty node | leaf | empty node |
| registered classes | jax.tree_util | torch registry | whichever registry knows the class (jax first) |
"""

from __future__ import annotations

import contextvars
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class Batch(NamedTuple):
    """The arguments of one batched call as leaves: each leaf's batch axis (None: shared by
    every sample), the batch size and the arguments' structure."""

    leaves: list[Any]
    treedef: TreeDef
    axes: list[int | None]
    size: int


class TreeDef(NamedTuple):
    """The structure of a pytree: a node kind, its static data, and its children."""

    kind: str  # "leaf", "none", "tuple", "list", "dict", "namedtuple", "custom"
    data: Any  # (dict type, keys, default factory), the namedtuple class, or (registry, node data)
    children: tuple[TreeDef, ...]
    num_leaves: int


LEAF = TreeDef("leaf", None, (), 1)
_NONE = TreeDef("none", None, (), 0)
_ORDER: contextvars.ContextVar[str] = contextvars.ContextVar("crossgrad_dict_order", default="sorted")


class dict_order:
    """Walk plain dicts in ``backend``'s order within the block: sorted keys for jax,
    insertion order for torch.  (A class, not a generator context: it is entered on every
    transform call.)"""

    __slots__ = ("_order", "_token")

    def __init__(self, backend: str) -> None:
        self._order = "insertion" if backend == "torch" else "sorted"

    def __enter__(self) -> None:
        self._token = _ORDER.set(self._order)

    def __exit__(self, *exc: object) -> None:
        _ORDER.reset(self._token)


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


def _node(kind: str, data: Any, children: tuple[TreeDef, ...]) -> TreeDef:
    return TreeDef(kind, data, children, sum(c.num_leaves for c in children))


def _dict_keys(tree: dict[Any, Any]) -> tuple[Any, ...]:
    if isinstance(tree, OrderedDict) or _ORDER.get() == "insertion":
        return tuple(tree)
    try:
        return tuple(sorted(tree))
    except TypeError:  # keys that do not compare: insertion order, as jax falls back to
        return tuple(tree)


def _registered(tree: Any) -> tuple[str, Any, Sequence[Any]] | None:
    """One level of a node some framework's registry knows, or None (a leaf)."""
    if isinstance(tree, (int, float, complex, str, bytes)):
        return None  # scalars: leaves in every registry, answered without asking one
    jax = sys.modules.get("jax")
    if jax is not None:
        kids, treedef = jax.tree_util.tree_flatten(tree, is_leaf=lambda x: x is not tree)
        if not (treedef.num_nodes == 1 and treedef.num_leaves == 1):
            return "custom", ("jax", treedef), kids
    torch_pytree = sys.modules.get("torch.utils._pytree")
    if torch_pytree is not None:
        node = torch_pytree.SUPPORTED_NODES.get(type(tree))
        if node is not None:
            kids, context = node.flatten_fn(tree)
            return "custom", ("torch", (node, context)), kids
    return None


# The types of arrays and scalars met so far: leaves in every registry (the first test of
# each flatten step, which runs for every leaf of every call).
_LEAVES: set[type] = {int, float, complex, str, bytes, bool}


def _children(tree: Any) -> tuple[str, Any, Sequence[Any]] | None:
    kind = type(tree)
    if kind in _LEAVES:
        return None
    if kind.__module__.partition(".")[0] in ("torch", "jax", "jaxlib", "numpy") and not isinstance(
            tree, (dict, tuple, list)):
        _LEAVES.add(kind)
        return None
    if tree is None:
        return "none", None, ()
    if isinstance(tree, dict):
        keys = _dict_keys(tree)
        factory = tree.default_factory if isinstance(tree, defaultdict) else None
        return "dict", (type(tree), keys, factory), [tree[k] for k in keys]
    if _is_namedtuple(tree):
        return "namedtuple", type(tree), tree
    if isinstance(tree, tuple):
        return "tuple", None, tree
    if isinstance(tree, list):
        return "list", None, tree
    return _registered(tree)


def _rebuild_dict(data: Any, kids: list[Any]) -> dict[Any, Any]:
    kind, keys, factory = data
    if kind is defaultdict or issubclass(kind, defaultdict):
        out: dict[Any, Any] = kind(factory)
        out.update(zip(keys, kids))
        return out
    if kind is dict:
        return dict(zip(keys, kids))
    try:
        built: dict[Any, Any] = kind(zip(keys, kids))
        return built
    except TypeError:
        return dict(zip(keys, kids))


def _rebuild_custom(data: Any, kids: list[Any]) -> Any:
    registry, node_data = data
    if registry == "jax":
        import jax

        return jax.tree_util.tree_unflatten(node_data, kids)
    node, context = node_data
    return node.unflatten_fn(kids, context)


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
            return _rebuild_dict(td.data, kids)
        if td.kind == "custom":
            return _rebuild_custom(td.data, kids)
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


def ordered_like(tree: Any, like: Any) -> Any:
    """``tree`` with its dicts' keys in the order of ``like``'s (same structure otherwise):
    a cotangent written in another key order than the output it belongs to."""
    if isinstance(tree, dict) and isinstance(like, dict) and set(tree) == set(like):
        rebuilt = {k: ordered_like(tree[k], like[k]) for k in like}
        return _rebuild_dict((type(tree), tuple(like), getattr(tree, "default_factory", None)),
                             list(rebuilt.values()))
    if isinstance(tree, (tuple, list)) and isinstance(like, (tuple, list)) and len(tree) == len(like):
        kids = [ordered_like(a, b) for a, b in zip(tree, like)]
        return type(tree)(*kids) if _is_namedtuple(tree) else type(tree)(kids)
    return tree


def same_structure(a: TreeDef, b: TreeDef) -> bool:
    """Structures equal up to the order of dict keys."""
    if a.kind != b.kind or len(a.children) != len(b.children):
        return False
    if a.kind == "dict":
        if a.data[0] is not b.data[0] or set(a.data[1]) != set(b.data[1]):
            return False
        by_key = dict(zip(b.data[1], b.children))
        return all(same_structure(c, by_key[k]) for k, c in zip(a.data[1], a.children))
    if a.data != b.data:
        return False
    return all(same_structure(x, y) for x, y in zip(a.children, b.children))


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
            or (ps[0] == "dict" and set(ps[1][1]) != set(ts[1][1]))
        )
        if mismatch:
            raise ValueError(f"{type(p).__name__} does not match {type(t).__name__}")
        assert ps is not None and ts is not None
        if ps[0] == "dict":  # matched by key: the two dicts may list their keys in different orders
            by_key = dict(zip(ps[1][1], ps[2]))
            for key, tc in zip(ts[1][1], ts[2]):
                visit(by_key[key], tc)
            return
        for pc, tc in zip(ps[2], ts[2]):
            visit(pc, tc)

    visit(prefix, tree)
    return out
