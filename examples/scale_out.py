"""Per-sample Hessians spread over devices, on each framework's own engine, and streamed.

    python examples/scale_out.py

* jax: the batch sharded over a device mesh (four virtual CPU devices here, set up
  below before jax is imported; on a GPU machine, the GPUs);
* torch: two processes over gloo, each computing its slice of the batch (torchrun
  does the same with one process per GPU and NCCL);
* streaming: a result written chunk by chunk into a memmap on disk.
"""

from __future__ import annotations

import os
import tempfile

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import numpy as np

import crossgrad as cg

BATCH, N_IN, N_OUT = 512, 31, 33


def inputs():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((N_OUT, N_IN)).astype(np.float32) / 4, rng.standard_normal(N_OUT).astype(np.float32),
            rng.standard_normal((BATCH, N_IN)).astype(np.float32))


def jax_mesh() -> None:
    import jax
    import jax.numpy as jnp

    W, b, x = map(jnp.asarray, inputs())

    def f(W, b, x):  # one sample
        return jnp.tanh(W @ x + b)

    hess = cg.jax.batched_hessian(f, argnums=2, in_axes=(None, None, 0), devices="all")
    H = hess(W, b, x)  # sharded along the batch: each device computed and holds its part
    print(f"jax: {len(jax.devices())} devices, H {H.shape}, sharding {H.sharding.spec}, "
          f"per device {H.addressable_shards[0].data.shape}")
    one = jax.jit(cg.jax.batched_hessian(f, argnums=2, in_axes=(None, None, 0)))(W, b, x)
    print(f"jax: max |sharded - one device| = {float(jnp.max(jnp.abs(H - one))):.1e}")


def torch_rank(rank: int, world: int, init_file: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    W, b, x = map(torch.from_numpy, inputs())

    def f(W, b, x):
        return torch.tanh(W @ x + b)

    mine = cg.torch.batched_hessian(f, argnums=2, in_axes=(None, None, 0), devices="all")(W, b, x[:BATCH - 1])
    whole = cg.torch.batched_hessian(f, argnums=2, in_axes=(None, None, 0), devices="all", gather=True)(W, b, x)
    print(f"torch rank {rank}/{world}: its slice {tuple(mine.shape)} of {BATCH - 1} samples; gathered {tuple(whole.shape)}")
    dist.destroy_process_group()


def torch_processes() -> None:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(torch_rank, args=(2, os.path.join(tmp, "init")), nprocs=2, join=True)


def streamed() -> None:
    import torch

    W, b, x = map(torch.from_numpy, inputs())
    hess = cg.torch.batched_hessian(lambda W, b, x: torch.tanh(W @ x + b), argnums=2, in_axes=(None, None, 0))
    with tempfile.TemporaryDirectory() as tmp:
        sink = np.lib.format.open_memmap(os.path.join(tmp, "H.npy"), mode="w+", dtype=np.float32,
                                         shape=(BATCH, N_OUT, N_IN, N_IN))
        rows = cg.stream_to(sink, hess, W, b, x, in_axes=(None, None, 0), chunk_size=128)
        sink.flush()
        print(f"stream: {rows} rows written in chunks of 128 to a {sink.nbytes / 2**20:.0f} MiB memmap; "
              f"max |last row - direct call| (float32) = {np.abs(sink[-1] - hess(W, b, x[-1:])[0].numpy()).max():.1e}")


if __name__ == "__main__":
    jax_mesh()
    torch_processes()
    streamed()
