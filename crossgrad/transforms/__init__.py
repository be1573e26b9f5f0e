"""The transforms, written once over a backend's primitives.

``common.py`` holds what every transform does with a call (argument checks, pytrees
as flat leaves); ``policy.py`` every measured choice ``auto`` makes; ``derivatives.py``
grad, value_and_grad, vjp, jvp, linearize and hvp; ``vectorize.py`` vmap; ``chunking.py``
fixed and memory-sized chunks; ``jacobians.py`` jacrev, jacfwd and jacobian;
``hessians.py`` hessian; ``batched.py`` the per-sample forms; ``taylor.py`` and
``curvature.py`` Laplacians, Hessian traces and diagonals; ``operators.py`` the Hessian as
a linear operator; ``compiled.py`` jit; ``checking.py`` check_grads; ``adjoint.py`` auto's
forward/reverse agreement check; ``auxiliary.py`` aux values that are not arrays;
``namespace.py`` binds them all to a backend.
"""
