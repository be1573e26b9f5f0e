"""Both backends satisfy the written backend contract (crossgrad/backends/contract.py):
every required name, the same parameters on both, nothing public outside the contract."""

from __future__ import annotations

import importlib
import inspect

import pytest

from crossgrad.backends import contract
from crossgrad.testing import frameworks

pytestmark = pytest.mark.skipif(len(frameworks.selected()) < 2, reason="compares both backends")


def public(module) -> set[str]:
    return {n for n, v in vars(module).items() if not n.startswith("_")
            and ((inspect.isfunction(v) and v.__module__ == module.__name__) or n.isupper())}


@pytest.mark.parametrize("name", sorted(contract.REQUIRED))
def test_both_backends_satisfy_the_contract(name):
    modules = {b: importlib.import_module(f"crossgrad.backends.{b}.{name}") for b in ("torch", "jax")}
    required, optional = set(contract.REQUIRED[name]), set(contract.OPTIONAL.get(name, ()))
    for backend, module in modules.items():
        names = public(module) - {"Array"}
        assert required <= names, f"{backend}.{name} lacks {sorted(required - names)}"
        assert names <= required | optional, f"{backend}.{name} has {sorted(names - required - optional)} outside the contract"
    for n in sorted(required):
        a, b = getattr(modules["torch"], n), getattr(modules["jax"], n)
        if inspect.isfunction(a):
            assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), n
