"""Real models through crossgrad, each checked against its framework's own transforms.

torch: an ``nn.Module`` passed as it is (per-sample parameter Jacobians keyed by parameter
name, the model's order kept; checked against ``functional_call`` under torch.func).  jax: an Equinox model and a Flax
NNX state passed whole (static leaves such as activation functions are not
differentiated: ``None`` at their place, as ``eqx.filter_grad`` gives).

    python examples/models.py
"""

from __future__ import annotations

import numpy as np

import crossgrad as cg


def torch_module() -> None:
    import torch
    from torch.func import functional_call, jacrev, vmap

    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = torch.randn(32, 4, generator=g)

    def f(p: dict, xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (xi,))

    # The module itself as the argument: crossgrad differentiates its parameters.
    jac = cg.batched_jacobian(lambda m, xi: m(xi), 0, (None, 0))(model, x)
    ref = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    worst = max(float((jac[k] - ref[k]).abs().max().detach()) for k in params)
    print(f"torch nn.Module: per-sample parameter Jacobians {', '.join(f'{k} {tuple(v.shape)}' for k, v in jac.items())}"
          f" (the model's order); max |crossgrad - torch.func| = {worst:.1e}")
    assert worst < 1e-5


def equinox_model() -> None:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    model = eqx.nn.MLP(3, 1, 16, 2, activation=jax.nn.softplus, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (64, 3))
    loss = lambda m, xs: jnp.mean(jax.vmap(m)(xs) ** 2)  # noqa: E731
    grads = cg.grad(loss)(model, xs)
    ref = eqx.filter_grad(loss)(model, xs)
    worst = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(grads),
                                                             jax.tree_util.tree_leaves(ref)))
    lap = cg.batched_laplacian(lambda m, x: m(x)[0], 1, (None, 0))(model, xs)
    print(f"equinox MLP: grad is an {type(grads).__name__} (activation: {grads.activation}); "
          f"max |crossgrad - eqx.filter_grad| = {worst:.1e}; per-point Laplacians {tuple(lap.shape)}")
    assert worst < 1e-5


def flax_nnx_model() -> None:
    import jax.numpy as jnp
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.a, self.b = nnx.Linear(3, 16, rngs=rngs), nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
            return self.b(jnp.tanh(self.a(x)))

    net = Net(nnx.Rngs(0))
    x = jnp.linspace(-1.0, 1.0, 3)
    graphdef, state = nnx.split(net)
    grads = cg.grad(lambda s: (nnx.merge(graphdef, s)(x) ** 2).sum())(state)
    ref = nnx.grad(lambda m: (m(x) ** 2).sum())(net)
    import jax

    worst = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref)))
    print(f"flax nnx: grad is a {type(grads).__name__}; max |crossgrad - nnx.grad| = {worst:.1e}")
    assert worst < 1e-5


if __name__ == "__main__":
    torch_module()
    equinox_model()
    flax_nnx_model()
