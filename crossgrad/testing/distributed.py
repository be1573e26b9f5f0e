"""What each rank runs in the multi-process torch tests (importable by spawned children)."""

from __future__ import annotations

from typing import Any

import numpy as np

from crossgrad.testing import frameworks, problems

BATCH = 5  # uneven over two ranks: 3 + 2


def problem() -> Any:
    """The notebook's tanh-linear layer, per-sample Jacobians/Hessians w.r.t. x."""
    prob = problems.tanh_linear(n_in=7, n_out=4, batch=BATCH)
    return prob.build(frameworks.ops("torch")), frameworks.convert(prob.inputs(np.random.default_rng(3)), "torch",
                                                                  "float64")


def results(devices: Any) -> dict[Any, Any]:
    """Every spread transform on the problem, with and without gather."""
    import crossgrad as cg

    f, args = problem()
    axes = (None, None, 0)
    return {
        "batched_hessian": cg.torch.batched_hessian(f, argnums=2, in_axes=axes, devices=devices)(*args),
        "batched_hessian gathered": cg.torch.batched_hessian(f, argnums=2, in_axes=axes, devices=devices,
                                                             gather=True)(*args),
        "batched_jacobian gathered": cg.batched_jacobian(f, argnums=(1, 2), in_axes=axes, devices=devices,
                                                         gather=True)(*args),
        "vmap": cg.torch.vmap(f, in_axes=axes, devices=devices)(*args),
        "vmap gathered, out_axes=1": cg.torch.vmap(f, in_axes=axes, out_axes=1, devices=devices, gather=True)(*args),
    }


def torch_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank: join the gloo group, compute, save what it holds."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = results("all")
        out["group"] = results(dist.new_group(list(range(world))))["batched_hessian gathered"]
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
