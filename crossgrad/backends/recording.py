"""What a backend's ``taylor.record`` returns: one call's program as a list of operations
(framework-free).  The Taylor engines (:mod:`crossgrad.transforms.taylor`,
:mod:`crossgrad.transforms.taylor4`) walk it; the backends write it, so it lives with them
and imports run one way (transforms -> backends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Unrecorded(Exception):
    """The backend cannot record this program for the forward propagation."""


class Entry:
    """One recorded operation: ``call(*values)`` returns its output leaves (a list).

    ``keys[i]`` names the value at input position ``i`` (None for a constant, whose value
    is ``values[i]``); ``out_keys`` name the outputs; ``results`` are the outputs when the
    recording computed them already (torch), else None (jax: computed here).
    """

    __slots__ = ("call", "info", "keys", "name", "out_keys", "results", "values")

    def __init__(self, name: str, call: Callable[..., Any], keys: list[Any], values: list[Any], out_keys: list[Any],
                 results: list[Any] | None, info: Any = None):
        self.name, self.call, self.keys, self.values = name, call, keys, values
        self.out_keys, self.results, self.info = out_keys, results, info


class Recording:
    """A program as a list of :class:`Entry`: ``inputs`` are the keys of its inputs,
    ``outputs`` the keys (or constant values) of its output leaves, ``treedef`` their
    structure, ``values`` the outputs when already computed, ``types`` their shapes and dtype
    names where known without computing them (a traced program's abstract outputs)."""

    def __init__(self, inputs: list[Any], entries: list[Entry], outputs: list[Any], treedef: Any,
                 values: list[Any] | None = None, types: list[tuple[tuple[int, ...], str]] | None = None):
        self.inputs, self.entries, self.outputs, self.treedef, self.values = inputs, entries, outputs, treedef, values
        self.types = types


__all__ = ["Entry", "Recording", "Unrecorded"]
