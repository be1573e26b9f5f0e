"""The namespaces' attributes and the typed signatures of the top-level transforms, written
from the catalog.

The namespace class (:class:`crossgrad.transforms.namespace.Namespace`) has one ``Bound``
attribute per transform and tool, binding the function in the module
``spec.TRANSFORM_ROOMS`` / ``spec.TOOL_ROOMS`` names: written out so that a type checker
sees each one's signature, and written by :func:`namespace_block` from the catalog.

``crossgrad/__init__.py`` makes its transforms at run time from ``spec.TRANSFORMS`` and
``spec.TOOLS`` (one loop); a type checker cannot see those, so the same names are declared
there under ``TYPE_CHECKING``, each with the signature of the backend function the
namespaces bind (its choices as ``Literal`` types from :mod:`crossgrad.spec`).  That block is
written by :func:`block` and kept true by a test (``tests/test_api.py``); after changing a
transform's signature, rewrite it with ``python -m crossgrad.testing.signatures``.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

BEGIN = "# BEGIN typed signatures (python -m crossgrad.testing.signatures writes this block)\n"
END = "# END typed signatures\n"
NAMESPACE_BEGIN = "    # BEGIN namespace attributes (python -m crossgrad.testing.signatures writes this block)\n"
NAMESPACE_END = "    # END namespace attributes\n"
# The names the annotations use, and where the block imports them from.
IMPORTS = {
    "Pattern": "crossgrad.sparsity.patterns",
    "GaussNewtonOperator": "crossgrad.transforms.gauss_newton",
    "Namespace": "crossgrad.transforms.namespace",
    "HessianOperator": "crossgrad.transforms.operators",
}


def _default(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _signature(name: str) -> str:
    from crossgrad.transforms.namespace import Namespace

    fn = Namespace.__dict__[name].fn
    params = list(inspect.signature(fn).parameters.values())[1:]  # without the backend
    parts: list[str] = []
    star = False
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        text = ("*" if p.kind is p.VAR_POSITIONAL else "") + f"{p.name}: {p.annotation}"
        star = star or p.kind is p.VAR_POSITIONAL
        if p.default is not p.empty:
            text += f" = {_default(p.default)}"
        parts.append(text)
    returns = inspect.signature(fn).return_annotation
    return f"    def {name}({', '.join(parts)}) -> {returns}: ...\n"


def block() -> str:
    """The ``TYPE_CHECKING`` block of ``crossgrad/__init__.py``, from the catalog."""
    from crossgrad import spec

    lines = [BEGIN, "if TYPE_CHECKING:\n"]
    lines += [f"    from {module} import {name}\n" for name, module in sorted(IMPORTS.items(), key=lambda kv: kv[1])]
    lines += ["\n", "    torch: Namespace\n", "    jax: Namespace\n", "\n"]
    lines += [_signature(name) for name in (*spec.TRANSFORMS, *spec.TOOLS)]
    lines += ["else:\n", "    for _name in (*spec.TRANSFORMS, *spec.TOOLS):\n",
              "        globals()[_name] = _top_level(_name)\n", END]
    return "".join(lines)


def namespace_block() -> str:
    """The ``Bound`` attributes of the namespace class, from the catalog."""
    from crossgrad import spec

    rooms = {**spec.TRANSFORM_ROOMS, **spec.TOOL_ROOMS}
    return "".join([NAMESPACE_BEGIN, *(f"    {name} = Bound({room}.{name})\n" for name, room in rooms.items()),
                    NAMESPACE_END])


def _rewrite(path: Path, begin: str, end: str, written: str) -> None:
    text = path.read_text()
    start, stop = text.index(begin), text.index(end) + len(end)
    path.write_text(text[:start] + written + text[stop:])
    print(f"written: {path}", file=sys.stderr)


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    # The namespace first: the top level's block reads its functions' signatures.
    _rewrite(root / "transforms" / "namespace.py", NAMESPACE_BEGIN, NAMESPACE_END, namespace_block())
    _rewrite(root / "__init__.py", BEGIN, END, block())
    return 0


if __name__ == "__main__":
    sys.exit(main())
