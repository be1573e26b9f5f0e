"""The transforms, written once over a backend's primitives.

``common.py`` holds what every transform does with a call (argument checks, pytrees
as flat leaves); ``derivatives.py`` grad, value_and_grad, vjp, jvp, linearize and hvp;
``vectorize.py`` vmap; ``jacobians.py`` jacrev, jacfwd and jacobian; ``hessians.py``
hessian; ``batched.py`` the per-sample forms; ``namespace.py`` binds them all to a
backend.
"""
