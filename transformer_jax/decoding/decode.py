"""Greedy and sampled decoding through a key/value cache; beam search is beam.py's.

The searches call a model's step function on a cache as interface.py describes. Every search
is a `jax.lax.while_loop` over a struct state, so it compiles under `jax.jit` and `jax.pmap`;
bind the keyword-only settings with `functools.partial`. With `cache_stages` (see
`cache_stages.CacheStages`) the loop runs in stages over a cache that grows between them, so
early steps read a short cache: the same outputs, fewer bytes moved per step.
Outputs leave out the BOS input: position t holds the token chosen at step t. The EOS
is kept and everything after it is PAD_ID. Nothing stops a model from choosing PAD_ID
itself (untrained ones do); callers should cut at EOS rather than count non-pad tokens.
Greedy search and sampling rank nothing and just stop at an example's max length (without
EOS), where beam search ends a hypothesis with EOS (see beam.py).
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp

from transformer_jax.base.errors import UserError
from transformer_jax.decoding import beam
from transformer_jax.decoding import cache_stages as stages_lib
from transformer_jax.decoding import interface
from transformer_jax.decoding import top_k as topk
from transformer_jax.nn.losses import PAD_ID

NEG_INF = interface.NEG_INF
TokensToLogitsFn = interface.TokensToLogitsFn
# Beam search moved to beam.py; transformer_jax.beam_search and the benchmarks reach these
# names through this module.
beam_search = beam.beam_search
expand_to_beams = beam.expand_to_beams


@flax.struct.dataclass
class _SamplingState:
  """Loop state of greedy search and sampling (one hypothesis per example)."""
  cur_index: jax.Array  # int32 scalar: the output position filled by the next step
  last_tokens: jax.Array  # int32 [batch]: the model's next input (BOS at first)
  sequences: jax.Array  # int32 [batch, max_decode_len]
  finished: jax.Array  # bool [batch]: emitted EOS or reached its max length
  cache: Any


def _sampling_loop(cache, tokens_to_logits_fn, choose_fn, *, batch_size,
                   max_decode_len, eos_id, max_lengths, bos_id, cache_stages):
  """Runs `choose_fn(logits [batch, vocab], step) -> int32 [batch]` until all end."""
  max_lengths = interface.max_lengths_or_default(max_lengths, batch_size, max_decode_len)
  state = _SamplingState(
      cur_index=jnp.zeros((), jnp.int32),
      last_tokens=jnp.full((batch_size,), bos_id, jnp.int32),
      sequences=jnp.full((batch_size, max_decode_len), PAD_ID, jnp.int32),
      finished=jnp.zeros((batch_size,), bool),
      cache=cache)

  def body_fn(state):
    i = state.cur_index
    logits, new_cache = tokens_to_logits_fn(state.last_tokens[:, None], state.cache)
    tokens = choose_fn(logits.astype(jnp.float32), i).astype(jnp.int32)
    tokens = jnp.where(state.finished, PAD_ID, tokens)
    finished = state.finished | (tokens == eos_id) | (i + 1 >= max_lengths)
    return _SamplingState(
        cur_index=i + 1, last_tokens=tokens, sequences=state.sequences.at[:, i].set(tokens),
        finished=finished, cache=new_cache)

  cond_fn = lambda state: ~jnp.all(state.finished)
  return stages_lib.run_loop(cond_fn, body_fn, state, max_decode_len, cache_stages).sequences


def greedy_search(cache, tokens_to_logits_fn: TokensToLogitsFn, *, batch_size, max_decode_len,
                  eos_id, max_lengths=None, bos_id=0, cache_stages=None):
  """Picks the most likely token at every step (ties go to the lowest id).

  Args:
    cache: the model's decoding cache, non-scalar leaves `[batch, ...]`.
    tokens_to_logits_fn: `(int32 [batch, 1], cache) -> (logits [batch, vocab], cache)`.
    batch_size: number of examples.
    max_decode_len: output length; the loop ends earlier once every example has ended.
    eos_id: end-of-sequence id; it is kept in the output, pads follow it.
    max_lengths: optional int32 `[batch]`, at most this many tokens per example
      (clipped to [1, max_decode_len]); an example reaching it stops without EOS.
    bos_id: first input token.
    cache_stages: optional `cache_stages.CacheStages`; `cache` then holds its first stage's length.

  Returns:
    int32 `[batch, max_decode_len]` tokens.
  """
  return _sampling_loop(
      cache, tokens_to_logits_fn, lambda logits, step: jnp.argmax(logits, axis=-1),
      batch_size=batch_size, max_decode_len=max_decode_len, eos_id=eos_id,
      max_lengths=max_lengths, bos_id=bos_id, cache_stages=cache_stages)


def filter_logits(logits, *, temperature=1.0, top_k=0, top_p=1.0):
  """Applies temperature, then top-k, then nucleus (top-p) filtering.

  Args:
    logits: float32 `[..., vocab]`.
    temperature: > 0; logits are divided by it.
    top_k: keep the top_k largest logits (ties at the k-th value are all kept); 0 = all.
    top_p: keep the smallest set of most likely tokens whose probability (after
      temperature and top-k) reaches top_p (Holtzman et al., 2020); 1.0 = all.

  Returns:
    float32 `[..., vocab]`, removed tokens set to NEG_INF.
  """
  logits = logits / temperature
  if top_k:
    kth_largest = topk.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits < kth_largest, NEG_INF, logits)
  if top_p < 1.0:
    sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the more likely ones before it fall short of top_p, so the most
    # likely token is always kept and the kept set is the smallest reaching top_p.
    keep = jnp.cumsum(probs, axis=-1) - probs < top_p
    num_kept = jnp.sum(keep, axis=-1, keepdims=True)
    threshold = jnp.take_along_axis(sorted_logits, num_kept - 1, axis=-1)
    logits = jnp.where(logits < threshold, NEG_INF, logits)
  return logits


def _check_sampling_args(temperature, top_k, top_p):
  if temperature < 0:
    raise UserError(f'sampling temperature must be >= 0 (0 = greedy), got {temperature}')
  if top_k < 0:
    raise UserError(f'top_k must be >= 0 (0 = no top-k filter), got {top_k}')
  if not 0.0 < top_p <= 1.0:
    raise UserError(f'top_p must be in (0, 1] (1 = no nucleus filter), got {top_p}')


def sample_search(cache, tokens_to_logits_fn: TokensToLogitsFn, rng, *, batch_size,
                  max_decode_len, eos_id, max_lengths=None, bos_id=0, temperature=1.0,
                  top_k=0, top_p=1.0, cache_stages=None):
  """Draws each token from the model's distribution, optionally sharpened or truncated.

  Args:
    cache, tokens_to_logits_fn, batch_size, max_decode_len, eos_id, max_lengths,
      bos_id, cache_stages: as in `greedy_search`.
    rng: PRNG key; step t uses `fold_in(rng, t)`. Under pmap pass one key per device.
    temperature: static Python float >= 0; exactly 0 is greedy search.
    top_k: static Python int, see `filter_logits`.
    top_p: static Python float in (0, 1], see `filter_logits`.

  Returns:
    int32 `[batch, max_decode_len]` tokens.
  """
  _check_sampling_args(temperature, top_k, top_p)
  kwargs = dict(batch_size=batch_size, max_decode_len=max_decode_len, eos_id=eos_id,
                max_lengths=max_lengths, bos_id=bos_id, cache_stages=cache_stages)
  if temperature == 0:
    return greedy_search(cache, tokens_to_logits_fn, **kwargs)

  def choose_fn(logits, step):
    logits = filter_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)

  return _sampling_loop(cache, tokens_to_logits_fn, choose_fn, **kwargs)

