"""Tests for transformer_jax/decoding/beam.py on toy scoring functions with known
probabilities (toy_models.py): exact against enumeration and brute force, early stopping, the
length penalty, the EOS charged at the length limit, n-best lists, pmap and compilation."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.decoding import toy_models as toy
from transformer_jax.base.errors import UserError
from transformer_jax.decoding import beam
from transformer_jax.decoding import predict
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.train import parallel


def test_expand_and_gather_beams():
  tree = {'x': jnp.array([10, 20]), 'index': jnp.array(7)}
  expanded = beam.expand_to_beams(tree, 3)
  np.testing.assert_array_equal(expanded['x'], [10, 10, 10, 20, 20, 20])
  assert expanded['index'].shape == ()
  flat = {'x': jnp.arange(6).reshape(6, 1), 'index': jnp.array(7)}  # batch 2, beam 3
  gathered = beam.gather_beams(flat, jnp.array([[2, 0], [1, 1]]))
  np.testing.assert_array_equal(gathered['x'][:, 0], [2, 0, 4, 4])
  assert int(gathered['index']) == 7


def test_length_penalty_formula():
  np.testing.assert_allclose(beam.length_penalty(jnp.array([1, 4, 10]), 0.6),
                             [toy.lp(1, 0.6), toy.lp(4, 0.6), toy.lp(10, 0.6)], rtol=1e-6)
  np.testing.assert_allclose(beam.length_penalty(7, 0.0), 1.0)


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_beam_size_one_equals_greedy(alpha):
  tables = toy.chain_tables(rows=5, vocab=12, seed=1)
  fn = toy.table_fn(tables)
  greedy = toy.run_greedy(fn, 5, max_decode_len=8, eos_id=toy.EOS)
  beams, _ = toy.run_beam(fn, 5, 1, alpha=alpha, max_decode_len=8, eos_id=toy.EOS)
  np.testing.assert_array_equal(beams[:, 0], greedy)
  assert np.all((greedy == toy.EOS).any(axis=1))


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_beam_finds_sequence_greedy_misses(alpha):
  fn = toy.table_fn(toy.log_table(toy.AB_PROBS))
  greedy = toy.run_greedy(fn, 1, max_decode_len=6, eos_id=toy.EOS)
  seqs, scores = toy.run_beam(fn, 1, 2, alpha=alpha, max_decode_len=6, eos_id=toy.EOS)
  assert greedy[0, 0] == toy.A
  np.testing.assert_array_equal(seqs[0, 0], [toy.B, toy.EOS, 0, 0, 0, 0])
  np.testing.assert_allclose(scores[0, 0], np.log(0.4) / toy.lp(2, alpha), rtol=1e-5)


def test_beam_search_stops_early():
  calls = []

  def counted_fn(token_ids, cache):
    jax.debug.callback(lambda step: calls.append(int(step)), cache['step'])
    return toy.table_fn(toy.log_table(toy.AB_PROBS))(token_ids, cache)

  toy.run_beam(counted_fn, 1, 2, alpha=0.0, max_decode_len=10, eos_id=toy.EOS)
  # After step 1, B EOS (log 0.4) beats every alive beam (at most log 0.15).
  assert len(calls) == 2


# Two hypotheses only: [EOS] with p=0.6 and [A, B, B, EOS] with p=0.4.
LP_PROBS = np.zeros((1, 4, 4, 4))
LP_PROBS[0, 0, 0, [toy.EOS, toy.A]] = [0.6, 0.4]
LP_PROBS[0, 1:3, :, toy.B] = 1.0
LP_PROBS[0, 3, :, toy.EOS] = 1.0
# alpha is traced here (it may be), so all the cases below share one compilation.
lp_toy_search = jax.jit(lambda cache, alpha: beam.beam_search(
    cache, toy.table_fn(toy.log_table(LP_PROBS)), batch_size=1, beam_size=2, alpha=alpha,
    max_decode_len=6, eos_id=toy.EOS))


@pytest.mark.parametrize('alpha', [0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
def test_length_penalty_decides_between_short_and_long(alpha):
  short_score = np.log(0.6) / toy.lp(1, alpha)
  long_score = np.log(0.4) / toy.lp(4, alpha)
  # By hand: the long one wins iff 1.5 ** alpha > log 0.4 / log 0.6 = 1.79, alpha > 1.44.
  assert (long_score > short_score) == (alpha > 1.44)
  long_wins = long_score > short_score
  expected, score = (([toy.A, toy.B, toy.B, toy.EOS, 0, 0], long_score) if long_wins else
                     ([toy.EOS, 0, 0, 0, 0, 0], short_score))
  seqs, scores = lp_toy_search(toy.make_cache(1, 2), alpha)
  np.testing.assert_array_equal(seqs[0, 0], expected)
  np.testing.assert_allclose(scores[0, 0], score, rtol=1e-5)


def exhaustive_scores(markov, by_sum, row, max_len, alpha):
  """Score of every complete hypothesis of `toy.history_fn`, by enumeration.

  Every hypothesis ends with EOS: one reaching max_len is forced to end there.
  """
  scores = {}
  for length in range(1, max_len + 1):
    for seq in itertools.product([toy.EOS, 2, 3], repeat=length):
      if toy.EOS in seq[:-1] or seq[-1] != toy.EOS:
        continue
      prev, total, log_prob = 0, 0, 0.0
      for token in seq:
        total += prev
        logits = markov[row, prev] + by_sum[row, total % 5]
        log_prob += jax.nn.log_softmax(logits.astype(np.float64))[token]
        prev = token
      scores[seq] = float(log_prob) / toy.lp(length, alpha)
  return scores


def assert_beams_match_enumeration(seqs, scores, markov, by_sum, max_len, alpha):
  for row in range(seqs.shape[0]):
    reference = exhaustive_scores(markov, by_sum, row, max_len, alpha)
    best = max(reference, key=reference.get)
    assert tuple(seqs[row, 0][seqs[row, 0] > 0]) == best
    for seq, score in zip(seqs[row], scores[row]):
      tokens = tuple(seq[seq > 0])
      if tokens in reference:  # finished hypotheses (alive fillers are prefixes)
        np.testing.assert_allclose(score, reference[tokens], rtol=1e-4)


def test_beam_search_matches_exhaustive_search():
  markov, by_sum = toy.history_tables(rows=3, seed=2)
  seqs, scores = toy.run_beam(toy.history_fn(markov, by_sum), 3, 8, alpha=0.6,
                              max_decode_len=4, eos_id=toy.EOS)
  assert_beams_match_enumeration(seqs, scores, markov, by_sum, 4, 0.6)
  assert np.all(np.diff(scores, axis=1) <= 0)  # best first


def brute_force_best(log_probs, max_len, alpha, charge_eos_at_cap=True):
  """(best tokens, score) of every hypothesis of `toy.table_fn(log_probs)` for one row.

  log_probs: `[steps, vocab, vocab]` normalized next-token log-probs of that row.
  With charge_eos_at_cap a hypothesis reaching max_len ends there with EOS, scoring
  log p(EOS); otherwise (the old behaviour) it ends there with any token, at no cost.
  """
  vocab_size, scores = log_probs.shape[-1], {}
  for length in range(1, max_len + 1):
    for body in itertools.product(range(2, vocab_size), repeat=length - 1):
      last_tokens = [toy.EOS] if charge_eos_at_cap or length < max_len else range(1, vocab_size)
      for last in last_tokens:
        prev, total = 0, 0.0
        for t, token in enumerate(body + (last,)):
          total += log_probs[min(t, len(log_probs) - 1), prev, token]
          prev = token
        scores[body + (last,)] = total / toy.lp(length, alpha)
  best = max(scores, key=scores.get)
  return best, scores


# The brute-force case: 3 ordinary tokens, position-dependent tables, per-row caps.
BRUTE_ROWS, BRUTE_MAX_LEN = 8, 4
BRUTE_CAPS = np.array([4, 4, 4, 3, 3, 2, 1, 4])
BRUTE_TABLES = np.asarray(jax.nn.log_softmax(
    toy.random_tables(rows=BRUTE_ROWS * BRUTE_MAX_LEN, vocab=5, seed=7, eos_bias=-0.5)
    .reshape(BRUTE_ROWS, BRUTE_MAX_LEN, 5, 5)))
# Wide enough to keep every alive prefix (3 ** (BRUTE_MAX_LEN - 1)), so nothing is pruned.
brute_force_search = jax.jit(lambda cache, alpha: beam.beam_search(
    cache, toy.table_fn(BRUTE_TABLES), batch_size=BRUTE_ROWS, beam_size=27, alpha=alpha,
    max_decode_len=BRUTE_MAX_LEN, eos_id=toy.EOS, max_lengths=jnp.asarray(BRUTE_CAPS)))


@pytest.mark.parametrize('alpha', [0.0, 0.6, 1.5])
def test_beam_search_matches_brute_force_with_eos_charged_at_cap(alpha):
  seqs, scores = map(np.asarray, brute_force_search(toy.make_cache(BRUTE_ROWS, 27), alpha))
  old_best_differs, capped_best = 0, 0
  for row in range(BRUTE_ROWS):
    cap = BRUTE_CAPS[row]
    best, reference = brute_force_best(BRUTE_TABLES[row], cap, alpha)
    old_best, _ = brute_force_best(BRUTE_TABLES[row], cap, alpha, charge_eos_at_cap=False)
    old_best_differs += old_best != best
    capped_best += len(best) == cap
    assert tuple(seqs[row, 0][seqs[row, 0] > 0]) == best
    np.testing.assert_allclose(scores[row, 0], reference[best], rtol=1e-5)
    for seq, score in zip(seqs[row], scores[row]):
      tokens = tuple(seq[seq > 0])
      if tokens and tokens[-1] == toy.EOS:  # finished ones (alive fillers have no EOS)
        np.testing.assert_allclose(score, reference[tokens], rtol=1e-5)
  assert capped_best >= 1  # the cap decides something here...
  assert old_best_differs >= 1  # ...and rows where the old free ending picks otherwise


@pytest.mark.parametrize('nbest', [2, 5])
def test_an_nbest_list_is_the_top_of_brute_force(nbest):
  """With nothing pruned (beam 27), the first nbest results are the nbest best of every
  hypothesis, scores and order; a row with fewer hypotheses (cap 1: only [EOS]; cap 2: four)
  fills the rest with empty slots."""
  search = jax.jit(lambda cache: beam.beam_search(
      cache, toy.table_fn(BRUTE_TABLES), batch_size=BRUTE_ROWS, beam_size=27, alpha=0.6,
      max_decode_len=BRUTE_MAX_LEN, eos_id=toy.EOS, max_lengths=jnp.asarray(BRUTE_CAPS),
      nbest=nbest))
  seqs, scores = map(np.asarray, search(toy.make_cache(BRUTE_ROWS, 27)))
  short_rows = 0
  for row in range(BRUTE_ROWS):
    _, reference = brute_force_best(BRUTE_TABLES[row], BRUTE_CAPS[row], 0.6)
    top = sorted(reference, key=reference.get, reverse=True)[:nbest]
    short_rows += len(top) < nbest
    assert [tuple(seq[seq > 0]) for seq in seqs[row, :len(top)]] == top
    np.testing.assert_allclose(scores[row, :len(top)], [reference[t] for t in top], rtol=1e-5)
    assert np.all(scores[row, len(top):nbest] < beam._INVALID_BELOW)
  assert short_rows >= 1


def test_an_nbest_search_runs_until_its_nbest_are_finished():
  """A narrow beam stopped for the best alone leaves unfinished fillers below it; asked for
  4, it goes on until the 4th finished hypothesis can no longer be beaten, and keeps the best
  and its score."""
  markov, by_sum = toy.history_tables(rows=16, seed=11)
  fn = toy.history_fn(markov, by_sum)
  settings = dict(alpha=0.6, max_decode_len=12, eos_id=toy.EOS)
  one_seqs, one_scores = toy.run_beam(fn, 16, 4, **settings)
  seqs, scores = toy.run_beam(fn, 16, 4, nbest=4, **settings)
  finished = lambda seqs: (seqs == toy.EOS).any(axis=-1)      # [rows, beams]
  assert not finished(one_seqs).all()                         # fillers below the best...
  assert finished(seqs).all()                                 # ...none among the 4 best
  np.testing.assert_array_equal(seqs[:, 0], one_seqs[:, 0])
  np.testing.assert_allclose(scores[:, 0], one_scores[:, 0], rtol=1e-6)
  assert np.all(np.diff(scores, axis=1) <= 0)


def test_an_nbest_outside_the_beam_is_one_user_error():
  for nbest in (0, 3):
    with pytest.raises(UserError, match=f'nbest={nbest} with beam_size=2: give an nbest from 1'):
      beam.beam_search({}, None, batch_size=1, beam_size=2, alpha=0.6, max_decode_len=4,
                       eos_id=toy.EOS, nbest=nbest)


# After BOS: EOS 0.3, A 0.7; after A: A 0.999, EOS 0.001. Ending [A, A, A] at the cap for
# free (log 0.997) would beat [EOS] (log 0.3); charged log p(EOS) it scores log 0.0007.
TRUNCATED_PROBS = np.zeros((1, 1, 5, 5))
TRUNCATED_PROBS[0, 0, 0, [toy.EOS, toy.A]] = [0.3, 0.7]
TRUNCATED_PROBS[0, 0, toy.A, [toy.EOS, toy.A]] = [0.001, 0.999]


@pytest.mark.parametrize('alpha', [0.0, 0.6])
def test_hypothesis_at_max_length_is_charged_eos(alpha):
  seqs, scores = toy.run_beam(toy.table_fn(toy.log_table(TRUNCATED_PROBS)), 1, 2, alpha=alpha,
                              max_decode_len=3, eos_id=toy.EOS)
  np.testing.assert_array_equal(seqs[0, 0], [toy.EOS, 0, 0])
  np.testing.assert_allclose(scores[0, 0], np.log(0.3) / toy.lp(1, alpha), rtol=1e-5)
  # Every returned hypothesis ends with EOS; none is [A, A, A], cut at the cap for free.
  assert all(toy.EOS in seq for seq in seqs[0])
  assert [toy.A, toy.A, toy.A] not in seqs[0].tolist()


def test_beam_search_under_pmap_matches_jit():
  devices = jax.local_device_count()
  assert devices == 8  # set up by conftest.py
  rows, per_device, beam_size = 16, 2, 3
  markov, by_sum = toy.history_tables(rows=rows, seed=6)
  fn = toy.history_fn(markov, by_sum)
  max_lengths = jnp.array([4, 3, 2, 4] * 4)
  settings = dict(tokens_to_logits_fn=fn, beam_size=beam_size, alpha=0.6, max_decode_len=4,
                  eos_id=toy.EOS)

  p_search = jax.pmap(
      lambda cache, lengths: beam.beam_search(
          cache, batch_size=per_device, max_lengths=lengths, **settings))
  cache = toy.make_cache(rows)
  # Each device gets its own examples, tiled to beams there (the predict_step layout).
  sharded = jax.tree_util.tree_map(
      lambda x: jnp.repeat(x.reshape(devices, per_device), beam_size, axis=1),
      {'row': cache['row'], 'total': cache['total']})
  sharded['step'] = jnp.zeros((devices,), jnp.int32)
  p_seqs, p_scores = p_search(sharded, max_lengths.reshape(devices, per_device))

  seqs, scores = jax.jit(functools.partial(beam.beam_search, batch_size=rows,
                                           max_lengths=max_lengths, **settings))(
                                               toy.make_cache(rows, beam_size))
  np.testing.assert_array_equal(np.asarray(p_seqs).reshape(seqs.shape), seqs)
  np.testing.assert_allclose(np.asarray(p_scores).reshape(scores.shape), scores, rtol=1e-5)
  assert np.all((seqs[2::4, 0] > 0).sum(axis=1) <= 2)


@pytest.mark.parametrize('parallelism', ['pmap', pytest.param('jit', marks=pytest.mark.slow)])
def test_cached_beam_search_compiles_once_per_bucket(parallelism):
  """predict_step (beam search through the Transformer's KV cache) is traced and
  compiled once per input shape, then reused for new batches of that shape."""
  config = TransformerConfig(vocab_size=12, model_dim=16, num_heads=2, mlp_dim=32,
                             num_layers=1, dropout_rate=0.0, max_len=32)
  model = Transformer(config)
  rows = jax.device_count()
  params = model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32),
                      jnp.ones((1, 8), jnp.int32))['params']
  settings = predict.SearchSettings(method='beam', beam_size=3, max_extra_len=4)
  traces = []

  def counted_predict(params, batch):
    traces.append(batch['inputs'].shape)
    return predict.predict_step(params, batch, model=model, settings=settings, eos_id=toy.EOS)

  runner = parallel.make_runner(parallelism, model=model, label_smoothing=0.0)
  device_params = runner.put_state(params)
  rng = np.random.RandomState(0)
  for length in (8, 8, 16, 8, 16):
    inputs = rng.randint(2, 12, (rows, length)).astype(np.int32)
    out = runner.run_replicated(counted_predict, device_params,
                                runner.put_batch({'inputs': inputs}))
    assert out.shape == (rows, length + 4)
  # A per-device trace (pmap) has rows / devices rows; one trace per bucket either way.
  assert [shape[1] for shape in traces] == [8, 16]
