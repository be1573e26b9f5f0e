"""The benchmark cases, built from the shared problem catalog.

Each case names a problem, a transform kind and its sizes on a GPU; ``cpu`` gives the
scaled-down sizes used on a CPU so that ``make bench`` stays under 10 minutes on two
cores.  ``compile`` marks the cases where ``torch.compile`` is tried (it takes tens of
seconds per implementation on a CPU); ``compile_gpu`` adds cases where it is tried on
a GPU only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from crossgrad.testing import problems


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # jacobian, batched_jacobian, hessian, batched_hessian, hvp, batched_laplacian
    gpu: Callable[[], problems.Problem]
    cpu: Callable[[], problems.Problem]
    compile: bool = False
    compile_gpu: bool = False  # torch.compile on a GPU only (it failed there for these shapes on torch 2.11)
    loop: bool = False  # the notebook's loop finishes in reasonable time
    exclude_on_gpu: dict[str, str] = field(default_factory=dict)  # implementation -> why it is not run
    exclude_on_cpu: dict[str, str] = field(default_factory=dict)
    # (framework, implementation) -> a framework defect that makes it disagree on a CPU;
    # reported as WRONG (known) without failing the run
    known_wrong_on_cpu: dict[tuple[str, str], str] = field(default_factory=dict)
    scaling: bool = False  # time the batch spread over 1, 2, 4 ... devices (devices=), nothing else
    # torch's default (cg auto, eager) must be this many times faster than the raw torch.func call
    speedup_goal: float | None = None


CASES = [
    Case("bjac B64 31->33", "batched_jacobian",
         lambda: problems.tanh_linear(31, 33, batch=64), lambda: problems.tanh_linear(31, 33, batch=64),
         compile=True, loop=True),
    Case("bjac B1024 256->256", "batched_jacobian",
         lambda: problems.tanh_linear(256, 256, batch=1024), lambda: problems.tanh_linear(256, 256, batch=64),
         compile_gpu=True),
    Case("bhess B64 31->33", "batched_hessian",
         lambda: problems.tanh_linear(31, 33, batch=64), lambda: problems.tanh_linear(31, 33, batch=64), compile=True,
         speedup_goal=2.0, known_wrong_on_cpu={("jax", f"cg {s} composed"): "jax 0.10.2 CPU: jit(vmap(jacrev(jacrev))) wrong in fp32"
                             for s in ("rev-rev", "rev-fwd")}),
    Case("bhess B64 512->32", "batched_hessian",
         lambda: problems.tanh_linear(512, 32, batch=64), lambda: problems.tanh_linear(512, 32, batch=1),
         compile_gpu=True,
         exclude_on_cpu={"cg rev-fwd composed": "minutes on 2 cores: reverse mode over a 16384-output forward Jacobian"}),
    Case("jac 32->2048 (tall)", "jacobian",
         lambda: problems.tanh_linear(32, 2048), lambda: problems.tanh_linear(32, 2048), compile=True, loop=True),
    Case("jac 2048->32 (wide)", "jacobian",
         lambda: problems.tanh_linear(2048, 32), lambda: problems.tanh_linear(2048, 32), loop=True),
    Case("bhess logsumexp N1024 B1024", "batched_hessian",
         lambda: problems.logsumexp(1024, batch=1024), lambda: problems.logsumexp(128, batch=32),
         exclude_on_gpu={f"cg {s} composed": "N^3 per-sample intermediates (4 TB at N=1024, B=1024)"
                         for s in ("rev-rev", "rev-fwd", "fwd-fwd")}),
    Case("bhess MLP 64-256-256-1 B1024", "batched_hessian",
         lambda: problems.mlp((64, 256, 256, 1), batch=1024), lambda: problems.mlp((64, 256, 256, 1), batch=32)),
    Case("bhess PINN 2-512x6-3 B10000", "batched_hessian",
         lambda: problems.mlp((2, 512, 512, 512, 512, 512, 512, 3), batch=10000),
         lambda: problems.mlp((2, 128, 128, 128, 128, 128, 128, 3), batch=256), speedup_goal=2.0),
    Case("param hess MLP 8-16-16-1 (dict)", "hessian",
         lambda: problems.mlp((8, 16, 16, 1), batch=32, wrt="params"),
         lambda: problems.mlp((8, 16, 16, 1), batch=32, wrt="params")),
    Case("hvp MLP 1.3M params", "hvp",
         lambda: problems.mlp((256, 1024, 1024, 1), batch=256, wrt="params"),
         lambda: problems.mlp((64, 256, 256, 1), batch=64, wrt="params")),
    Case("hess D16 (dispatch)", "hessian",
         lambda: problems.tanh_linear(16, 16), lambda: problems.tanh_linear(16, 16), compile=True),
    # Laplacians (issue: at most 0.5x the nested trace(batched_hessian) at D=50 and D=16).
    Case("laplacian MLP D50 768-768-512-512-1", "batched_laplacian",
         lambda: problems.mlp((50, 768, 768, 512, 512, 1), batch=256),
         lambda: problems.mlp((50, 192, 192, 128, 128, 1), batch=16)),
    Case("laplacian MLP D16 64-64-1", "batched_laplacian",
         lambda: problems.mlp((16, 256, 256, 1), batch=1024), lambda: problems.mlp((16, 64, 64, 1), batch=64)),
    Case("laplacian PINN 2-512x6-3", "batched_laplacian",
         lambda: problems.mlp((2, 512, 512, 512, 512, 512, 512, 3), batch=10000),
         lambda: problems.mlp((2, 128, 128, 128, 128, 128, 128, 3), batch=256)),
    Case("scaling bhess B4096 31->33", "batched_hessian",
         lambda: problems.tanh_linear(31, 33, batch=4096), lambda: problems.tanh_linear(31, 33, batch=256),
         scaling=True),
]
