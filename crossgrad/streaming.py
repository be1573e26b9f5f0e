"""Batches larger than memory: a batched transform applied chunk by chunk.

:func:`stream` yields the result of each chunk of the batch as it is computed;
:func:`stream_to` writes each chunk into a sink the caller owns (a NumPy array, an
``np.memmap`` on disk, a zarr array, anything that takes ``sink[start:stop] = rows``), so
a result larger than the device's memory, or the host's, is produced one chunk at a
time.  A chunk that fails raises :class:`crossgrad.errors.ChunkError` naming the chunk
and its rows; every chunk before it is already in the sink, whole, and ``start=``
resumes from the first row not written.

The inputs may be framework arrays or NumPy arrays (for example a memmap of inputs
that do not fit either); NumPy chunks are converted to the backend's arrays one at a
time, on the device of ``device_like`` when given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from crossgrad import batch_axes, errors, option_checks, pytree, value_checks
from crossgrad.transforms.call import check_leaves

NAME = "stream"


class Chunk(NamedTuple):
    """One chunk of a streamed batch: its position and the transform's result for it."""

    index: int  # type: ignore[assignment]  # the chunk's number (the API's name; shadows tuple.index)
    start: int
    stop: int
    result: Any


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _validate(name: str, fn: Any, args: tuple[Any, ...], in_axes: Any, chunk_size: Any, start: Any) -> tuple[list[Any], int]:
    option_checks.check_callable(name, fn)
    option_checks.validate_options(name, in_axes=in_axes)
    option_checks.check_stream_chunks(name, chunk_size)
    axes = batch_axes.leaf_axes(name, in_axes, args, _shape)
    size = batch_axes.batch_size(name, args, axes, _shape)
    value_checks.check_stream_start(name, start, size)
    return axes, size


def _backend(args: tuple[Any, ...], device_like: Any, backend: str | None) -> Any:
    from crossgrad import backends

    if backend is None:
        backend = backends.infer_backend(NAME, args, device_like)
    return backends.load(backend, NAME)


def stream(fn: Callable[..., Any], *args: Any, in_axes: Any = 0, chunk_size: int = 1024, start: int = 0,
           backend: str | None = None, device_like: Any = None) -> Iterator[Chunk]:
    """Apply the batched function ``fn`` (e.g. ``cg.batched_hessian(f)``) to ``chunk_size``
    samples of ``args`` at a time, yielding a :class:`Chunk` per chunk.

    ``in_axes`` says where each argument's batch axis is (None: shared by every
    sample), as in ``vmap``; ``fn`` must return results batched on axis 0.  ``start``
    skips the first rows.  ``backend`` is needed only when every input is a NumPy array.

    Example:
        >>> import torch, crossgrad as cg
        >>> hess = cg.torch.batched_hessian(lambda x: (x ** 3).sum())
        >>> [(c.start, c.stop, tuple(c.result.shape)) for c in cg.stream(hess, torch.ones(5, 2), chunk_size=2)]
        [(0, 2, (2, 2, 2)), (2, 4, (2, 2, 2)), (4, 5, (1, 2, 2))]
    """
    axes, size = _validate(NAME, fn, args, in_axes, chunk_size, start)
    b = _backend(args, device_like, backend)
    leaves, treedef = pytree.flatten(args)
    # NumPy float64 rows would turn into float32 on their way into jax with x64 off.
    check_leaves(NAME, b, leaves)
    like = device_like if device_like is not None else next((x for x in leaves if b.arrays.is_array(x)), None)
    for index, lo in enumerate(range(start, size, chunk_size)):
        hi = min(lo + chunk_size, size)
        part = [leaf if ax is None else _rows(b, leaf, lo, hi, ax, like) for leaf, ax in zip(leaves, axes)]
        try:
            result = fn(*pytree.unflatten(treedef, part))
        except Exception as exc:
            raise _failed(index, lo, hi, lo, exc) from exc
        yield Chunk(index, lo, hi, result)


