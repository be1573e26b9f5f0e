"""torch.func's own transforms behind crossgrad's signatures.

``LACKS`` lists the options a built-in does not have; with ``impl="auto"`` crossgrad
then uses its own composition, with ``impl="builtin"`` it raises
:class:`crossgrad.errors.UnsupportedOptionError`.  ``torch.func.hessian`` has no
``has_aux``; the built-in Hessian with aux is ``jacfwd(jacrev(f, has_aux=True),
has_aux=True)``, which is what ``torch.func.hessian`` computes.  ``hvp`` has no
built-in in ``torch.func``: its built-in is the documented recipe ``jvp(grad(f))``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.func as tf

# torch.func.jacfwd refuses complex outputs of real inputs; crossgrad's vmap of jvp answers.
COMPLEX_FORWARD = False

# torch.func's transforms refuse None leaves in their arguments; crossgrad's compositions take them.
NONE_LEAVES = False

# torch.func.vmap breaks a negative out_dims on an output that does not depend on the batch.
NEGATIVE_OUT_AXES = False

LACKS: dict[str, tuple[str, ...]] = {
    "jacfwd": ("chunk_size",),
    "hessian": ("chunk_size",),
}



def grad(f: Callable[..., Any], argnums: Any, has_aux: bool) -> Callable[..., Any]:
    return tf.grad(f, argnums=argnums, has_aux=has_aux)


def value_and_grad(f: Callable[..., Any], argnums: Any, has_aux: bool) -> Callable[..., Any]:
    grad_and_value = tf.grad_and_value(f, argnums=argnums, has_aux=has_aux)

    def value_and_grad_f(*args: Any) -> tuple[Any, Any]:
        g, v = grad_and_value(*args)
        return v, g

    return value_and_grad_f


def vjp(f: Callable[..., Any], primals: tuple[Any, ...], has_aux: bool) -> tuple[Any, ...]:
    return tf.vjp(f, *primals, has_aux=has_aux)


def jvp(f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...], has_aux: bool) -> tuple[Any, ...]:
    return tf.jvp(f, primals, tangents, has_aux=has_aux)


def linearize(f: Callable[..., Any], primals: tuple[Any, ...]) -> tuple[Any, Callable[..., Any]]:
    return tf.linearize(f, *primals)


def vmap(f: Callable[..., Any], in_axes: Any, out_axes: Any, chunk_size: int | None, randomness: str = "error") -> Callable[..., Any]:
    return tf.vmap(f, in_dims=in_axes, out_dims=out_axes, chunk_size=chunk_size, randomness=randomness)


def jacrev(f: Callable[..., Any], argnums: Any, has_aux: bool, chunk_size: int | None) -> Callable[..., Any]:
    return tf.jacrev(f, argnums=argnums, has_aux=has_aux, chunk_size=chunk_size)


def jacfwd(f: Callable[..., Any], argnums: Any, has_aux: bool, chunk_size: int | None) -> Callable[..., Any]:
    # One draw for all the basis vectors of one Jacobian: the derivative of one realization.
    return tf.jacfwd(f, argnums=argnums, has_aux=has_aux, randomness="same")


def hessian(f: Callable[..., Any], argnums: Any, has_aux: bool, chunk_size: int | None) -> Callable[..., Any]:
    # torch.func.hessian is jacfwd(jacrev), with jacfwd's randomness="error": one draw per
    # Hessian ("same") instead, as for the Jacobians.
    return tf.jacfwd(tf.jacrev(f, argnums=argnums, has_aux=has_aux), argnums=argnums, has_aux=has_aux,
                     randomness="same")


# The routes jit has on torch (NOTE [jit routes] in crossgrad.transforms.compiled).
JIT_ROUTES = ("auto", "measure", "compile", "trace", "trace-compile", "trace-cudagraph")


def compile(f: Callable[..., Any], options: dict[Any, Any]) -> Callable[..., Any]:
    return torch.compile(f, **options)


def compile_traced(graph: Any, options: dict[Any, Any], example: tuple[Any, ...]) -> Callable[..., Any]:
    """A traced aten graph (``cg.jit``'s trace-compile route) compiled by inductor.  Without
    compiler options and where autograd records nothing through the call, inductor compiles
    the graph directly: crossgrad's own signature check already keys the graph to its
    shapes, so dynamo's per-call guards are not needed (they cost 35-40 us a call: a sparse
    Jacobian's 0.10 ms became 0.06 ms).  Otherwise ``torch.compile``, which handles autograd."""
    constants = [getattr(graph, n.target) for n in graph.graph.nodes if n.op == "get_attr"]
    records = torch.is_grad_enabled() and any(
        t.requires_grad for t in (*example, *constants) if isinstance(t, torch.Tensor))
    if options or records:
        return torch.compile(graph, **options)
    from torch._inductor.compile_fx import compile_fx

    # On a copy of the graph: inductor rewrites the graph it is given, and the traced route
    # replays the original.
    compiled: Any = compile_fx(torch.fx.GraphModule(graph, copy.deepcopy(graph.graph)), list(example))

    def run(*args: Any) -> Any:
        return compiled(*args)

    return run


def is_model(x: Any) -> bool:
    """Whether ``x`` is a model the transforms take by its parameters (NOTE [models as
    arguments], :mod:`crossgrad.transforms.models`)."""
    return isinstance(x, torch.nn.Module)


def parameters_of(model: Any) -> dict[str, Any]:
    """The model's parameters by name, in the model's order."""
    return dict(model.named_parameters())


def stateless(f: Callable[..., Any], models: dict[int, Any], statistics: str = "read") -> Callable[..., Any]:
    """``f`` as a function of the parameters of the ``models`` at their positions: called
    with a dict of parameters at each such position, it runs ``f`` on the models themselves
    with those values in place of their own (``torch.func.functional_call`` on a module
    that holds them: every call, submodule, method and attribute of the model sees them).

    ``statistics="read"``: a training-mode BatchNorm normalizes with the batch's statistics
    and leaves its running statistics alone (the transforms update them once per call
    eagerly, NOTE [statistics once per call]); ``"update"``: it updates them as eager
    execution does (a traced program records the write)."""

    class Apply(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for p, model in models.items():
                self.add_module(f"m{p}", model)

        def forward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            full = list(args)
            for p in models:
                full[p] = getattr(self, f"m{p}")
            return f(*full, **kwargs)

    holder = Apply()
    norms = _norms(tuple(models.values())) if statistics == "read" else []

    def with_parameters(*args: Any, **kwargs: Any) -> Any:
        values = {f"m{p}.{name}": v for p in models for name, v in args[p].items()}
        tracking = [m for m in norms if m.training and m.track_running_stats]
        if not tracking:
            return tf.functional_call(holder, values, (args, kwargs))
        # BatchNorm reads batch statistics, writing nothing, when it tracks none: the
        # computation training mode differentiates, without the write torch.func refuses.
        try:
            for m in tracking:
                m.track_running_stats = False
            return tf.functional_call(holder, values, (args, kwargs))
        finally:
            for m in tracking:
                m.track_running_stats = True

    with_parameters.__name__ = with_parameters.__qualname__ = getattr(f, "__name__", "f")
    return with_parameters


def _norms(models: tuple[Any, ...]) -> list[Any]:
    """The BatchNorm layers of ``models`` (InstanceNorm writes its statistics whatever it
    tracks: left to the transforms' named error)."""
    return [m for model in models for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def updates_statistics(models: tuple[Any, ...]) -> bool:
    """Whether calling the ``models`` updates running statistics (a training-mode BatchNorm)."""
    return any(m.training and m.track_running_stats for m in _norms(models))


def without_gradients(run: Callable[[], Any]) -> Any:
    """``run()`` with no autograd graph recorded."""
    with torch.no_grad():
        return run()


def trace(f: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """``f(*args)`` run once for real and recorded as a graph of the aten operations it
    dispatches (``make_fx`` with real tensors: torch.func's transforms run for real and
    only their operations are recorded; a data-dependent Python branch raises), with the
    call's own outputs (NOTE [one traced call], :mod:`crossgrad.backends.torch.tracing`)."""
    from crossgrad.backends.torch import tracing

    return tracing.Trace(f, args)


def replay(traced: Any, run: Callable[..., Any], args: tuple[Any, ...]) -> Callable[..., Any]:
    """``run`` (``traced`` or its compiled form: a function of tensors returning a tuple of
    tensors) captured once into a CUDA graph and replayed: each call copies its inputs
    into the graph's static buffers, replays every kernel with one launch, and returns
    copies of the outputs (a later replay overwrites the graph's own).

    Refused (ValueError) where a replay would change the meaning: inputs off the GPU,
    or autograd recording through the call (a graph replay records nothing).
    """
    if not args or not all(a.is_cuda for a in args):
        raise ValueError("a CUDA graph needs every input on the GPU")
    constants = [getattr(traced, n.target) for n in traced.graph.nodes if n.op == "get_attr"]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*args, *constants) if isinstance(t, torch.Tensor)):
        raise ValueError("autograd records through this call (a tensor requires grad), which a CUDA graph replay "
                         "would not")
    static = [a.clone() for a in args]
    side = torch.cuda.Stream()  # type: ignore[no-untyped-call]  # torch's constructor is unannotated
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):  # warm-up outside the capture (allocator, autotuning)
            run(*static)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = run(*static)

    def replayed(*inputs: Any) -> tuple[Any, ...]:
        for buffer, x in zip(static, inputs):
            buffer.copy_(x)
        graph.replay()
        return tuple(o.clone() for o in outputs)

    return replayed
