"""The graph-style API of the seed notebook's ``from hessian import hessian, jacobian``,
vectorized, for torch.

Build the graph first, then pass the output tensor(s) and the leaf input(s)::

    >>> import torch
    >>> from crossgrad.graph import hessian, jacobian
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> y = (x ** 3).sum()
    >>> hessian(y, x)
    tensor([[ 6.,  0.],
            [ 0., 12.]])

Each function pushes a whole block of basis vectors through one batched
``torch.autograd.grad`` call (``is_grads_batched=True``, chunked by ``chunk_size``)
instead of one backward call per element.  jax has no graph to hand over: for jax
arrays use the functional API (:func:`crossgrad.jacobian`, :func:`crossgrad.hessian`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch

from crossgrad import errors, tolerances

Tensors = torch.Tensor | Sequence[torch.Tensor]


def _as_list(name: str, transform: str, x: Tensors) -> list[torch.Tensor]:
    items = [x] if isinstance(x, torch.Tensor) else list(x)
    if not items or not all(isinstance(t, torch.Tensor) for t in items):
        raise errors.OptionTypeError(transform, f"{name} as a tensor or a non-empty list of tensors",
                                     f"{type(x).__name__}", f"Pass torch tensors as {name}.")
    return items


def _check_inputs(transform: str, inputs: list[torch.Tensor]) -> None:
    for k, t in enumerate(inputs):
        if not t.requires_grad:
            raise errors.GraphInputError(transform, "inputs that require grad (leaves the output was built from)",
                                         f"input {k} with requires_grad=False",
                                         "Call x.requires_grad_() before building the output from x.")


def _check_used(transform: str, grads: Sequence[torch.Tensor | None]) -> None:
    unused = [k for k, g in enumerate(grads) if g is None]
    if unused:
        raise errors.GraphInputError(
            transform, "inputs the output depends on", f"input {unused[0]}, which the output does not use",
            "Pass allow_unused=True to get zero rows and columns for it, or drop it from inputs.")


def _flat(parts: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor], batch: int | None = None) -> torch.Tensor:
    """Gradients (None for unused inputs) as one flat vector, or (batch, N) rows."""
    lead = () if batch is None else (batch,)
    return torch.cat([
        (p if p is not None else torch.zeros(*lead, *x.shape, dtype=x.dtype, device=x.device)).reshape(*lead, -1)
        for p, x in zip(parts, like)
    ], dim=-1)


def _basis_chunks(n: int, chunk_size: int | None, like: torch.Tensor) -> Iterator[torch.Tensor]:
    """The rows of the n x n identity, ``chunk_size`` at a time (all at once for None)."""
    step = n if chunk_size is None else chunk_size
    for start in range(0, n, step):
        stop = min(n, start + step)
        basis = torch.zeros(stop - start, n, dtype=like.dtype, device=like.device)
        basis[torch.arange(stop - start), torch.arange(start, stop)] = 1
        yield basis


def _rows(flat_out: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool, chunk_size: int | None,
          transform: str, allow_unused: bool) -> torch.Tensor:
    """The (M, N) matrix d flat_out / d inputs, M rows pushed through batched backward calls."""
    m = flat_out.numel()
    n = sum(x.numel() for x in inputs)
    if m == 0 or not flat_out.requires_grad:
        return torch.zeros(m, n, dtype=flat_out.dtype, device=flat_out.device)
    blocks = []
    for basis in _basis_chunks(m, chunk_size, flat_out):
        try:
            grads: tuple[Any, ...] = torch.autograd.grad(flat_out, inputs, basis, retain_graph=True, create_graph=create_graph,
                                        allow_unused=True, is_grads_batched=True)
        except RuntimeError:
            # A backward that cannot be batched (a custom Function computing in NumPy):
            # one backward call per row, the notebook's method.
            rows = [torch.autograd.grad(flat_out, inputs, row, retain_graph=True, create_graph=create_graph,
                                        allow_unused=True) for row in basis]
            grads = tuple(None if all(r[i] is None for r in rows) else
                          torch.stack([r[i] if r[i] is not None else torch.zeros_like(x) for r in rows])
                          for i, x in enumerate(inputs))
        if not allow_unused:
            _check_used(transform, grads)
        blocks.append(_flat(grads, inputs, batch=basis.shape[0]))
    return torch.cat(blocks, dim=0)


def _columns(flat_out: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool,
             chunk_size: int | None) -> torch.Tensor:
    """The same (M, N) matrix, N columns at a time: forward mode from the graph alone.

    ``g(u) = d(flat_out . u)/d inputs`` is linear in ``u``; its derivative with respect to
    ``u`` along the input basis vector ``e_j`` is column ``j`` of the Jacobian.  Cheaper
    than the rows when the inputs have fewer elements than the outputs (32->2048:
    ~2 ms against ~100 ms for 2048 batched rows on 2 CPU cores).
    """
    n = sum(x.numel() for x in inputs)
    u = torch.zeros_like(flat_out, requires_grad=True)
    grads = torch.autograd.grad(flat_out, inputs, u, create_graph=True, allow_unused=True)
    g = _flat(grads, inputs)
    if not g.requires_grad:
        return None  # type: ignore[return-value]  # the backward graph is not differentiable (a custom Function's backward)
    blocks = [
        torch.autograd.grad(g, u, basis, retain_graph=True, create_graph=create_graph, is_grads_batched=True)[0]
        for basis in _basis_chunks(n, chunk_size, g)
    ]
    return torch.cat(blocks, dim=0).T


def _checked_columns(flat_out: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool,
                     chunk_size: int | None) -> torch.Tensor | None:
    """The columns, or None where they cannot be trusted.

    The column route differentiates the backward graph.  A custom autograd Function
    whose backward is not itself differentiable (computed in NumPy, or
    ``once_differentiable``) breaks that: its part of the Jacobian would come out as zeros
    (or the second pass raises).  So the columns are checked against one ordinary
    backward pass: ``p @ J`` must equal the vjp with ``p`` (a fixed pseudo-random
    vector, drawn from a private generator); where it does not, the caller takes the rows.
    """
    try:
        columns = _columns(flat_out, inputs, create_graph, chunk_size)
    except RuntimeError:  # once_differentiable refuses the second pass
        return None
    if columns is None:
        return None
    gen = torch.Generator(device=flat_out.device).manual_seed(0)
    probe = torch.randn(flat_out.shape, generator=gen, dtype=flat_out.dtype, device=flat_out.device)
    expected = _flat(torch.autograd.grad(flat_out, inputs, probe, retain_graph=True, allow_unused=True), inputs)
    got = probe @ columns.detach()
    scale = max(float(expected.abs().max()), float(got.abs().max()), torch.finfo(flat_out.dtype).tiny)
    rtol = tolerances.of(str(flat_out.dtype).removeprefix("torch.")).identity  # two routes to one quantity
    if float((got - expected.detach()).abs().max()) > rtol * scale:
        return None
    return columns


def jacobian(outputs: Tensors, inputs: Tensors, create_graph: bool = False,
             chunk_size: int | None = None) -> torch.Tensor:
    """The Jacobian of ``outputs`` with respect to ``inputs``, as one 2-D tensor.

    Shape ``(total output elements, total input elements)``, outputs and inputs each
    flattened and concatenated in the order given.  Inputs the outputs do not use give
    zero columns.  ``create_graph=True`` keeps the result differentiable.  With fewer
    input than output elements the columns are computed (forward mode obtained from two
    backward passes), otherwise the rows; ``chunk_size`` bounds how many go through one
    batched backward call.

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> jacobian(x ** 2, x)
        tensor([[2., 0.],
                [0., 4.]])
    """
    outs = _as_list("outputs", "graph.jacobian", outputs)
    ins = _as_list("inputs", "graph.jacobian", inputs)
    _check_inputs("graph.jacobian", ins)
    flat_out = torch.cat([o.reshape(-1) for o in outs])
    if flat_out.requires_grad and 0 < sum(x.numel() for x in ins) < flat_out.numel():
        columns = _checked_columns(flat_out, ins, create_graph, chunk_size)
        if columns is not None:
            return columns
    return _rows(flat_out, ins, create_graph, chunk_size, "graph.jacobian", allow_unused=True)


def hessian(output: torch.Tensor, inputs: Tensors, out: torch.Tensor | None = None, allow_unused: bool = False,
            create_graph: bool = False, chunk_size: int | None = None) -> torch.Tensor:
    """The Hessian of a scalar ``output`` with respect to ``inputs``, dense ``(N, N)``.

    ``N`` is the total number of input elements (inputs flattened and concatenated).
    The result has the output's dtype and device; ``out``, if given, is filled and
    returned.  Inputs the output does not depend on raise
    :class:`crossgrad.errors.GraphInputError`, or give zero rows and columns with
    ``allow_unused=True``.

    Example:
        >>> a = torch.tensor([1.0], requires_grad=True)
        >>> b = torch.tensor([2.0], requires_grad=True)
        >>> hessian((a * b) ** 2, [a, b]).tolist()
        [[8.0, 8.0], [8.0, 2.0]]
    """
    transform = "graph.hessian"
    ins = _as_list("inputs", transform, inputs)
    _check_inputs(transform, ins)
    if not isinstance(output, torch.Tensor) or output.numel() != 1:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise errors.NonScalarOutputError(transform, "a scalar output (one element)", f"an output of shape {shape}",
                                          "Reduce the output to a scalar with output.sum(), or use graph.jacobian.")
    grads = torch.autograd.grad(output, ins, create_graph=True, allow_unused=True)
    if not allow_unused:
        _check_used(transform, grads)
    gradient_vector = _flat(grads, ins)
    h = _rows(gradient_vector, ins, create_graph, chunk_size, transform, allow_unused=True).to(output.dtype)
    if out is None:
        return h
    if tuple(out.shape) != tuple(h.shape):
        raise errors.GraphInputError(transform, f"out of shape {tuple(h.shape)}", f"out of shape {tuple(out.shape)}",
                                     "Preallocate out with one row and column per input element.")
    return out.copy_(h)


def gradient(outputs: Tensors, inputs: Tensors, grad_outputs: Any = None, retain_graph: bool | None = None,
             create_graph: bool = False) -> torch.Tensor:
    """The gradient of ``outputs`` (weighted by ``grad_outputs``) as one flat vector.

    Unused inputs give zeros.  Arguments as in ``torch.autograd.grad``.

    Example:
        >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
        >>> gradient((x ** 2).sum(), x)
        tensor([2., 4.])
    """
    outs = _as_list("outputs", "graph.gradient", outputs)
    ins = _as_list("inputs", "graph.gradient", inputs)
    _check_inputs("graph.gradient", ins)
    grads = torch.autograd.grad(outs, ins, grad_outputs, retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    return _flat(grads, ins)
