"""transformer_jax/decoding/top_k.py: the blocked top-k equals jax.lax.top_k exactly, ties included."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.decoding import decode
from transformer_jax.decoding import top_k as topk


def _rows(shape, seed, kind):
  rng = np.random.RandomState(seed)
  x = rng.randn(*shape).astype(np.float32)
  if kind == 'ties':                 # few distinct values: ties at every rank
    x = np.round(x * 2) / 2
  elif kind == 'dead':               # beam search's dead beams: NEG_INF plus a log-prob
    x[..., : shape[-1] // 2] = decode.NEG_INF + x[..., : shape[-1] // 2]
  elif kind == 'late':               # the best values sit in the tail past the last block
    x[..., -5:] += 100.0
  elif kind == 'one_block':          # all the top values inside one block
    x[..., 300:310] += 50.0
  return jnp.asarray(x)


@pytest.mark.parametrize('kind', ['plain', 'ties', 'dead', 'late', 'one_block'])
@pytest.mark.parametrize('n,k,block', [(40000, 10, 128), (30005, 8, 64), (10240, 10, 128),
                                       (185000, 10, 128)])
def test_blocked_top_k_equals_lax_top_k(kind, n, k, block):
  x = _rows((3, n), seed=n + k, kind=kind)
  want_values, want_indices = jax.lax.top_k(x, k)
  values, indices = jax.jit(lambda x: topk.top_k(x, k, block))(x)
  assert indices.dtype == jnp.int32
  np.testing.assert_array_equal(indices, want_indices)
  np.testing.assert_array_equal(values, want_values)


def test_the_blocked_path_is_taken_for_long_rows_and_not_for_short_ones():
  long_row = jax.make_jaxpr(lambda x: topk.top_k(x, 10))(jnp.zeros((2, 40000)))
  short_row = jax.make_jaxpr(lambda x: topk.top_k(x, 10))(jnp.zeros((2, 4000)))
  count = lambda jaxpr: str(jaxpr).count('top_k')
  assert count(long_row) == 2 and count(short_row) == 1


def test_extra_leading_axes_and_a_constant_row():
  x = _rows((2, 3, 20000), seed=1, kind='plain').at[0, 1].set(0.25)  # one row all equal
  want = jax.lax.top_k(x, 6)
  got = topk.top_k(x, 6, block=64)
  np.testing.assert_array_equal(got[1], want[1])
  np.testing.assert_array_equal(got[1][0, 1], np.arange(6))          # lowest indices first
  np.testing.assert_array_equal(got[0], want[0])


def test_beam_search_over_a_large_vocabulary_is_unchanged(monkeypatch):
  """The same hypotheses and scores with the blocked top-k as with lax.top_k."""
  batch, beam, vocab, length = 3, 5, 2500, 7                     # beam * vocab = 12,500
  # Logits by step and previous token (modulo 16, to keep the table small), with ties.
  table = jnp.asarray(np.random.RandomState(0).randn(length, 16, vocab).astype(np.float32))
  table = jnp.round(table * 4) / 4

  def tokens_to_logits(ids, cache):
    return table[cache['step'], ids[:, 0] % 16], {'step': cache['step'] + 1}

  def search():
    return jax.jit(lambda: decode.beam_search(
        {'step': jnp.zeros((), jnp.int32)}, tokens_to_logits, batch_size=batch,
        beam_size=beam, alpha=0.6, max_decode_len=length, eos_id=1))()

  blocked = search()
  monkeypatch.setattr(topk, '_MIN_BLOCKS_PER_K', 10**9)             # always lax.top_k
  whole = search()
  np.testing.assert_array_equal(blocked[0], whole[0])
  np.testing.assert_array_equal(blocked[1], whole[1])