def stream_to(sink: Any, fn: Callable[..., Any], *args: Any, in_axes: Any = 0, chunk_size: int = 1024, start: int = 0,
              backend: str | None = None, device_like: Any = None, casting: str = "safe") -> int:
    """Write ``fn``'s result for the whole batch into ``sink``, one chunk at a time.

    ``sink`` has the structure of ``fn``'s result (one array-like per result leaf), each
    with the batch on axis 0: ``sink[start:stop] = rows`` is all it needs (NumPy arrays,
    ``np.memmap``, zarr arrays, h5py datasets).  Rows arrive as NumPy arrays, copied off
    the device chunk by chunk.  Returns the number of rows written.  A failing chunk
    raises :class:`crossgrad.errors.ChunkError` (``done``: rows already written, all
    valid; pass ``start=err.done`` to resume).  ``casting`` has NumPy's meanings: by
    default (``"safe"``) a sink whose dtype would lose values (float32 results into
    uint8, int or float16) is refused before anything is written; ``"same_kind"`` or
    ``"unsafe"`` accept such casts explicitly.  Every chunk's result must carry the
    chunk's rows on axis 0 (never written transposed or broadcast).

    Example:
        >>> import numpy as np, torch, crossgrad as cg
        >>> out = np.zeros((5, 2, 2), np.float32)
        >>> cg.stream_to(out, cg.torch.batched_hessian(lambda x: (x ** 3).sum()), torch.ones(5, 2), chunk_size=2)
        5
        >>> out[4]
        array([[6., 0.],
               [0., 6.]], dtype=float32)
    """
    _, size = _validate("stream_to", fn, args, in_axes, chunk_size, start)
    option_checks.validate_options("stream_to", casting=casting)
    b = _backend(args, device_like, backend)
    done = start
    chunks = stream(fn, *args, in_axes=in_axes, chunk_size=chunk_size, start=start, backend=b.name,
                    device_like=device_like)
    for chunk in chunks:  # a failing chunk raises ChunkError with done == its first row
        targets = _targets(sink, chunk.result, size)
        rows = [b.arrays.to_numpy(leaf) for leaf in pytree.leaves(chunk.result)]
        for k, (target, values) in enumerate(zip(targets, rows)):
            _check_writable(target, values, chunk.stop - chunk.start, casting, k)
        try:
            for target, values in zip(targets, rows):
                target[chunk.start:chunk.stop] = values
        except Exception as exc:
            raise _failed(chunk.index, chunk.start, chunk.stop, done, exc, name="stream_to") from exc
        done = chunk.stop
    return done - start


def _rows(b: Any, leaf: Any, lo: int, hi: int, axis: int, like: Any) -> Any:
    if b.arrays.is_array(leaf):
        return b.arrays.slice_axis(leaf, lo, hi, axis)
    import numpy as np

    rows = np.take(leaf, np.arange(lo, hi), axis=axis)  # reads just these rows of a memmap
    return b.arrays.from_numpy(rows, like)


def _targets(sink: Any, result: Any, size: int) -> list[Any]:
    """The sink's array-likes in the order of the result's leaves, checked once per chunk."""
    out_leaves, out_def = pytree.flatten(result)
    if out_def.kind == "leaf":
        targets = [sink]
    else:
        try:
            targets, sink_def = pytree.flatten(sink)
        except Exception:
            sink_def = None
        if sink_def != out_def:
            raise errors.StructureError("stream_to", "a sink with the structure of the result (one array per leaf)",
                                        f"a {type(sink).__name__} for a result of {len(out_leaves)} arrays",
                                        "Pass a pytree of arrays shaped like the result with the whole batch on axis 0.")
    for target, leaf in zip(targets, out_leaves):
        want = (size, *tuple(leaf.shape)[1:])
        have = tuple(getattr(target, "shape", want))
        if have != want:
            raise errors.StructureError("stream_to", f"a sink array of shape {want}", f"shape {have}",
                                        "Allocate the sink for the whole batch, e.g. np.lib.format.open_memmap(path, "
                                        f"mode='w+', dtype='float32', shape={want}).")
    return targets


def _check_writable(target: Any, values: Any, rows: int, casting: str, k: int) -> None:
    """A chunk's result leaf ``k`` goes into its sink without loss or reshaping: the
    chunk's rows on axis 0, and a dtype the sink holds under ``casting``."""
    import numpy as np

    if not values.shape or values.shape[0] != rows:
        raise errors.StructureError(
            "stream_to", f"each chunk's result with the chunk's {rows} rows on axis 0",
            f"result leaf {k} of shape {tuple(values.shape)}",
            "Return the batch on axis 0 (out_axes=0), so that rows are never written transposed or broadcast.")
    dtype = getattr(target, "dtype", None)
    rule: Any = casting  # one of NumPy's literal casting names (spec.CASTINGS)
    if dtype is not None and not np.can_cast(values.dtype, dtype, casting=rule):
        raise errors.InputDtypeError(
            "stream_to", f"a sink that holds {values.dtype} results under casting={casting!r}",
            f"a {np.dtype(dtype)} sink for result leaf {k}",
            f"Allocate the sink as {values.dtype}, or pass casting='same_kind' (or 'unsafe') to accept the cast.")


def _failed(index: int, lo: int, hi: int, done: int, exc: BaseException, name: str = NAME) -> errors.ChunkError:
    what = "writing its rows to the sink" if name == "stream_to" else "computing it"
    return errors.ChunkError(
        name, f"every chunk to succeed; chunk {index} (rows {lo}:{hi}) failed while {what}",
        f"{type(exc).__name__}: {exc}",
        f"Rows before {done} are complete and valid; fix the cause and resume with start={done}.",
        index=index, start=lo, stop=hi, done=done)
