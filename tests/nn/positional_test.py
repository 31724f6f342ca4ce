"""Positional encodings: the paper's formula, relative positions as linear maps, RoPE offsets."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn.config import TABLE_POSITIONAL_KINDS
from transformer_jax.nn import positional


def test_sinusoidal_table_equals_paper_formula():
  max_len, dim = 50, 16
  table = positional.sinusoidal_table(max_len, dim)
  for pos in range(max_len):
    for i in range(dim // 2):
      angle = pos / 10000 ** (2 * i / dim)
      assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-6)
      assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-6)


def block_rotation(k, dim):
  """M_k: for each (sin, cos) pair with frequency w, the rotation by angle k*w."""
  m = np.zeros((dim, dim))
  for i in range(dim // 2):
    w = 1.0 / 10000 ** (2 * i / dim)
    c, s = math.cos(k * w), math.sin(k * w)
    # sin(a+b) = sin a cos b + cos a sin b;  cos(a+b) = cos a cos b - sin a sin b
    m[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, s], [-s, c]]
  return m


@pytest.mark.parametrize('k', [1, 2, 7, 30])
def test_relative_offset_is_one_linear_map_for_all_positions(k):
  dim, max_len = 32, 128
  table = positional.sinusoidal_table(max_len + k, dim).astype(np.float64)
  m_k = block_rotation(k, dim)
  np.testing.assert_allclose(m_k @ m_k.T, np.eye(dim), atol=1e-12)       # a rotation
  predicted = table[:max_len] @ m_k.T                                     # M_k PE(t), every t
  np.testing.assert_allclose(predicted, table[k:max_len + k], atol=1e-5)


def test_rope_score_depends_only_on_offset():
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  rotate = lambda x, p: positional.apply_rotary(x, jnp.array([[p]]))
  score = lambda m, n: float(jnp.sum(rotate(q, m) * rotate(k, n)))
  for offset in [-5, 0, 3, 11]:
    reference = score(20, 20 + offset)
    for start in [0, 7, 40, 90]:
      if start + offset >= 0:
        assert score(start, start + offset) == pytest.approx(reference, abs=1e-4)
  assert abs(score(0, 3) - score(0, 4)) > 1e-3       # and it does depend on the offset


def test_rope_keeps_norms_and_is_identity_at_zero():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 5, 3, 8)), jnp.float32)
  positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
  rotated = positional.apply_rotary(x, positions)
  np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)
  np.testing.assert_allclose(rotated[:, 0], x[:, 0], atol=1e-6)


@pytest.mark.parametrize('kind', ['sinusoidal', 'learned', 'multiplicative'])
def test_embedding_positions_follow_given_positions(kind):
  """Positions are explicit: a packed row restarting at 0 gets the same code as a fresh row."""
  module = positional.make_positions(kind, max_len=10)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 6, 4)), jnp.float32)
  positions = jnp.array([[0, 1, 2, 0, 1, 2]])
  variables = module.init(jax.random.key(0), x, positions)
  if kind == 'learned':   # random table: make the multiplicative one non-trivial too below
    assert variables['params']['table'].shape == (10, 4)
  if kind == 'multiplicative':
    np.testing.assert_array_equal(module.apply(variables, x, positions), x)   # starts as identity
    variables = {'params': {'table': jnp.arange(40.0).reshape(10, 4)}}
  out = module.apply(variables, x, positions)
  shifted = module.apply(variables, x[:, 3:], jnp.array([[0, 1, 2]]))
  np.testing.assert_allclose(out[:, 3:], shifted, atol=1e-6)
  moved = module.apply(variables, x[:, 3:], jnp.array([[3, 4, 5]]))
  assert not np.allclose(moved, shifted)               # and the position does matter


def test_rotary_and_none_add_nothing_to_embeddings():
  assert positional.make_positions('rotary', 10) is None
  assert positional.make_positions('none', 10) is None


@pytest.mark.parametrize('kind', ['sinusoidal', 'learned', 'multiplicative'])
def test_table_kinds_refuse_a_sequence_longer_than_their_table(kind):
  """Past the table jnp.take gives NaN under jit: the module says so instead, at trace time."""
  module = positional.make_positions(kind, max_len=16)
  x = jnp.ones((2, 17, 4), jnp.float32)
  variables = module.init(jax.random.key(0), x[:, :16], positional.default_positions(x[:, :16]))
  apply = jax.jit(module.apply)
  assert np.isfinite(apply(variables, x[:, :16], positional.default_positions(x[:, :16]))).all()
  with pytest.raises(ValueError, match='sequence length 17 exceeds max_len=16 of the positional '
                                       'table: raise TransformerConfig.max_len'):
    apply(variables, x, positional.default_positions(x))


def test_table_kinds_are_the_embedding_modules():
  assert set(positional.EMBEDDING_POSITIONS) == set(TABLE_POSITIONAL_KINDS)
