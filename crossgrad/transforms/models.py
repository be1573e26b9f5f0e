"""Framework models as arguments: a torch ``nn.Module`` passed where arrays are expected.

NOTE [models as arguments]: on jax a model (an Equinox module, a Flax NNX state) is a
pytree, so every transform already takes it.  A torch ``nn.Module`` is not: its parameters
live in the module.  So a module passed as a positional argument of a transformed function
(or among the primals of ``vjp``, ``jvp``, ``hvp``...) is replaced, before the transform
sees it, by the dict of its parameters (``named_parameters()``, in the module's order), and
the function by one that runs the original with those values put in place of the module's
own (``torch.func.functional_call``): the function is given the module itself, so its
calls, submodules, methods and attributes all see the values being differentiated.  A
derivative with respect to the module is therefore a dict keyed by parameter name.  Buffers
stay the module's (functional_call's semantics): in eval mode they are read and left alone.
``argnums`` and
``in_axes`` name the module's position as they would any argument (``None`` for a model
shared by the batch).  The replacement is made once per transformed function and module.

NOTE [statistics once per call]: a training-mode BatchNorm normalizes with the batch's
statistics and updates its running statistics in place, a write torch.func refuses inside
a transform (and one a vmapped or nested evaluation would repeat).  So the transforms
differentiate the computation training mode does (batch statistics) with the write left
out, and then update the statistics once per call as eager execution does: ``f`` evaluated
once more, eagerly and without gradients, on the caller's arguments (under a batched
transform once per sample, in order: the loop a batched transform stands for).  ``cg.jit``
keeps the write in its traced program instead (``statistics="update"``: no second
evaluation).  InstanceNorm, which writes whatever it tracks, keeps the named error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossgrad.backends.base import Backend


def positions(backend: Backend, args: tuple[Any, ...]) -> tuple[int, ...]:
    """The positions in ``args`` that hold a model the backend lifts (none on jax)."""
    is_model = backend.builtins.is_model
    return tuple(i for i, a in enumerate(args) if is_model(a))


class Lifted:
    """The functions ``f`` lifted to take the parameters of the models at given positions,
    made once per (positions, models)."""

    MAXSIZE = 64

    def __init__(self, backend: Backend, f: Callable[..., Any], statistics: str = "read"):
        self.backend, self.f, self.statistics = backend, f, statistics
        self._made: dict[tuple[Any, ...], Any] = {}

    def of(self, args: tuple[Any, ...], where: tuple[int, ...],
           make: Callable[[Callable[..., Any]], Any] = lambda g: g) -> tuple[Any, tuple[Any, ...]]:
        """``(make(g), lifted_args)``: ``g`` the function of the parameters, ``lifted_args``
        ``args`` with each model replaced by its parameters; ``make`` builds what is kept
        per model (a transform of ``g``)."""
        models = {p: args[p] for p in where}
        key = (where, tuple(id(m) for m in models.values()))
        made = self._made.get(key)
        if made is None or any(a is not b for a, b in zip(made[0], models.values())):
            if len(self._made) >= self.MAXSIZE:
                self._made.clear()
            made = self._made[key] = (tuple(models.values()), make(self.backend.builtins.stateless(self.f, models, self.statistics)))
        parameters_of = self.backend.builtins.parameters_of
        return made[1], tuple(parameters_of(a) if i in models else a for i, a in enumerate(args))

    def settle(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], where: tuple[int, ...],
               in_axes: Any = None, batched: bool = False) -> None:
        """The running statistics updated as eager execution of this call would (NOTE
        [statistics once per call]); nothing where the models at ``where`` update none."""
        builtins = self.backend.builtins
        if self.statistics != "read" or not builtins.updates_statistics(tuple(args[p] for p in where)):
            return
        if batched:
            from crossgrad.transforms.batched import samples

            size, sample = samples(self.backend, name, in_axes, args)
            calls = [sample(i) for i in range(size)]
        else:
            calls = [args]

        def run() -> None:
            for sample in calls:
                self.f(*sample, **kwargs)

        builtins.without_gradients(run)
