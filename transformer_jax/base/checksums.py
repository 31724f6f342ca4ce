"""CRC-32 checksums of a pytree's arrays, so that a checkpoint damaged on disk is caught.

Orbax writes each array as zstd frames without a content checksum. Float weights hardly
compress, so zstd stores most of their bytes as they are, and a byte changed in place (bit rot,
a bad copy) reads back as a wrong value with no error. checkpoint.py stores `tree_checksums` of
the state with each step and checks `first_mismatch` after every restore.

Cost: one host copy plus one `zlib.crc32` pass over the bytes, linear in the state's size:
0.12 s for 250 MB of float32 on a 2-core CPU (about 2 GB/s), plus the device-to-host copy when the
state lives on an accelerator. The same holds for the check after a restore.
"""
import zlib
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def _name(path) -> str:
  """'params/decoder/embed/embedding' for a jax key path."""
  return jax.tree_util.keystr(path, simple=True, separator='/')


def _host(leaf) -> np.ndarray:
  """The leaf's values as a host array; typed PRNG keys as their uint32 key data."""
  if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(jax.device_get(leaf))


def _crc(array: np.ndarray) -> str:
  return f'{zlib.crc32(np.ascontiguousarray(array).reshape(-1).view(np.uint8)):08x}'


def _arrays(tree: PyTree, prefix: str = ''):
  """(path name, leaf) for each array leaf; Python scalars carry no bytes worth checking."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, (jax.Array, np.ndarray)):
      yield prefix + _name(path), leaf


def tree_checksums(tree: PyTree) -> Dict[str, str]:
  """'<dtype>:<crc32 hex>' for every array leaf of `tree`, keyed by its path name."""
  sums = {}
  for name, leaf in _arrays(tree):
    host = _host(leaf)
    sums[name] = f'{host.dtype.name}:{_crc(host)}'
  return sums


def first_mismatch(tree: PyTree, recorded: Dict[str, str], prefix: str = '') -> Optional[str]:
  """The path of the first array of `tree` whose bytes differ from `recorded`, or None.

  Args:
    tree: a restored pytree (the whole state, or a part of it such as the params).
    recorded: `tree_checksums` of the saved state.
    prefix: what `tree`'s paths lack to match `recorded`, e.g. 'params/' for the params alone.

  A leaf read in a wider dtype than it was saved in (bfloat16 read as float32 for averaging) is
  cast back first, which is exact. Leaves that `recorded` lacks, or read in a narrower dtype,
  cannot be compared and are passed over.
  """
  for name, leaf in _arrays(tree, prefix):
    if name not in recorded:
      continue
    dtype_name, crc = recorded[name].split(':')
    saved_dtype, host = jnp.dtype(dtype_name), _host(leaf)
    if host.dtype != saved_dtype:
      if not np.can_cast(saved_dtype, host.dtype, 'safe'):
        continue
      host = host.astype(saved_dtype)
    if _crc(host) != crc:
      return name
  return None
