"""Measuring correctly: devices, synchronization, compilation apart, ceilings, memory.

Precision is pinned for the whole run and restored after it: TF32 off in torch,
``"highest"`` matmul precision in jax (see :func:`pinned_precision`).
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from crossgrad import pytree
from crossgrad.testing import frameworks


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def jax_device() -> Any:
    import jax

    return jax.devices()[0]


def on_gpu() -> bool:
    try:
        return torch_device() == "cuda"
    except ImportError:
        return jax_device().platform == "gpu"


def device_name() -> str:
    if on_gpu():
        import torch

        return torch.cuda.get_device_name(0)
    try:
        import cpuinfo  # py-cpuinfo, in the bench extra

        brand = cpuinfo.get_cpu_info().get("brand_raw")
    except ImportError:
        brand = None
    return f"{brand or platform.processor() or 'cpu'} ({_cores()} cores)"


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def versions() -> dict[str, str]:
    import jax
    import torch

    import crossgrad

    return {"crossgrad": crossgrad.__version__, "torch": torch.__version__, "jax": jax.__version__,
            "python": platform.python_version()}


@contextlib.contextmanager
def pinned_precision() -> Iterator[None]:
    """fp32 comparisons that mean something: TF32 off (torch), "highest" (jax); restored after."""
    import jax
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        with jax.default_matmul_precision("highest"):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


PRECISION_NOTE = "fp32; torch TF32 off (matmul and cuDNN), jax default_matmul_precision='highest'"


def sync(framework: str, out: Any) -> Any:
    """Wait for the device: the clock stops only after the work is done."""
    if framework == "jax":
        import jax

        return jax.block_until_ready(out)
    if torch_device() == "cuda":
        import torch

        torch.cuda.synchronize()
    return out


def to_device(framework: str, tree: Any) -> Any:
    """NumPy inputs as fp32 arrays already on the device."""
    if framework == "jax":
        import jax

        return jax.device_put(frameworks.convert(tree, "jax", "float32"), jax_device())
    device = torch_device()
    return pytree.map_leaves(lambda x: x.to(device), frameworks.convert(tree, "torch", "float32"))


def nbytes(tree: Any) -> int:
    total = 0
    for x in pytree.leaves(tree):
        size = int(np.prod(x.shape)) if hasattr(x, "shape") else 1
        total += size * (x.element_size() if hasattr(x, "element_size") else x.dtype.itemsize)
    return total


def median_time(fn: Callable[[], Any], framework: str, runs: int = 10) -> float:
    sync(framework, fn())
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sync(framework, fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def ceilings() -> dict[str, float]:
    """The machine's write bandwidth (GB/s) and fp32 matmul rate (TFLOP/s), measured now."""
    import sys

    print("measuring the machine's write bandwidth and fp32 matmul rate (the ceilings the report compares with)",
          file=sys.stderr, flush=True)
    import torch

    device = torch_device()
    n = (1 << 28) if device == "cuda" else (1 << 25)  # 1 GiB / 128 MiB of fp32
    buf = torch.empty(n, device=device)
    t_fill = median_time(lambda: buf.fill_(1.0), "torch")
    size = 8192 if device == "cuda" else 1024
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    t_mm = median_time(lambda: a @ b, "torch", runs=5)
    return {"write_GBps": n * 4 / t_fill / 1e9, "fp32_matmul_TFLOPs": 2 * size**3 / t_mm / 1e12}


def count_flops(framework: str, fn: Callable, args: tuple) -> float | None:
    """The floating-point operations of one call of ``fn``, counted from the program: XLA's
    cost analysis of the lowered program (jax), torch's ``FlopCounterMode`` over one eager run
    (matrix products and convolutions; elementwise work is not counted).  None where the
    program cannot be read (a compiled or opaque callable)."""
    try:
        if framework == "jax":
            import jax

            cost = jax.jit(fn).lower(*args).cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            flops = float(cost.get("flops", 0.0)) if cost else 0.0
        else:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                fn(*args)
            flops = float(counter.get_total_flops())
    except Exception:
        return None
    return flops if flops > 0 else None


def first_call(framework: str, impl: Any, fn: Callable, args: tuple) -> tuple[Callable, Any, float, float | None]:
    """Compile (where the implementation is compiled) and run once.

    Returns the callable to time, the first result, the seconds the first call took
    (compilation included) and the peak device memory in bytes where it can be known
    (jax: XLA's memory analysis of the compiled function; torch on CUDA: the
    allocator's peak; torch on a CPU: unknown).
    """
    peak = None
    t0 = time.perf_counter()
    if framework == "jax" and impl.compiled:
        import jax

        compiled = jax.jit(fn).lower(*args).compile()
        with contextlib.suppress(Exception):
            mem = compiled.memory_analysis()
            peak = float(mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes)
        fn = compiled
    elif framework == "torch" and impl.compiled:
        import torch

        torch._dynamo.reset()
        fn = torch.compile(fn)
    cuda = framework == "torch" and torch_device() == "cuda"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    out = sync(framework, fn(*args))
    elapsed = time.perf_counter() - t0
    if cuda:
        import torch

        peak = float(torch.cuda.max_memory_allocated())
    return fn, out, elapsed, peak


def cpu_peak(framework: str, fn: Callable, args: tuple) -> float | None:
    """The peak resident memory one steady call of ``fn`` holds on a CPU, its inputs included,
    in bytes: the process's high-water mark (``VmHWM``) reset just before the call, less the
    resident size then, plus the inputs' bytes.  glibc's free lists are returned to the
    system first (``malloc_trim``) so memory a previous call freed but kept does not hide
    this call's need.  Page-granular and process-wide (another thread's allocation counts);
    None where Linux's ``/proc/self/clear_refs`` is not writable (another system, a
    container that forbids it).
    """
    import ctypes
    import ctypes.util

    def status(field: str) -> int:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise OSError(field)

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current resident size
        before = status("VmRSS")
        sync(framework, fn(*args))
        return float(status("VmHWM") - before + nbytes(args))
    except (OSError, AttributeError):
        return None


def agreement(result: Any, reference: Any) -> float:
    """Largest absolute difference relative to the reference's largest magnitude,
    computed on the device when both sides belong to one framework."""
    a_leaves = pytree.leaves(result)
    r_leaves = pytree.leaves(reference)
    if len(a_leaves) != len(r_leaves):
        return float("inf")
    worst = 0.0
    for a, r in zip(a_leaves, r_leaves):
        if tuple(a.shape) != tuple(r.shape):
            return float("inf")
        if not int(np.prod(r.shape)):
            continue
        same = type(a).__module__.split(".")[0] == type(r).__module__.split(".")[0]
        if same and type(a).__module__.startswith("torch"):
            diff, scale = float((a - r).abs().max()), float(r.abs().max())
        elif same:
            import jax.numpy as jnp

            diff, scale = float(jnp.max(jnp.abs(a - r))), float(jnp.max(jnp.abs(r)))
        else:
            an, rn = frameworks.to_numpy(a), frameworks.to_numpy(r)
            diff, scale = float(np.max(np.abs(an - rn))), float(np.max(np.abs(rn)))
        worst = max(worst, diff / max(scale, 1e-30))
    return worst
