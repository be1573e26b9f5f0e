"""The batch spread over devices on each framework's own engine: jax with four virtual
CPU devices (a mesh, jax.jit partitioning), torch with two processes over gloo.

Spread results equal, bit for bit, one device computing each participant's slice of
the batch; against one device computing the whole batch at once they agree to a few
ulp (XLA and torch vectorize a batch of 8 and a batch of 2 differently: 2.8e-16 here)."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import distributed, frameworks, problems


def _jax_problem(batch: int):
    """On a CPU device: the one-device references must run where the mesh's devices are
    (on a GPU machine jax's default device is the GPU, whose arithmetic differs)."""
    import jax

    prob = problems.tanh_linear(n_in=7, n_out=4, batch=batch)
    args = frameworks.convert(prob.inputs(np.random.default_rng(3)), "jax", "float64")
    return prob.build(frameworks.ops("jax")), jax.device_put(args, jax.devices("cpu")[0])


@pytest.fixture
def cpu_devices():
    jax = pytest.importorskip("jax")
    devices = jax.devices("cpu")
    if len(devices) < 4:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/conftest.py sets it)")
    return devices[:4]


def _exactly_equal(a, b):
    for x, y in zip(frameworks.pytree.leaves(frameworks.to_numpy(a)), frameworks.pytree.leaves(frameworks.to_numpy(b))):
        assert x.shape == y.shape and np.array_equal(x, y)


def _ulp_close(a, b):
    frameworks.assert_trees_close(a, b, rtol=1e-14, atol=1e-15)


def _sliced(fn, args, bounds, axis=0):
    """One device computing each participant's slice of the batch, concatenated."""
    W, b, x = args
    parts = [frameworks.to_numpy(fn(W, b, x[lo:hi])) for lo, hi in bounds]
    return frameworks.pytree.unflatten(frameworks.pytree.flatten(parts[0])[1], [
        np.concatenate(leaves, axis=axis) for leaves in zip(*(frameworks.pytree.leaves(p) for p in parts))])


@pytest.mark.parametrize("transform", ["batched_jacobian", "batched_hessian", "vmap"])
def test_jax_sharded_equals_one_device(cpu_devices, transform):
    import jax

    f, args = _jax_problem(batch=8)
    make = getattr(cg.jax, transform)
    options = dict(in_axes=(None, None, 0)) if transform == "vmap" else dict(argnums=2, in_axes=(None, None, 0))
    one = jax.jit(make(f, **options))  # one device, compiled as the spread call is
    spread = make(f, **options, devices=cpu_devices)(*args)
    _exactly_equal(spread, _sliced(one, args, [(0, 2), (2, 4), (4, 6), (6, 8)]))
    _ulp_close(spread, one(*args))
    assert len(spread.sharding.device_set) == 4
    assert [s.data.shape[0] for s in spread.addressable_shards] == [2, 2, 2, 2]  # the batch, split
    gathered = make(f, **options, devices=cpu_devices, gather=True)(*args)
    _exactly_equal(gathered, spread)
    assert all(s.data.shape == gathered.shape for s in gathered.addressable_shards)  # every device holds all
    assert jax.default_backend() in ("cpu", "gpu", "tpu")


def test_jax_mesh_with_two_axes_and_out_axes(cpu_devices):
    import jax

    mesh = jax.sharding.Mesh(np.array(cpu_devices).reshape(2, 2), ("data", "model"))
    f, args = _jax_problem(batch=8)
    one = jax.jit(cg.jax.vmap(f, in_axes=(None, None, 0), out_axes=1))
    spread = cg.jax.vmap(f, in_axes=(None, None, 0), out_axes=1, devices=mesh)(*args)
    _exactly_equal(spread, _sliced(one, args, [(0, 2), (2, 4), (4, 6), (6, 8)], axis=1))
    assert spread.sharding.spec[1] == ("data", "model")


def test_jax_uneven_batch_needs_gather(cpu_devices):
    import jax

    f, args = _jax_problem(batch=6)
    make = cg.jax.batched_hessian
    with pytest.raises(cg.AxisSizeError, match="divisible by the 4 devices of the mesh"):
        make(f, argnums=2, in_axes=(None, None, 0), devices=cpu_devices)(*args)
    gathered = make(f, argnums=2, in_axes=(None, None, 0), devices=cpu_devices, gather=True)(*args)
    # 6 samples padded to 8: devices hold 2, 2, 2 and (2 copies of the last sample)
    one = jax.jit(make(f, argnums=2, in_axes=(None, None, 0)))
    _exactly_equal(gathered, _sliced(one, args, [(0, 2), (2, 4), (4, 6)]))


