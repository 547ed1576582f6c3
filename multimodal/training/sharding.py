"""The device mesh and the mapping from logical axis names to mesh axes."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "model")

# Data parallel over `data`, parameters and optimizer state sharded over `fsdp` along the
# model width, tensor parallel over `model` for heads and MLP hidden units. A scanned stack's
# `layers` axis stays whole on every device (the scan slices it one layer per step).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("vocab", "model"),
    ("classes", "model"),
    ("pos", None),
    ("conv_in", None),
    ("conv_out", None),
    ("layers", None),
)


def make_mesh(sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "fsdp", "model") mesh; one size may be -1 for "all remaining devices"."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(sizes) - set(MESH_AXES)
  if unknown:
    raise KeyError(f"Unknown mesh axes {sorted(unknown)}; the mesh axes are {MESH_AXES}.")
  shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
  if shape.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got {dict(sizes)}.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices do not split into a mesh {dict(sizes)}.")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(f"Mesh {dict(zip(MESH_AXES, shape))} needs {int(np.prod(shape))} devices, "
                     f"but {len(devices)} are available.")
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> Any:
  """NamedShardings for a tree of (possibly `nn.LogicallyPartitioned`) abstract arrays.

  A dimension whose size does not divide by its mesh axes stays replicated (logged once per
  parameter), so small layers such as 4-head biases still place on an 8-way `model` axis.
  """
  specs = nn.get_partition_spec(abstract_tree)
  mesh_specs = nn.logical_to_mesh(specs, rules)
  shapes = nn.meta.unbox(abstract_tree)

  def fit(spec: PartitionSpec, leaf: Any) -> NamedSharding | Any:
    if not hasattr(leaf, "shape"):  # An empty node (optax's MaskedNode for frozen params).
      return leaf
    dims = []
    for size, axes in zip(leaf.shape, tuple(spec) + (None,) * (leaf.ndim - len(spec))):
      names = (axes,) if isinstance(axes, str) else tuple(axes or ())
      ways = int(np.prod([mesh.shape[n] for n in names])) if names else 1
      if size % ways:
        logging.info("Replicating a dimension of size %d that does not split %d ways.",
                     size, ways)
        axes = None
      dims.append(axes)
    return NamedSharding(mesh, PartitionSpec(*dims))

  return jax.tree.map(fit, mesh_specs, shapes,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))
