"""Tests for transformer_jax/decoding/decode.py (greedy search and sampling) on toy scoring
functions with known probabilities (toy_models.py); beam search is beam_test.py's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding import toy_models as toy
from transformer_jax.base.errors import UserError
from transformer_jax.decoding import beam
from transformer_jax.decoding import decode


def test_greedy_matches_reference_and_pads_after_eos():
  tables = toy.random_tables(rows=6, vocab=6, seed=0, eos_bias=1.0)
  out = toy.run_greedy(toy.table_fn(tables), 6, max_decode_len=8, eos_id=toy.EOS)
  np.testing.assert_array_equal(out, toy.greedy_reference(tables, 8))
  ended = 0
  for row in out:
    if toy.EOS in row:
      ended += 1
      first_eos = list(row).index(toy.EOS)
      assert np.all(row[:first_eos] > 1) and np.all(row[first_eos + 1:] == 0)
  assert ended >= 3  # the test must actually exercise EOS handling


def test_greedy_stops_when_all_ended():
  calls = []

  def counted_fn(token_ids, cache):
    jax.debug.callback(lambda step: calls.append(int(step)), cache['step'])
    return toy.table_fn(toy.log_table(toy.AB_PROBS))(token_ids, cache)

  out = toy.run_greedy(counted_fn, 1, max_decode_len=10, eos_id=toy.EOS)
  np.testing.assert_array_equal(out[0], [toy.A, toy.EOS] + [0] * 8)
  assert len(calls) == 2


NO_EOS = toy.random_tables(rows=3, vocab=5, seed=3, eos_bias=toy.IMPOSSIBLE)


@pytest.mark.parametrize('search', ['greedy', 'sample', 'beam'])
def test_max_lengths_respected_per_example(search):
  fn, kwargs = toy.table_fn(NO_EOS), dict(max_decode_len=6, eos_id=toy.EOS,
                                      max_lengths=jnp.array([1, 3, 6]))
  if search == 'greedy':
    out = toy.run_greedy(fn, 3, **kwargs)
  elif search == 'sample':
    out = toy.run_sample(fn, 3, **kwargs)
  else:
    out, scores = toy.run_beam(fn, 3, 2, alpha=0.6, **kwargs)
    out = out[:, 0]
    # Forced to end with EOS at the limit although EOS is impossible here: the EOS
    # log-prob is floored, so each example still gets a real hypothesis.
    assert np.all(scores[:, 0] > beam._INVALID_BELOW)
    np.testing.assert_array_equal(out[[0, 1, 2], [0, 2, 5]], [toy.EOS] * 3)
  np.testing.assert_array_equal((out > 0).sum(axis=1), [1, 3, 6])
  assert np.all(out[0, 1:] == 0) and np.all(out[1, 3:] == 0)


@pytest.mark.parametrize('kwargs', [dict(temperature=0.0), dict(temperature=1e-6),
                                    dict(top_k=1), dict(top_p=1e-3)])
def test_sampling_degenerates_to_greedy(kwargs):
  tables = toy.random_tables(rows=6, vocab=6, seed=4, eos_bias=0.5)
  fn = toy.table_fn(tables)
  greedy = toy.run_greedy(fn, 6, max_decode_len=8, eos_id=toy.EOS)
  sampled = toy.run_sample(fn, 6, seed=5, max_decode_len=8, eos_id=toy.EOS, **kwargs)
  np.testing.assert_array_equal(sampled, greedy)


# First token: p(A)=0.5, p(B)=0.3, p(C)=0.2.
FIRST_PROBS = np.zeros((1, 1, 5, 5))
FIRST_PROBS[0, 0, :, toy.A] = 0.5
FIRST_PROBS[0, 0, :, toy.B] = 0.3
FIRST_PROBS[0, 0, :, toy.C] = 0.2
TEMPERED = np.sqrt([0.5, 0.3, 0.2]) / np.sqrt([0.5, 0.3, 0.2]).sum()


@pytest.mark.parametrize('kwargs,expected', [
    (dict(), [0.5, 0.3, 0.2]),
    (dict(temperature=2.0), TEMPERED),  # p ** (1 / T), renormalized
    (dict(top_k=2), [0.625, 0.375, 0.0]),
    (dict(top_p=0.6), [0.625, 0.375, 0.0]),  # A alone (0.5) falls short of 0.6
    (dict(top_p=0.4), [1.0, 0.0, 0.0]),
])
def test_sampling_frequencies(kwargs, expected):
  rows = 4000
  fn = toy.table_fn(toy.log_table(FIRST_PROBS))
  search = lambda cache, rng: decode.sample_search(cache, fn, rng, batch_size=rows,
                                                   max_decode_len=1, eos_id=toy.EOS, **kwargs)
  cache = {'row': jnp.zeros((rows,), jnp.int32), 'step': jnp.zeros((), jnp.int32)}
  first = np.asarray(jax.jit(search)(cache, jax.random.key(0)))[:, 0]
  frequencies = [np.mean(first == token) for token in (toy.A, toy.B, toy.C)]
  np.testing.assert_allclose(frequencies, expected, atol=0.03)


def test_sampling_rejects_bad_settings():
  with pytest.raises(UserError, match='top_p'):
    decode.sample_search({}, None, None, batch_size=1, max_decode_len=1, eos_id=toy.EOS,
                         top_p=0.0)

