"""What a compiled program took from the function's surroundings, and whether it still holds.

NOTE [jit guards]: a trace (and ``jax.jit``) bakes in what the function reads besides its
arguments: the arrays it closes over are held by reference (an update in place is seen),
but a name rebound to another array, a Python number or string changed, or a model switched
to eval mode, would leave the compiled program computing with the old one.  So ``cg.jit``
walks, once per trace, everything the function can reach without calling it: closure cells,
the globals its code names (nested functions' too; not a library's: :data:`LIBRARIES`), defaults, ``functools.partial`` and bound
methods, lists, dicts and objects' attribute dicts (an ``nn.Module``'s parameters, buffers,
submodules and ``training`` flag), and keeps each link on a path to an array, a number, a
string or a random generator.  Before each call it checks that every link still leads to
the same object (numbers and strings: an equal value); where one does not, that signature
is traced again, as ``torch.compile``'s guards do.  Modules, classes and builtins are not
entered; a walk stops after :data:`MAX_OBJECTS` objects (what it found is still guarded).
Framework-free: the backend says what an array and a generator are.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

# The most objects one walk visits, and the largest container it enters.
MAX_OBJECTS = 4000
MAX_CONTAINER = 1024

_VALUES = (bool, int, float, complex, str, bytes)
_SKIP = (types.ModuleType, type, types.BuiltinFunctionType, types.CodeType, types.FrameType,
         types.GeneratorType, property, staticmethod, classmethod)


# Code whose globals are a library's, not the user's state: its closures are followed (a
# transform holds the user's function there), its globals and its own objects are not.
LIBRARIES = frozenset({"crossgrad", "torch", "jax", "jaxlib", "numpy", "functools", "equinox", "flax", "optax"})


def _library(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and module.partition(".")[0] in LIBRARIES


def _names(code: types.CodeType) -> set[str]:
    """The global names a code object (and the code nested in it) may read."""
    found = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            found |= _names(c)
    return found


class Guard:
    """The links from a function to the arrays, values and generators it can reach.

    ``generators`` lists the random generators found (the backend's ``is_generator``).
    :meth:`holds` is True while every link leads where it led when the guard was made.
    """

    def __init__(self, f: Any, is_array: Callable[[Any], bool], is_generator: Callable[[Any], bool]):
        self._is_array, self._is_generator = is_array, is_generator
        self._links: list[tuple[Any, Any, Any]] = []  # (dict or list or cell, key, object)
        self._values: list[tuple[Any, Any, Any]] = []  # (dict or list or cell, key, value): compared by ==
        self.generators: list[Any] = []
        self._seen: dict[int, bool] = {}
        self._visit(f)
        del self._seen

    def _leaf(self, obj: Any) -> str | None:
        if isinstance(obj, _VALUES) or obj is None:
            return "value"
        if self._is_array(obj):
            return "array"
        if self._is_generator(obj):
            if all(g is not obj for g in self.generators):
                self.generators.append(obj)
            return "array"
        return None

    def _link(self, holder: Any, key: Any, obj: Any) -> bool:
        """Follow ``holder[key] -> obj``; keep the link where it leads to something guarded."""
        leaf = self._leaf(obj)
        if leaf == "value":
            if obj is None or isinstance(obj, bool) or not isinstance(obj, (str, bytes)) or len(obj) < 256:
                self._values.append((holder, key, obj))
            return True
        if leaf == "array" or self._visit(obj):
            self._links.append((holder, key, obj))
            return True
        return False

    def _visit(self, obj: Any) -> bool:
        """Whether anything guarded is reachable from ``obj`` (its links kept)."""
        if self._leaf(obj) is not None:
            return True
        key = id(obj)
        if key in self._seen:
            return self._seen[key]
        if len(self._seen) >= MAX_OBJECTS or isinstance(obj, _SKIP):
            return False
        self._seen[key] = False
        found = False
        if isinstance(obj, types.FunctionType):
            library = _library(obj)
            for cell in obj.__closure__ or ():
                try:
                    contents = cell.cell_contents
                except ValueError:  # an empty cell (a name not yet bound)
                    continue
                if not (library and self._leaf(contents) == "value"):  # a library's options are never rebound
                    found |= self._link(cell, None, contents)
            g = obj.__globals__
            for name in () if library else _names(obj.__code__):
                if name in g:
                    found |= self._link(g, name, g[name])
            for d in obj.__defaults__ or ():
                found |= self._visit(d)
            if obj.__kwdefaults__:
                found |= self._visit(obj.__kwdefaults__)
        elif isinstance(obj, types.MethodType):
            found = self._visit(obj.__self__) | self._visit(obj.__func__)
        elif isinstance(obj, functools.partial):
            found = self._visit(obj.func) | self._visit(obj.args) | self._visit(obj.keywords)
        elif isinstance(obj, tuple):
            if len(obj) <= MAX_CONTAINER:
                for x in obj:
                    found |= self._visit(x)
        elif isinstance(obj, list):
            if len(obj) <= MAX_CONTAINER:
                for i, x in enumerate(obj):
                    found |= self._link(obj, i, x)
                if found:
                    self._values.append((obj, len, len(obj)))
        elif isinstance(obj, dict):
            if len(obj) <= MAX_CONTAINER:
                for k, x in list(obj.items()):
                    found |= self._link(obj, k, x)
        elif not (_library(type(obj)) and type(obj).__module__.startswith("crossgrad")):
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                found = self._visit(attrs)
                if found:
                    self._links.append((obj, "__dict__", attrs))
        self._seen[key] = found
        return found

    def holds(self) -> bool:
        """Whether every link still leads to the object (or an equal value) it led to."""
        for holder, key, obj in self._links:
            if _get(holder, key) is not obj:
                return False
        for holder, key, value in self._values:
            now = _get(holder, key)
            if now is not value and (type(now) is not type(value) or now != value):
                return False
        return True


_MISSING = object()


def _get(holder: Any, key: Any) -> Any:
    if isinstance(holder, types.CellType):
        try:
            return holder.cell_contents
        except ValueError:
            return _MISSING
    if key is len:
        return len(holder)
    if key == "__dict__" and not isinstance(holder, (dict, list)):
        return getattr(holder, "__dict__", _MISSING)
    try:
        return holder[key]
    except (KeyError, IndexError, TypeError):
        return _MISSING
