"""Every measured choice ``auto`` makes, in one place, each beside its measurement.

The transforms ask this module and decide nothing by themselves: the Jacobian mode
(NOTE [jacobian auto mode]), the Hessian strategy (NOTE [hessian strategy]), the
built-ins ``impl="auto"`` passes over (NOTE [auto avoids]), the order of the batch and
basis maps of the batched transforms (NOTE [batch inside]) and the route ``jit`` takes
(NOTE [jit routes]).  The next measurement changes one rule here.  Rules are pure
functions of names and sizes: this module imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable

# NOTE [jacobian auto mode]: forward mode pays one jvp per input element, reverse mode
# one vjp per output element; ``auto`` picks forward when ``n * forward_cost < m``, the
# cost of a jvp relative to a vjp measured per backend and device (``make bench``,
# benchmarks/results/):
# * jax under jit: 0.5.  Forward mode wins at square shapes: B=1024, 256->256 on an
#   H200 0.22 ms (jacfwd) vs 1.14 ms (jacrev); B=64, 256->256 on 2 CPU cores 2.1 vs 6.3
#   ms; wide shapes (2048->32) stay reverse.
# * eager torch.func on a CPU: 2.  A jvp costs ~1.8x a vjp per basis vector (B=64,
#   31->33: jacfwd 1.08 ms vs jacrev 0.64 ms); the tall 32->2048 case still goes forward
#   (0.44 vs 2.52 ms).
# * eager torch.func on a GPU: 64, reverse nearly always.  Launch-bound at these sizes,
#   forward mode loses even on the tall 32->2048 case (H200: jacfwd 1.28 ms, jacrev
#   0.88 ms) and ties at 256->256 (1.75 vs 1.70 ms).


def forward_cost(backend: str, on_accelerator: bool) -> float:
    """The cost of a jvp relative to a vjp (NOTE [jacobian auto mode])."""
    if backend == "jax":
        return 0.5
    return 64.0 if on_accelerator else 2.0


def jacobian_mode(backend: str, on_accelerator: bool, n: int, m: int) -> str:
    """``"fwd"`` or ``"rev"`` for ``n`` input and ``m`` output elements."""
    return "fwd" if n * forward_cost(backend, on_accelerator) < m else "rev"


# NOTE [hessian strategy]: ``strategy="outer-inner"`` is ``jacobian(jacobian(f,
# mode=inner), mode=outer)``.  ``"auto"`` picks per backend, from measurements (fp32,
# ``make bench``, benchmarks/results/, H200 and 2 CPU cores):
# * torch (eager ``torch.func``): ``"rev-rev"`` (crossgrad's composition) for a scalar
#   output, ``"fwd-rev"`` otherwise.  Scalar outputs: per-sample MLP 64-256-256-1,
#   B=1024, H200: rev-rev 3.5 ms vs fwd-rev 4.8 ms (torch.func.hessian); parameter
#   Hessian of a dict MLP: 5.2 vs 7.0 ms; tiny D=16 Hessian on a CPU: 0.82 vs 1.06 ms.
#   Vector outputs: rev-rev and rev-fwd explode (B=64 31->33 on a CPU: 376 ms vs 9.5
#   ms) and fwd-fwd is 3x slower on the large case (H200 512->32: 17.6 vs 6.2 ms) --
#   in the batch-outside order; the batched transforms may take fwd-fwd with the batch
#   inside (NOTE [batch inside]).
# * jax (``jax.jit``): ``"fwd-fwd"`` when the output has more than one element,
#   ``"fwd-rev"`` for a scalar output.  Vector outputs: fwd-fwd 0.86 ms vs fwd-rev
#   2.54 ms (B=64 512->32, H200), 0.64 vs 3.1 ms (B=64 31->33, 2 CPU cores); scalar
#   outputs: fwd-fwd loses 15-25x (scalar MLP 17.6 ms vs 1.04 ms).
# Known framework defect, found by ``make bench``: on a CPU, jax 0.10.2 returns wrong
# fp32 values for ``jax.jit(jax.vmap(jax.jacrev(jax.jacrev(f))))`` at B=64, 31->33
# (relative error 0.75; eager and float64 are right, and so is the same program on an
# H200).  ``auto`` never picks rev-rev on jax.


def hessian_strategy(backend: str, out_size: Callable[[], int]) -> tuple[str, str | None]:
    """A strategy, and the implementation it was measured with (None: whatever ``impl``
    says), by NOTE [hessian strategy]; ``out_size`` is asked only where it matters."""
    scalar = out_size() == 1
    if backend == "torch":
        return ("rev-rev", "composed") if scalar else ("fwd-rev", None)
    return ("fwd-rev", None) if scalar else ("fwd-fwd", None)


# Under compilation (torch: cg.jit's traced routes record the call into one graph), the
# scalar-output choice differs: the graph of torch.func's own jacrev(jacrev) compiles to
# the same speed whatever form the function's layers are written in, where crossgrad's
# composition loses on W @ x.  Measured on the speed sweep's five scalar Hessians x four
# layer forms (fp32, 2 CPU cores, Xeon, 2026-12-02, torch cg.jit route trace-compile
# against jax cg.jit, median of 61 alternated pairs; ratio torch/jax):
#
# | function                        | form     | rev-rev builtin | rev-rev composed |
# |---------------------------------|----------|-----------------|------------------|
# | hess tanh 8-128-128-1 B128      | W @ x    | 0.83            | 0.88             |
# | hess softplus 16-64-64-1 B256   | W @ x    | 0.96            | 1.47             |
# | hess tanh 64-256-256-1 B32      | W @ x    | 0.77            | 1.00             |
# | hess sin 2-64-64-1 B1024        | W @ x    | 0.60            | 0.67             |
# | hess softplus 32-256-1 B300     | W @ x    | 0.85            | 1.23             |
# | the same five                   | x @ W.T  | 0.38-0.92       | 0.36-0.85        |
# | the same five                   | F.linear | 0.40-0.86       | 0.32-0.88        |
# | the same five                   | einsum   | 0.39-0.80       | 0.32-0.65        |
#
# The composition wins the other forms by up to 0.14; the built-in's worst case is 0.96
# where the composition's is 1.47.  So a compiled torch scalar Hessian takes the built-in.
def compiled_hessian(backend: str, chosen: tuple[str, str | None], compiled: bool) -> tuple[str, str | None]:
    """The strategy and implementation for a call being compiled (``compiled``), from the
    eager choice ``chosen`` (:func:`hessian_strategy`)."""
    if compiled and backend == "torch" and chosen == ("rev-rev", "composed"):
        return ("rev-rev", "builtin")
    return chosen


# NOTE [auto avoids]: built-ins that ``impl="auto"`` passes over for crossgrad's
# composition, per backend.
# * torch ``linearize``: torch.func.linearize traces the function with make_fx on every
#   call, 41 ms for a 64-element MLP on 2 CPU cores against 0.41 ms for the transposed
#   vjp (4096 elements: 73 vs 7.5 ms), and each trace leaves ~27 objects behind
#   (generated source registered in linecache) that are never freed.  Its jvp_fn is
#   faster (0.049 vs 0.087 ms at 64, 3.6 vs 3.8 ms at 4096), which pays back only after
#   ~1,000 products.
# * jax: none.
AUTO_AVOIDS: dict[str, frozenset[str]] = {"torch": frozenset({"linearize"}), "jax": frozenset()}


# NOTE [batch inside]: a batched Hessian can map the batch inside or outside the maps
# over basis vectors.  Outside (``vmap(hessian(f))``, what torch.func and jax users
# write) every basis vector is pushed through the per-sample function under a batch
# vmap; inside, the per-sample function is evaluated on the whole batch (one vmap) and
# each basis vector is broadcast across the batch, so the basis maps wrap one batched
# evaluation.  Eager torch pays per operation and per vmap level, and the two orders
# give it different batched kernels (fp32, 2 CPU cores, torch 2.13, medians, the
# notebook's tanh(W x + b) and the catalog's MLPs):
#
# | case                      | vmap(torch.func.hessian) | fwd-fwd inside | fwd-rev inside | rev-rev inside |
# |---------------------------|--------------------------|----------------|----------------|----------------|
# | B=64, 31->33              | 16.8 ms                  | 4.7 ms         | 11.8 ms        | 544 ms         |
# | B=1, 512->32              | 27.1 ms                  | 58.9 ms        | 28.3 ms        | 568 ms         |
# | PINN 2-128x6-3, B=256     | 14.4 ms                  | 16.8 ms        | 15.2 ms        | 14.8 ms        |
# | MLP 64-256-256-1, B=32    | 9.6 ms                   | 698 ms         | 14.0 ms        | 11.9 ms        |
#
# A sweep of ``auto``'s candidate against ``vmap(torch.func.hessian)``, alternated call by
# call (fp32, 2 CPU cores; ratio < 1: the batch inside is faster):
#
# | tanh(W x + b), n->m, B | ratio | MLP n-h-h-m, B          | ratio |
# |------------------------|-------|-------------------------|-------|
# | 8->8, 64               | 1.10  | 2-64-64-3, 256          | 1.42  |
# | 16->16, 64             | 0.82  | 4-32-32-8, 64           | 1.40  |
# | 31->33, 8              | 0.90  | 8-64-16, 64             | 1.20  |
# | 31->33, 256            | 0.38  | log-sum-exp 16, B=64    | 1.28  |
# | 64->64, 16             | 0.37  |                         |       |
# | 16->64, 32             | 0.22  |                         |       |
# | 4->16, 256             | 0.69  |                         |       |
#
# Forward-over-forward inside wins where one sample's Hessian is large (``n * m >= 256``)
# and its second-order work (``n**2`` directions) does not exceed forward-over-reverse's
# (``n * m``); deep networks with few inputs and outputs (the MLPs, the PINN) keep
# torch.func's order, where nested forward mode pays per layer.  ``auto`` takes it for
# vector outputs with ``n <= m``, ``n * m >= 256`` and ``B >= 8`` (the 4->16 win is left
# out by that threshold); an explicit ``strategy="fwd-fwd"`` always runs batch-inside
# from ``B >= 8``.  On a GPU the batch stays outside: the H200 ran the notebook's case
# batch-inside in 4.58 ms against 3.84 ms for ``vmap(torch.func.hessian)`` (kernels are
# launch-bound there, and the inside order launches more).  The PINN case is compute-bound (one [256, 128] x [128, 128] product
# per layer and direction): no order helps it in eager torch; the traced routes of
# ``jit`` do (NOTE [jit routes]).  jax under ``jax.jit`` compiles both orders to the
# same program: jax keeps the batch outside.
BATCH_INSIDE_MIN_BATCH = 8
BATCH_INSIDE_MIN_ELEMENTS = 256


def batched_hessian_inside(backend: str, on_accelerator: bool, strategy: str, n: int, m: Callable[[], int],
                           batch: int) -> str | None:
    """The strategy to run with the batch inside for a batched Hessian, or None to keep
    the batch outside (NOTE [batch inside]).  ``strategy`` is the one asked for
    (``"auto"`` included), ``n`` one sample's input elements, ``m()`` its output
    elements (asked only where it matters), ``batch`` the number of samples."""
    if (backend != "torch" or on_accelerator or batch < BATCH_INSIDE_MIN_BATCH
            or strategy not in ("auto", "fwd-fwd")):
        return None
    if strategy == "auto":
        outputs = m()
        if outputs == 1 or n > outputs or n * outputs < BATCH_INSIDE_MIN_ELEMENTS:
            return None
    return "fwd-fwd"


# NOTE [jit routes] (the routes: :mod:`crossgrad.transforms.compiled`): the routes
# ``jit(route="auto")`` takes, by rule, in order (the first that builds and agrees with the
# traced call is kept; ``route="measure"`` times them all instead).  jax: ``jax.jit``,
# nothing else to consider.  torch on a GPU: the compiled graph replayed as a CUDA graph
# (launch-bound calls; refused where autograd records through the call), then the
# compiled graph, the graph as traced, eager.  torch on a CPU: the traced graph compiled
# by inductor, unless the graph's outputs are at least half of the elements it computes
# (``output_share``, read from the traced graph): then it writes its answer in a few
# operations (a Jacobian's basis product), inductor has nothing to fuse, and its
# generated kernels write slower than aten's, so the graph runs as traced.  Measured
# with ``route="measure"`` on every ``make bench`` case, fp32, 2 CPU cores (Xeon, torch
# 2.13, 2026-12-02, after NOTE [batch-constant products]), median ms, share in brackets:
#
# | case                     | share | trace-compile | trace | eager | rule takes    |
# |--------------------------|-------|---------------|-------|-------|---------------|
# | bjac B64 31->33          | 0.94  | 0.38          | 0.366 | 1.23  | trace         |
# | bjac B64 256->256        | 0.99  | 11.2          | 2.48  | 24.9  | trace         |
# | bhess B64 31->33         | 0.80  | 2.01          | 1.15  | 5.84  | trace         |
# | jac 2048->32 (wide)      | 1.0   | 0.319         | 0.338 | 0.785 | trace (+6%)   |
# | bhess B1 512->32         | 0.32  | 15.7          | 19.1  | 18.9  | trace-compile |
# | jac 32->2048 (tall)      | 0.25  | 0.355         | 0.638 | 1.49  | trace-compile |
# | bhess logsumexp 128 B32  | 0.09  | 3.97          | 3.02  | 5.54  | trace-compile (-24%) |
# | bhess MLP 64-256-256-1   | 0.02  | 2.93          | 4.52  | 6.12  | trace-compile |
# | bhess PINN 2-128x6-3     | 0.00  | 3.83          | 8.08  | 15.6  | trace-compile |
# | param hess MLP (dict)    | 0.03  | 3.32          | 4.41  | 5.93  | trace-compile |
# | hvp MLP 64-256-256-1     | 0.19  | 1.06          | 1.38  | 4.17  | trace-compile |
# | hess D16                 | 0.29  | 0.296         | 0.49  | 1.69  | trace-compile |
# | laplacians D50/D16/PINN  | 0.00  | 1.22/0.473/1.5| 2.0/0.843/3.17 | 4.52/2.34/7.61 | trace-compile |
#
# Where autograd records through the call (a training step's loss, backward through it)
# inductor compiles the forward and the backward graph, 20-25 s on 2 cores with a cold
# cache, and the rule runs the graph as traced: PINN step (tanh MLP 2-64-64-64-1, 512
# points, the Laplacian inside an MSE loss, backward, Adam; 200 steps): eager 7.62
# ms/step; trace 6.83 ms/step, first call 0.21 s; trace-compile 3.32 ms/step, first call
# 19.7 s and 4.1 s for the second (the backward's): it pays back after ~6,000 steps, so
# a long training run asks for ``route="trace-compile"``.
# The rule's route is never slower than eager on these cases nor on the 40 functions of
# the sweep (benchmarks/sweep.py; all took trace-compile there); it is within 6% of the
# fastest measured route except on the log-sum-exp Hessian (24% slower than as traced).
# Before the batch-constant fold the stopwatch was needed: inductor lost the 512->32 and
# hvp cases to eager.  GPU measurements (H200, torch 2.11, before this rule; the
# measured ``auto`` took the replay wherever it was a candidate;
# benchmarks/results/nvidia-h200-2026-11-26-part-2-routes.md), median ms:
#
# | case                   | torch cg.jit (measured auto) | jax cg.jit | before replay |
# |------------------------|------------------------------|------------|---------------|
# | bjac B64 31->33        | 0.058                        | 0.073      | 0.164         |
# | bhess B64 31->33       | 0.130                        | 0.069      | 0.605         |
# | jac 32->2048 / 2048->32| 0.078 / 0.058                | 0.069 / 0.081 | 0.237 / 0.239 |
# | bhess MLP 64-256-256-1 | 0.727                        | 0.869      | 1.02          |
# | bhess logsumexp N1024  | 2.04                         | 2.47       | 2.29          |
# | bhess B64 512->32      | 2.81                         | 0.867      | 2.90          |
#
# torch.compile of the function itself is never taken: it fails on Hessians and
# crashes on forward-over-forward ones.  Compile time is paid once per signature (1-15 s
# on 2 CPU cores for one route, 1-6 s on the H200) and reported apart by the benchmark.


# The share of a traced graph's computed elements that are its outputs from which the
# graph runs as traced (NOTE [jit routes]).
TRACE_AS_IS_OUTPUT_SHARE = 0.5


def jit_routes(backend: str, on_accelerator: bool, output_share: float = 0.0,
               records_grad: bool = False) -> tuple[str, ...]:
    """The routes ``jit(route="auto")`` takes, in order: the first that builds and agrees
    with the traced call is kept (``route="measure"`` times all of them).  ``output_share``:
    the share of the elements the traced graph computes that are its outputs;
    ``records_grad``: autograd records through the call (NOTE [jit routes])."""
    if backend == "jax":
        return ("compile",)
    if on_accelerator:
        return ("trace-cudagraph", "trace-compile", "trace", "eager")
    if records_grad or output_share >= TRACE_AS_IS_OUTPUT_SHARE:
        return ("trace", "trace-compile", "eager")
    return ("trace-compile", "trace", "eager")


# NOTE [laplacian route]
# Traces and diagonals of Hessians: the forward Taylor route (NOTE [collapsed taylor],
# crossgrad.transforms.taylor) pushes k + 1 tangents forward, where the trace of the
# nested Hessian takes k forward-over-reverse passes.  Measured on 2 CPU cores, float32,
# batched Laplacians of tanh MLPs (make bench -k laplacian, 2026-11-26), median ms,
# Taylor route against the framework's trace(vmap(hessian)):
#   torch eager  D=50 50-192-192-128-128-1 B16   3.48 vs 5.87 (0.59x)
#   torch eager  D=16 16-64-64-1 B64             1.80 vs 7.36 (0.24x)
#   torch eager  PINN 2-128x6-3 B256            15.5  vs 25.1  (0.62x)
#   torch cg.jit (the Taylor route traced)       D=50 1.33, D=16 0.26, PINN 6.47
#   jax jit      D=50                            1.82 vs 3.06 (0.59x; peak 1.6 MB vs 2.57)
#   jax jit      D=16                            0.375 vs 0.389 (0.96x)
#   jax jit      PINN                            4.62 vs 6.16 (0.75x)
# (Before torch's recording followed torch.func.vmap's in-place view changes and had direct
# rules, torch eager took 18 ms at D=50: 3x slower than the nested route.)  So "auto" takes
# the Taylor route on both backends (crossgrad.transforms.curvature); the builtin only when
# asked for (impl="builtin").


# NOTE [operator products]: hessian_operator's products (H @ v, H @ V, and so dense(),
# eigenvalues' Lanczos steps) are compiled once per operator on jax, where an eager
# forward-over-reverse product dispatches every primitive on its own: 22.5 ms per H @ v
# eager against 0.26 ms under jax.jit (MLP loss, 2 CPU cores, issue measurement).  On
# torch they run eagerly: compiling a product costs seconds (inductor) for a
# per-product saving that a handful of Lanczos steps never pays back; under the user's
# cg.jit they are traced with everything else.
def compiled_operator_products(backend: str) -> bool:
    """Whether ``hessian_operator`` compiles its products (NOTE [operator products])."""
    return backend == "jax"


# NOTE [vmap of curvature]: ``vmap(laplacian(f))`` (and of hessian_trace, hessian_diagonal
# with the exact estimator) is what a jax user writes; on torch the single-point Taylor
# route cannot record under torch.func's vmap and fell back to nested Hessian-vector
# products: a tanh MLP 24-64-64-1 at B128, 2 CPU cores: 18.8 ms against 3.0 ms for
# batched_laplacian (the issue measured 80 vs 7.5 ms at D24 B128).  So crossgrad's vmap
# of such a transform takes its batched form.  On jax it is the other way round
# (batched_inside below).  Stochastic estimators keep the vmap on both (one draw per call
# is what the single-point form promises; the batched form draws per sample).
def vmap_takes_batched_curvature(backend: str) -> bool:
    """Whether crossgrad's vmap of a single-point curvature transform takes its batched form."""
    return backend == "torch"


# NOTE [batched curvature on jax]: the exact batched Laplacian, trace and diagonal on jax are
# jax.vmap of the single-point Taylor route, not the Taylor rules run over vmap(f)'s
# program.  Under jax.vmap the basis directions do not depend on the point, so the
# first-order rows stay unbatched up to the first nonlinearity (NOTE [taylor
# coefficients]): a first layer's W @ I is one small product per call, where the batched
# program multiplies a per-point copy of the basis.  Measured (tanh MLPs written W @ x + b,
# jax.jit, one thread, 2-core Xeon, ms, batched program / vmap of the single point /
# folx's forward Laplacian): 50-192-192-128-128-1 B16 2.21 / 1.94 / 2.01;
# 50-768-768-512-512-1 B8 8.58 / 8.49 / 9.12; 16-64-64-1 B64 0.50 / 0.25 / 0.26;
# 2-128x6-3 B256 5.16 / 2.78 / 3.03.  torch records the batched program (torch.func's vmap
# cannot be recorded from inside) and keeps it.
def batched_curvature_inside(backend: str, estimator: str) -> bool:
    """Whether a batched curvature transform propagates through the batched program (else
    the vmap of its single-point form): NOTE [batched curvature on jax]."""
    return backend == "torch" or estimator != "exact"
