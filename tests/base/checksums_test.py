"""Tests for transformer_jax.base.checksums: what a changed byte, a dtype change and a key look like."""
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.base import checksums


def _tree():
  return {'params': {'w': jnp.arange(12, dtype=jnp.float32).reshape(3, 4),
                     'e': jnp.linspace(-1, 1, 5).astype(jnp.bfloat16)},
          'rng': jax.random.key(3), 'step': 7}


def test_unchanged_tree_matches_and_python_scalars_are_skipped():
  sums = checksums.tree_checksums(_tree())
  assert sorted(sums) == ['params/e', 'params/w', 'rng']
  assert sums['params/e'].startswith('bfloat16:') and sums['rng'].startswith('uint32:')
  assert checksums.first_mismatch(_tree(), sums) is None


def test_one_changed_value_is_named():
  sums = checksums.tree_checksums(_tree())
  changed = _tree()
  changed['params']['w'] = changed['params']['w'].at[1, 2].add(1e-6)
  assert checksums.first_mismatch(changed, sums) == 'params/w'
  changed = _tree()
  changed['rng'] = jax.random.key(4)
  assert checksums.first_mismatch(changed, sums) == 'rng'


def test_a_part_read_in_a_wider_dtype_is_checked_exactly():
  """The params alone, bfloat16 read back as float32 (as averaging does), still compare."""
  sums = checksums.tree_checksums(_tree())
  params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), _tree()['params'])
  assert checksums.first_mismatch(params, sums, prefix='params/') is None
  params['e'][0] += 0.5
  assert checksums.first_mismatch(params, sums, prefix='params/') == 'params/e'
  # A narrower read cannot be compared, so it is not reported as damage.
  narrow = {'w': _tree()['params']['w'].astype(jnp.bfloat16)}
  assert checksums.first_mismatch(narrow, sums, prefix='params/') is None
