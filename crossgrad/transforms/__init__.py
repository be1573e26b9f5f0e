"""The transforms, written once over a backend's primitives, each a function that takes the
backend first.

``call.py`` holds what every transform does with one call (the arguments as flat leaves,
their signature checks, the user's function called with the framework's refusals named);
``builtin.py`` the framework's own transforms as a route; ``policy.py`` every measured
choice ``auto`` makes; ``derivatives.py`` grad, value_and_grad, vjp, jvp and linearize;
``hessian_vector.py`` hvp and the one Hessian-vector product builder; ``vectorize.py`` vmap; ``chunking.py`` fixed and memory-sized chunks;
``jacobians.py`` jacrev, jacfwd and jacobian; ``hessians.py`` hessian; ``batched.py`` the
per-sample forms; ``taylor.py`` and ``curvature.py`` Laplacians, Hessian traces and
diagonals; ``operators.py`` the Hessian as a linear operator; ``compiled.py`` jit and
``guards.py`` what its compiled programs took from the function's surroundings;
``checking.py`` check_grads; ``adjoint.py`` auto's forward/reverse agreement check;
``auxiliary.py`` aux values that are not arrays; ``namespace.py`` binds them all to a
backend behind the input watch.
"""
