"""hessian: the Jacobian of the Jacobian, with the composition chosen per backend.

NOTE [hessian strategy]: ``strategy="outer-inner"`` is ``jacobian(jacobian(f,
mode=inner), mode=outer)``: ``"fwd-rev"`` is forward over reverse (what
``torch.func.hessian`` and ``jax.hessian`` compute), ``"loop"`` is the row loop over
the row loop.  ``"auto"`` picks per backend, from measurements (fp32; the anchors in
``benchmarks/README.md`` and ``make bench``'s ``hessian`` cases):

* torch (eager ``torch.func``): ``"fwd-rev"`` always.  It was fastest or within 3% on
  every measured shape on an H200 (tanh-linear B=64 31→33: 2.66 ms vs rev-rev 2.59,
  fwd-fwd 3.19; 512→32: 6.16 ms vs fwd-fwd 17.6; scalar MLP: 5.13 ms vs rev-rev 10.4,
  fwd-fwd 131) and on a 2-core CPU (rev-rev 30-100x slower).
* jax (``jax.jit``): ``"fwd-fwd"`` when the output has more than one element,
  ``"fwd-rev"`` for a scalar output.  Vector outputs: fwd-fwd 0.86 ms vs fwd-rev
  2.54 ms (tanh-linear B=64 512→32, H200), 0.112 vs 0.135 ms (31→33), and 7x
  faster on the 2-core CPU; scalar outputs: fwd-fwd loses 15-25x (scalar MLP
  17.6 ms vs 1.04 ms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossgrad import spec
from crossgrad.backends.base import Backend
from crossgrad.transforms.common import Call, Memo, size_of, use_builtin


def auto_strategy(backend_name: str, out_size: Callable[[], int]) -> str:
    """The measured per-backend rule of NOTE [hessian strategy] (``out_size`` is asked
    for only where the rule depends on it)."""
    if backend_name == "jax" and out_size() > 1:
        return "fwd-fwd"
    return "fwd-rev"


class Hessians:
    """hessian."""

    backend: Backend

    def hessian(self, f: Callable, argnums: spec.Argnums = 0, has_aux: bool = False, strategy: str = "auto",
                chunk_size: int | None = None, *, impl: str = "auto") -> Callable:
        """Hessian: the Jacobian of the Jacobian.

        Returns a function with ``f``'s arguments returning, for each output leaf of
        shape ``out`` and input leaves of shapes ``in_i``, ``in_j``, arrays of shape
        ``out + in_i + in_j``, nested as output pytree, argnums ``i``, argument pytree,
        argnums ``j``, argument pytree (JAX's nesting: a tuple ``argnums`` gives blocks
        ``H[i][j]``).  A scalar output gives the usual ``in + in`` matrix; array outputs
        give one Hessian per output element, as ``jax.hessian`` and
        ``torch.func.hessian`` do.  ``(hessian, aux)`` with ``has_aux``.

        Args:
            strategy: ``"fwd-rev"``, ``"rev-rev"``, ``"rev-fwd"``, ``"fwd-fwd"`` (outer
                over inner mode), ``"loop"`` (the reference) or ``"auto"``: on torch
                ``"fwd-rev"``; on jax ``"fwd-fwd"`` for outputs with more than one
                element and ``"fwd-rev"`` for scalars (measurements in
                NOTE [hessian strategy], :mod:`crossgrad.transforms.hessians`).
            chunk_size: bounds the basis vectors of each of the two Jacobians.
            impl: ``"builtin"`` builds the strategy from the framework's jacrev/jacfwd
                (``"fwd-rev"`` is ``torch.func.hessian`` / ``jax.hessian``), ``"composed"``
                from crossgrad's.

        Example:
            >>> import torch, crossgrad as cg
            >>> cg.torch.hessian(lambda x: (x ** 3).sum())(torch.tensor([1.0, 2.0]))
            tensor([[ 6.,  0.],
                    [ 0., 12.]])
        """
        return self._hessian("hessian", f, argnums, has_aux, strategy, chunk_size, impl)

    def _hessian(self, name: str, f: Callable, argnums: Any, has_aux: bool, strategy: str,
                 chunk_size: int | None, impl: str) -> Callable:
        spec.check_callable(name, f)
        spec.validate_options(name, argnums=argnums, has_aux=has_aux, strategy=strategy, chunk_size=chunk_size,
                              impl=impl)
        backend = self.backend
        built: dict[str, Callable] = {}
        chosen: dict[tuple, str] = {}

        def for_strategy(s: str) -> Callable:
            if s not in built:
                if s == "fwd-rev" and use_builtin(name, backend, impl, "hessian", chunk_size=chunk_size):
                    make = backend.builtins.hessian
                    built[s] = self._via_builtin(name, lambda g, nums: make(g, nums, has_aux, chunk_size), f,
                                                 argnums, has_aux, scalar=False)
                else:
                    outer, inner = ("loop", "loop") if s == "loop" else s.split("-")
                    inner_f = self._jacobian(name, f, argnums, has_aux, inner, chunk_size, impl)
                    built[s] = self._jacobian(name, inner_f, argnums, has_aux, outer, chunk_size, impl)
            return built[s]

        memo = Memo()

        def hessian_f(*args: Any, **kwargs: Any) -> Any:
            s = strategy
            if s == "auto":
                key = Memo.key(args)
                s = memo.get(key)
                if s is None:
                    call = Call(name, backend, f, args, kwargs, argnums, has_aux)
                    sig = call.signature()
                    if sig not in chosen:
                        chosen[sig] = auto_strategy(backend.name, lambda: sum(
                            size_of(shape) for shape in backend.primitives.output_shapes(call.flat_output, call.primals)))
                    s = memo.put(key, chosen[sig])
            return for_strategy(s)(*args, **kwargs)

        return hessian_f
