"""The graph-style API of the seed notebook's ``from hessian import hessian, jacobian``,
vectorized, for torch (its code: :mod:`crossgrad.backends.torch.graph`, where torch is
imported: this module imports torch only when a user imports it).

Build the graph first, then pass the output tensor(s) and the leaf input(s)::

    >>> import torch
    >>> from crossgrad.graph import hessian, jacobian
    >>> x = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> hessian((x ** 3).sum(), x)
    tensor([[ 6.,  0.],
            [ 0., 12.]])
"""

from __future__ import annotations

from crossgrad.backends.torch.graph import gradient, hessian, jacobian

__all__ = ["gradient", "hessian", "jacobian"]
