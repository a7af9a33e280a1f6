"""Device mesh, logical-axis rules and global batches.

The mesh has axes ('data', 'fsdp', 'model'); parameters and activations carry logical axis
names (set in the models) that the config's `logical_axis_rules` map to mesh axes. Shardings are
decided from `jax.eval_shape` before anything is materialised.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from lazy_jax.errors import InputError

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")  # the batch is split over both; fsdp also shards parameters

# Logical name -> mesh axis (or None = replicated). Flax picks the first rule whose mesh axis is
# still free in that array, so activations' 'embed' stays unsharded once 'batch' took 'fsdp'.
DEFAULT_RULES = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("vocab", "model"),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("classes", None),
    ("relpos_buckets", None),
    ("patch", None),
)


def mesh_shape(mesh_config, num_devices: int) -> tuple[int, ...]:
    """Resolves the config's {data, fsdp, model} sizes (one may be -1 = the rest) against devices."""
    sizes = [mesh_config[a] for a in MESH_AXES]
    for axis, s in zip(MESH_AXES, sizes):
        if not isinstance(s, int) or (s < 1 and s != -1):
            raise InputError(f"mesh.{axis}={s!r} is not allowed: use a positive integer or -1 (= the rest)")
    if sizes.count(-1) > 1:
        raise InputError(f"mesh {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise InputError(
                f"mesh {dict(zip(MESH_AXES, sizes))} does not fit {num_devices} devices: "
                f"{num_devices} is not divisible by {known}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise InputError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
            f"{num_devices} are present; make data*fsdp*model equal {num_devices} or set one axis to -1"
        )
    return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)


def data_parallel_size(mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def check_batch_size(global_batch_size: int, mesh, what: str = "batch_size") -> None:
    dp = data_parallel_size(mesh)
    if global_batch_size <= 0 or global_batch_size % dp:
        raise InputError(
            f"{what}={global_batch_size} must be a positive multiple of the data-parallel size "
            f"{dp} (mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})"
        )
    if global_batch_size % jax.process_count():
        raise InputError(f"{what}={global_batch_size} must be divisible by the process count {jax.process_count()}")


def batch_sharding(mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def rules_of(config) -> tuple:
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes) for name, axes in config.logical_axis_rules)


def global_batch(local_batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Assembles each process's rows into global arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
