"""What checkpoint.py compares a saved state with: path names, stored shapes, host-only arrays."""
import json
from typing import Any, Optional

import jax
import numpy as np

PyTree = Any


def abstract_state(state: PyTree) -> PyTree:
  """Replaces every array of `state` by a ShapeDtypeStruct, for restoring without a real copy.

  Works on concrete states and on the output of `jax.eval_shape` (whose structs carry no sharding).
  Leaves without a sharding get the first local device, so orbax restores jax arrays there rather
  than on whatever device the checkpoint was written from.

  Args:
    state: a pytree (e.g. a TrainState) of arrays, ShapeDtypeStructs and Python scalars.

  Returns:
    The same pytree with ShapeDtypeStructs in place of arrays; Python scalars are kept.
  """
  default_sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def to_abstract(leaf):
    if not isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)):
      return leaf
    sharding = getattr(leaf, 'sharding', None) or default_sharding
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

  return jax.tree_util.tree_map(to_abstract, state)


def path_name(path) -> str:
  """'params/decoder/embed/embedding' for a jax key path (dict keys, attributes, indices)."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def stored_shape(leaf) -> tuple[int, ...]:
  """The shape a leaf has on disk; typed PRNG keys are stored as their uint32 key data."""
  shape = tuple(leaf.shape) if hasattr(leaf, 'shape') else np.shape(leaf)   # Python scalars
  dtype = getattr(leaf, 'dtype', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    shape = tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
  return shape


def flat_shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
  """Maps each leaf's path name to its stored shape, in flattening order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {path_name(path): stored_shape(leaf) for path, leaf in flat}


def first_mismatch(saved: dict, expected: dict) -> Optional[str]:
  """Describes the first path whose presence or shape differs, or returns None if all match."""
  for name, shape in expected.items():
    if name not in saved:
      return f'no {name} but the config builds one of shape {shape}'
    if saved[name] != shape:
      return f'{name} of shape {saved[name]} but the config builds {shape}'
  for name, shape in saved.items():
    if name not in expected:
      return f'{name} of shape {shape} that the config does not build'
  return None


def check_host_state(state: PyTree) -> None:
  """Refuses per-device (pmapped) arrays: checkpoints hold the unreplicated host state only."""
  flat, _ = jax.tree_util.tree_flatten_with_path(state)
  for path, leaf in flat:
    if (isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1
        and not leaf.sharding.is_fully_replicated):
      raise ValueError(
          f'save() got {path_name(path)} split over {len(leaf.sharding.device_set)} devices; '
          'pass the unreplicated host state (unreplicate it in parallel.py first)')


def check_json(name: str, value: Any) -> None:
  """Fails now rather than in orbax's background thread when a dict is not JSON-serialisable."""
  try:
    json.dumps(value)
  except TypeError as e:
    raise TypeError(f'save() got a {name} that is not JSON-serialisable: {e}') from e
