"""batched_jacobian and batched_hessian: per-sample derivatives, vmap outside.

Mapping the per-sample transform (rather than differentiating the batched
function) computes only the diagonal blocks: sample ``b``'s output against sample
``b``'s input.  The cross-sample blocks, zero for independent samples, are never
formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossgrad import spec
from crossgrad.backends.base import Backend


def _split_chunks(chunk_size: Any) -> tuple[Any, Any]:
    """(per-sample chunks, batch chunks): ``"auto"`` chunks the batch, an int the basis."""
    return (None, "auto") if chunk_size == "auto" else (chunk_size, None)


class Batched:
    """batched_jacobian, batched_hessian."""

    backend: Backend

    def batched_jacobian(self, f: Callable, argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False,
                         mode: str = "auto", chunk_size: int | str | None = None, *, impl: str = "auto",
                         devices: Any = None, gather: bool = False) -> Callable:
        """Per-sample Jacobians: ``vmap(jacobian(f, argnums, ...), in_axes)``.

        ``f`` is written for one sample; ``in_axes`` says which arguments carry the
        batch (None for shared ones, such as weights).  For output leaves of
        per-sample shape ``out`` and inputs of per-sample shape ``in`` the result has
        shape ``(B, *out, *in)``; aux, with ``has_aux``, is batched too.  ``mode`` is
        that of :meth:`jacobian`; an int ``chunk_size`` bounds the basis vectors per
        sample, ``"auto"`` bounds the samples computed at once by the memory budget
        (:func:`crossgrad.memory_budget`; the per-sample work is what grows with the batch).
        ``devices`` and ``gather`` spread the batch over devices as in :meth:`vmap`.

        Example:
            >>> import torch, crossgrad as cg
            >>> W, b, x = torch.randn(33, 31), torch.randn(33), torch.randn(64, 31)
            >>> f = lambda W, b, x: torch.tanh(W @ x + b)
            >>> cg.torch.batched_jacobian(f, argnums=2, in_axes=(None, None, 0))(W, b, x).shape
            torch.Size([64, 33, 31])
        """
        name = "batched_jacobian"
        spec.validate_options(name, in_axes=in_axes)
        inner, outer = _split_chunks(chunk_size)
        per_sample = self._jacobian(name, f, argnums, has_aux, mode, inner, impl)
        return self._vmap(name, per_sample, in_axes, 0, outer, impl, devices, gather)

    def batched_hessian(self, f: Callable, argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False,
                        strategy: str = "auto", chunk_size: int | str | None = None, *, impl: str = "auto",
                        devices: Any = None, gather: bool = False) -> Callable:
        """Per-sample Hessians: ``vmap(hessian(f, argnums, ...), in_axes)``.

        Shapes ``(B, *out, *in, *in)``; ``strategy`` is that of :meth:`hessian`,
        ``chunk_size``, ``devices`` and ``gather`` as in :meth:`batched_jacobian`.

        Example:
            >>> import torch, crossgrad as cg
            >>> W, b, x = torch.randn(33, 31), torch.randn(33), torch.randn(64, 31)
            >>> f = lambda W, b, x: torch.tanh(W @ x + b)
            >>> cg.torch.batched_hessian(f, argnums=2, in_axes=(None, None, 0))(W, b, x).shape
            torch.Size([64, 33, 31, 31])
        """
        name = "batched_hessian"
        spec.validate_options(name, in_axes=in_axes)
        inner, outer = _split_chunks(chunk_size)
        per_sample = self._hessian(name, f, argnums, has_aux, strategy, inner, impl)
        return self._vmap(name, per_sample, in_axes, 0, outer, impl, devices, gather)
