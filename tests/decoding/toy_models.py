"""Toy scoring functions with known probabilities, shared by decode_test.py and beam_test.py."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.decoding import beam
from transformer_jax.decoding import decode

EOS = 1
IMPOSSIBLE = -1e9  # logit of a token that must never be chosen


def log_table(probs):
  """Log-probabilities as logits; zero probability becomes IMPOSSIBLE."""
  probs = np.asarray(probs, np.float64)
  return np.where(probs > 0, np.log(np.maximum(probs, 1e-300)), IMPOSSIBLE).astype(np.float32)


def table_fn(tables):
  """Toy model: logits = tables[row, min(step, steps - 1), previous token].

  tables: `[rows, steps, vocab, vocab]`. The cache holds each row's table id (gathered
  with the beams) and a scalar step counter, like flax's `cache_index`.
  """
  tables = jnp.asarray(tables, jnp.float32)

  def fn(token_ids, cache):
    step = jnp.minimum(cache['step'], tables.shape[1] - 1)
    logits = tables[cache['row'], step, token_ids[:, 0]]
    return logits, dict(cache, step=cache['step'] + 1)
  return fn


def history_fn(markov, by_sum):
  """Toy model that depends on the whole prefix through the sum of its tokens.

  logits = markov[row, prev] + by_sum[row, sum(prefix) % 5]; a wrong cache gather in
  beam search changes the sums, so it shows up as wrong scores.
  """
  markov, by_sum = jnp.asarray(markov), jnp.asarray(by_sum)

  def fn(token_ids, cache):
    prev = token_ids[:, 0]
    total = cache['total'] + prev
    logits = markov[cache['row'], prev] + by_sum[cache['row'], total % 5]
    return logits, dict(cache, total=total, step=cache['step'] + 1)
  return fn


def make_cache(rows, beam_size=None):
  cache = {'row': jnp.arange(rows, dtype=jnp.int32), 'step': jnp.zeros((), jnp.int32),
           'total': jnp.zeros((rows,), jnp.int32)}
  return cache if beam_size is None else beam.expand_to_beams(cache, beam_size)


def run_greedy(fn, rows, **kwargs):
  search = functools.partial(decode.greedy_search, tokens_to_logits_fn=fn, batch_size=rows,
                             **kwargs)
  return np.asarray(jax.jit(search)(make_cache(rows)))


def run_beam(fn, rows, beam_size, **kwargs):
  search = functools.partial(beam.beam_search, tokens_to_logits_fn=fn, batch_size=rows,
                             beam_size=beam_size, **kwargs)
  seqs, scores = jax.jit(search)(make_cache(rows, beam_size))
  return np.asarray(seqs), np.asarray(scores)


def run_sample(fn, rows, seed=0, **kwargs):
  search = lambda cache, rng: decode.sample_search(cache, fn, rng, batch_size=rows, **kwargs)
  return np.asarray(jax.jit(search)(make_cache(rows), jax.random.key(seed)))


def lp(length, alpha):
  return ((5 + length) / 6) ** alpha


def random_tables(rows, vocab, seed, eos_bias=0.0):
  """Random Markov tables; pad (0) is never produced."""
  tables = np.random.RandomState(seed).normal(0, 2, (rows, 1, vocab, vocab))
  tables[..., EOS] += eos_bias
  tables[..., 0] = IMPOSSIBLE
  return tables.astype(np.float32)


def chain_tables(rows, vocab, seed):
  """Peaked Markov tables: each row follows its own chain of distinct tokens to EOS."""
  rng = np.random.RandomState(seed)
  tables = rng.normal(0, 1, (rows, 1, vocab, vocab))
  tables[..., 0] = IMPOSSIBLE
  for row in range(rows):
    chain = [0] + list(rng.permutation(np.arange(2, vocab))[:rng.randint(1, 6)]) + [EOS]
    for prev, nxt in zip(chain[:-1], chain[1:]):
      tables[row, 0, prev, nxt] += 6.0
  return tables.astype(np.float32)


def greedy_reference(tables, max_decode_len):
  """Step-by-step numpy greedy decoding of `table_fn(tables)`."""
  out = np.zeros((tables.shape[0], max_decode_len), np.int32)
  for row in range(tables.shape[0]):
    prev = 0
    for t in range(max_decode_len):
      prev = out[row, t] = np.argmax(tables[row, min(t, tables.shape[1] - 1), prev])
      if prev == EOS:
        break
  return out


# A: after BOS, p(A)=0.6 and p(B)=0.4; after A four tokens are equally likely; after B,
# EOS is certain. Greedy takes A (best total 0.6 * 0.25); beam search finds B EOS (0.4).
A, B, C = 2, 3, 4
AB_PROBS = np.zeros((1, 1, 5, 5))
AB_PROBS[0, 0, 0, [A, B]] = [0.6, 0.4]
AB_PROBS[0, 0, [A, C], 1:] = 0.25
AB_PROBS[0, 0, [B, EOS], EOS] = 1.0


def history_tables(rows, seed):
  rng = np.random.RandomState(seed)
  markov = rng.normal(0, 1.5, (rows, 4, 4)).astype(np.float32)
  markov[..., 0] = IMPOSSIBLE
  return markov, rng.normal(0, 1.5, (rows, 5, 4)).astype(np.float32)
