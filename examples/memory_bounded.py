"""Memory-bounded per-sample Hessians: chunk_size="auto", a budget, and the retry.

Per-sample Hessians of a small MLP over a batch whose intermediates do not fit at
once.  ``chunk_size="auto"`` sizes the chunks from the free memory (or from
``cg.memory_budget``); when its estimate is too optimistic the framework's
out-of-memory error is caught and the chunk retried in halves.  The "crossgrad"
logger reports each decision.

    python examples/memory_bounded.py            # both backends, sizes for this device
    python examples/memory_bounded.py --batch 200000 --budget 1e12
        # on a GPU: a budget far above the device, so the retry does the work
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time

import numpy as np

import crossgrad as cg
from crossgrad.testing import frameworks, problems


def run(name: str, batch: int, budget: float | None, check: int) -> None:
    prob = problems.mlp((64, 256, 256, 1), batch=batch)
    f = prob.build(frameworks.ops(name))
    params, x = frameworks.convert(prob.inputs(np.random.default_rng(0)), name, "float32")
    if name == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        params = {k: v.to(device) for k, v in params.items()}
        x = x.to(device)
    hess = cg.backend(name).batched_hessian(f, argnums=1, in_axes=(None, 0), batch_chunk_size="auto")
    with contextlib.ExitStack() as scope:
        if name == "jax":  # on a GPU jax multiplies fp32 in TF32 by default: compare at full precision
            import jax

            scope.enter_context(jax.default_matmul_precision("highest"))
        if budget is not None:
            scope.enter_context(cg.memory_budget(int(budget)))
        start = time.perf_counter()
        out = hess(params, x)
        got = frameworks.to_numpy(out[:check])
        seconds = time.perf_counter() - start
        ref = frameworks.to_numpy(cg.backend(name).batched_hessian(f, argnums=1, in_axes=(None, 0))(params, x[:check]))
    err = float(np.max(np.abs(got - ref)) / max(1e-30, float(np.max(np.abs(ref)))))
    print(f"{name}: {batch} per-sample Hessians {tuple(out.shape)} ({out.dtype}) in {seconds:.2f} s; "
          f"first {check} agree with an unchunked call to {err:.1e}")
    assert err < 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--budget", type=float, default=4e6, help="bytes; 0 for the device's free memory")
    parser.add_argument("--backends", default="torch,jax")
    args = parser.parse_args()
    logging.basicConfig(format="  %(name)s: %(message)s")
    logging.getLogger("crossgrad").setLevel(logging.INFO)
    for name in args.backends.split(","):
        run(name, args.batch, args.budget or None, check=16)


if __name__ == "__main__":
    main()