def test_jax_already_sharded_inputs_stay_put(cpu_devices):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(cpu_devices), ("batch",))
    W, b, x = _jax_problem(batch=8)[1]
    f = _jax_problem(batch=8)[0]
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("batch")))
    out = cg.jax.batched_jacobian(f, argnums=2, in_axes=(None, None, 0), devices=mesh)(W, b, sharded)
    assert out.sharding.spec[0] == "batch"
    one = jax.jit(cg.jax.batched_jacobian(f, argnums=2, in_axes=(None, None, 0)))
    _exactly_equal(out, _sliced(one, (W, b, x), [(0, 2), (2, 4), (4, 6), (6, 8)]))


def test_torch_two_processes_over_gloo(tmp_path):
    torch = pytest.importorskip("torch")
    import torch.multiprocessing as mp

    mp.spawn(distributed.torch_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    rows = [(0, 3), (3, 5)]  # 5 samples: 3 + 2, torch.tensor_split's split
    f, args = distributed.problem()
    axes = (None, None, 0)
    one = {
        "batched_hessian": cg.torch.batched_hessian(f, argnums=2, in_axes=axes),
        "batched_jacobian": cg.torch.batched_jacobian(f, argnums=(1, 2), in_axes=axes),
        "vmap": cg.torch.vmap(f, in_axes=axes),
        "vmap, out_axes=1": cg.torch.vmap(f, in_axes=axes, out_axes=1),
    }
    for rank, (lo, hi) in enumerate(rows):
        W, b, x = args
        _exactly_equal(ranks[rank]["batched_hessian"], one["batched_hessian"](W, b, x[lo:hi]))
        _exactly_equal(ranks[rank]["vmap"], one["vmap"](W, b, x[lo:hi]))
        _exactly_equal(ranks[rank]["batched_hessian gathered"], _sliced(one["batched_hessian"], args, rows))
        _exactly_equal(ranks[rank]["batched_jacobian gathered"], _sliced(one["batched_jacobian"], args, rows))
        _exactly_equal(ranks[rank]["vmap gathered, out_axes=1"], _sliced(one["vmap, out_axes=1"], args, rows, axis=1))
        _exactly_equal(ranks[rank]["group"], _sliced(one["batched_hessian"], args, rows))
        _ulp_close(ranks[rank]["batched_hessian gathered"], one["batched_hessian"](*args))


def test_torch_without_a_process_group_says_how_to_start_one():
    torch = pytest.importorskip("torch")
    with pytest.raises(cg.OptionError, match="init_process_group"):
        cg.torch.vmap(torch.sin, devices="all")(torch.ones(3, 2))


@pytest.mark.parametrize("bad", ["gpu", 3])
def test_bad_devices_get_one_message_on_both_backends(bad):
    messages = set()
    for name in frameworks.selected():
        with pytest.raises(cg.OptionTypeError) as caught:
            cg.backend(name).batched_jacobian(lambda x: x, devices=bad)
        messages.add(str(caught.value))
    assert len(messages) == 1
    assert messages.pop() == (
        "batched_jacobian: expected devices to be None, 'all', a jax.sharding.Mesh or list of jax devices (jax "
        f"backend), or a torch.distributed.ProcessGroup (torch backend), but got {bad!r} of type "
        f"{type(bad).__name__}. Pass devices='all' to spread the batch over every device (jax) or every rank of "
        "the default process group (torch).")


def test_gather_must_be_a_bool(backend):
    with pytest.raises(cg.OptionTypeError, match="gather to be True or False"):
        backend.vmap(lambda x: x, devices="all", gather="yes")


def test_participants_of_all(backend):
    """What devices="all" spreads over here: jax's devices; torch's ranks, 1 without a process group."""
    count = backend.backend.distributed.participants("all")
    if backend.name == "jax":
        import jax

        assert count == len(jax.devices())
    else:
        assert count == 1
