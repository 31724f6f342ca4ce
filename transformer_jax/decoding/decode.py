"""Greedy, sampled and beam-search decoding through a key/value cache.

The searches know nothing about the model. They call

  tokens_to_logits_fn(token_ids: int32[n, 1], cache) -> (logits: float[n, vocab], new_cache)

once per output position, where `cache` is any pytree whose non-scalar leaves have
leading dimension n: n = batch for greedy/sampling and n = batch * beam_size for beam
search (beams of one example are adjacent rows, see `expand_to_beams`). Scalar leaves,
such as flax's `cache_index`, are passed through untouched. The first input token is
`bos_id` (0, the pad id, as in flax's wmt example).

Every search is a `jax.lax.while_loop` over a struct state, so it compiles under
`jax.jit` and `jax.pmap`; bind the keyword-only settings with `functools.partial`.
With `cache_stages` (see `cache_stages.CacheStages`) the loop runs in stages over a cache that
grows between them, so early steps read and reorder a short cache: the same outputs,
fewer bytes moved per step.
Outputs leave out the BOS input: position t holds the token chosen at step t. The EOS
is kept and everything after it is PAD_ID. Nothing stops a model from choosing PAD_ID
itself (untrained ones do); callers should cut at EOS rather than count non-pad tokens.

Beam search follows the Transformer paper (Vaswani et al., 2017, §6.1: beam 4,
alpha 0.6) with the length penalty of Wu et al. (2016, GNMT, §7). A beam hypothesis
that reaches its max length must end there with EOS, as in fairseq's SequenceGenerator:
it is charged the model's log p(EOS) at that last step rather than ending for free, so
a cut-off hypothesis cannot outrank finished ones. Greedy search and sampling rank
nothing and just stop at the max length (without EOS), so beam search with one beam
equals greedy search only on outputs that end before their limit.
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from transformer_jax.base.errors import UserError
from transformer_jax.decoding import cache_stages as stages_lib
from transformer_jax.decoding import top_k as topk
from transformer_jax.nn.losses import PAD_ID

# Finite stand-in for -inf: keeps sums and divisions free of inf/nan arithmetic.
NEG_INF = -1.0e7
# Log-probs below this come from dead or impossible hypotheses, never real ones.
_INVALID_BELOW = NEG_INF / 2
# Lowest log p(EOS) charged to a beam forced to end at its max length: a model that
# gives EOS (almost) no probability there still returns its hypotheses, valid and
# ranked by the rest of their log-probs, instead of none.
_FORCED_EOS_FLOOR = -1.0e5

TokensToLogitsFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def length_penalty(length, alpha):
  """GNMT length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al., 2016, eq. 14).

  Args:
    length: |Y|, the number of generated tokens, counting the final EOS and not BOS
      (beam search ends every hypothesis with EOS, at its max length at the latest).
    alpha: strength; 0 gives lp = 1 (raw log-probs), larger values favour longer output.

  Returns:
    float32 array shaped like `length`.
  """
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def expand_to_beams(tree, beam_size):
  """Repeats every example beam_size times: leaves `[batch, ...]` -> `[batch * beam_size, ...]`.

  Rows b * beam_size ... (b + 1) * beam_size - 1 are copies of example b, the layout
  `beam_search` expects for its cache. Scalar leaves are returned unchanged.
  """
  def expand(x):
    x = jnp.asarray(x)
    return x if x.ndim == 0 else jnp.repeat(x, beam_size, axis=0)
  return jax.tree_util.tree_map(expand, tree)


def gather_beams(tree, beam_indices):
  """Selects beams of each example from a flattened `[batch * old_beams, ...]` pytree.

  Args:
    tree: pytree whose non-scalar leaves are `[batch * old_beams, ...]`, beams of an
      example adjacent (as made by `expand_to_beams`). Scalar leaves pass through.
    beam_indices: int32 `[batch, new_beams]`, indices in `[0, old_beams)`.

  Returns:
    The pytree with non-scalar leaves `[batch * new_beams, ...]`.
  """
  return jax.tree_util.tree_map(lambda x: _gather_flat_beams(x, beam_indices), tree)


def _gather_flat_beams(x, beam_indices):
  """One leaf of `gather_beams`."""
  if x.ndim == 0:
    return x
  batch_size, new_beams = beam_indices.shape
  x = x.reshape((batch_size, -1) + x.shape[1:])  # [batch, old_beams, ...]
  x = _take_beams(x, beam_indices)  # [batch, new_beams, ...]
  return x.reshape((batch_size * new_beams,) + x.shape[2:])


def _reorder_cache(old_cache, new_cache, beam_indices):
  """gather_beams on the leaves of new_cache that the step changed.

  A leaf the step returned as it came in (the same array: e.g. the encoder keys and
  values, projected once) is equal across each example's beams, tiled by
  `expand_to_beams` or kept once per example (`predict.for_beams`), so reordering the
  beams would copy it for nothing.
  """
  return jax.tree_util.tree_map(
      lambda old, new: new if new is old else _gather_flat_beams(new, beam_indices),
      old_cache, new_cache)


def _take_beams(x, beam_indices):
  """x `[batch, beams, ...]`, beam_indices `[batch, n]` -> `[batch, n, ...]`."""
  return x[jnp.arange(x.shape[0])[:, None], beam_indices]


def _max_lengths_or_default(max_lengths, batch_size, max_decode_len):
  """int32 `[batch]` output lengths, clipped to [1, max_decode_len]."""
  if max_lengths is None:
    return jnp.full((batch_size,), max_decode_len, jnp.int32)
  return jnp.clip(jnp.asarray(max_lengths, jnp.int32), 1, max_decode_len)


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
  max_lengths = _max_lengths_or_default(max_lengths, batch_size, max_decode_len)
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


@flax.struct.dataclass
class _BeamState:
  """Beam-search loop state; alive and finished hypotheses are kept apart."""
  cur_index: jax.Array  # int32 scalar: steps taken = the output position written next
  alive_last: jax.Array  # int32 [batch, beam]: the model's next input (BOS at first)
  alive_seqs: jax.Array  # int32 [batch, beam, max_decode_len]
  alive_log_probs: jax.Array  # float32 [batch, beam], best first; NEG_INF = dead
  alive_length: jax.Array  # int32 [batch]: tokens in the alive beams (stops when done)
  finished_seqs: jax.Array  # int32 [batch, beam, max_decode_len]
  finished_scores: jax.Array  # float32 [batch, beam]: log-prob / lp, best first
  finished_flags: jax.Array  # bool [batch, beam]: slot holds a real hypothesis
  done: jax.Array  # bool [batch]: example frozen, its best score can't improve
  cache: Any  # non-scalar leaves [batch * beam, ...]


def _init_beam_state(cache, batch_size, beam_size, max_decode_len, bos_id):
  """Only beam 0 starts alive, so the first step does not pick the same token k times."""
  seqs = jnp.full((batch_size, beam_size, max_decode_len), PAD_ID, jnp.int32)
  log_probs = jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam_size - 1), jnp.float32),
                       (batch_size, 1))
  return _BeamState(
      cur_index=jnp.zeros((), jnp.int32),
      alive_last=jnp.full((batch_size, beam_size), bos_id, jnp.int32),
      alive_seqs=seqs, alive_log_probs=log_probs,
      alive_length=jnp.zeros((batch_size,), jnp.int32), finished_seqs=seqs,
      finished_scores=jnp.full((batch_size, beam_size), NEG_INF, jnp.float32),
      finished_flags=jnp.zeros((batch_size, beam_size), bool),
      done=jnp.zeros((batch_size,), bool), cache=cache)


def _beam_candidates(state, logits, *, eos_id, max_lengths):
  """The 2 * beam best one-token extensions of the alive beams.

  Two beams' worth are needed so that, even if up to `beam` of them end in EOS, `beam`
  candidates remain to stay alive. At an example's last step (its max length) EOS is
  the only extension, at the model's log p(EOS) (floored at _FORCED_EOS_FLOOR).

  Returns:
    (log_probs [batch, 2k], origin beams [batch, 2k], tokens [batch, 2k],
     sequences [batch, 2k, max_decode_len]), best first.
  """
  batch_size, beam_size = state.alive_log_probs.shape
  vocab_size = logits.shape[-1]
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  log_probs = log_probs.reshape(batch_size, beam_size, vocab_size)
  is_eos = jnp.arange(vocab_size) == eos_id
  forced_eos = jnp.where(is_eos, jnp.maximum(log_probs, _FORCED_EOS_FLOOR), NEG_INF)
  at_cap = (state.cur_index + 1 >= max_lengths)[:, None, None]  # [batch, 1, 1]
  log_probs = jnp.where(at_cap, forced_eos, log_probs)
  log_probs = state.alive_log_probs[..., None] + log_probs  # [batch, beam, vocab]
  flat = log_probs.reshape(batch_size, beam_size * vocab_size)
  top_log_probs, top_ids = topk.top_k(flat, 2 * beam_size)  # [batch, 2k]
  origins, tokens = top_ids // vocab_size, top_ids % vocab_size
  seqs = _take_beams(state.alive_seqs, origins).at[:, :, state.cur_index].set(tokens)
  return top_log_probs, origins, tokens, seqs


def _top_beams(keys, beam_size, *arrays):
  """Top beam_size entries of keys `[batch, n]`, with arrays `[batch, n, ...]` to match."""
  top_keys, indices = jax.lax.top_k(keys, beam_size)
  return (top_keys,) + tuple(_take_beams(x, indices) for x in arrays)


def _extend_beams(state, logits, *, alpha, eos_id, max_lengths):
  """One search step given the model's logits for the alive beams.

  Returns:
    (the new state without cache, int32 [batch, beam] the old beam each new alive
     beam extends).
  """
  i = state.cur_index
  beam_size = state.alive_log_probs.shape[1]
  log_probs, origins, tokens, seqs = _beam_candidates(state, logits, eos_id=eos_id,
                                                      max_lengths=max_lengths)

  valid = log_probs > _INVALID_BELOW
  # At an example's max length only EOS candidates are valid, so all of them end.
  ended = valid & (tokens == eos_id)

  alive_keys = jnp.where(valid & ~ended, log_probs, NEG_INF)
  alive_log_probs, alive_seqs, alive_last, alive_origins = _top_beams(
      alive_keys, beam_size, seqs, tokens, origins)

  new_scores = jnp.where(ended, log_probs / length_penalty(i + 1, alpha), NEG_INF)
  finished_scores, finished_seqs, finished_flags = _top_beams(
      jnp.concatenate([state.finished_scores, new_scores], axis=1), beam_size,
      jnp.concatenate([state.finished_seqs, seqs], axis=1),
      jnp.concatenate([state.finished_flags, ended], axis=1))

  new_state = state.replace(
      cur_index=i + 1, alive_last=alive_last, alive_seqs=alive_seqs,
      alive_log_probs=alive_log_probs, alive_length=jnp.full_like(state.alive_length, i + 1),
      finished_seqs=finished_seqs, finished_scores=finished_scores,
      finished_flags=finished_flags)
  return new_state, alive_origins


def _examples_done(state, *, alpha, max_lengths):
  """bool [batch]: no alive beam can beat the example's best finished score any more.

  Log-probs only fall as tokens are added, so an alive beam's final score is at most
  its log-prob now divided by the largest penalty it can still get, i.e. that of its
  shortest (alpha < 0) or longest (alpha >= 0) possible length.
  """
  best_alive = state.alive_log_probs[:, 0]
  largest_lp = jnp.maximum(length_penalty(state.cur_index + 1, alpha),
                           length_penalty(max_lengths, alpha))
  has_finished = jnp.any(state.finished_flags, axis=1)
  return (best_alive <= _INVALID_BELOW) | (
      has_finished & (state.finished_scores[:, 0] >= best_alive / largest_lp))


def _beam_step(state, *, tokens_to_logits_fn, alpha, eos_id, max_lengths):
  """Extends the alive beams by one token; ended candidates join the finished set.

  Examples already done keep their hypotheses unchanged, so each example's result is
  the same whatever else shares its batch (or device).
  """
  logits, cache = tokens_to_logits_fn(state.alive_last.reshape(-1, 1), state.cache)
  new_state, origins = _extend_beams(state, logits, alpha=alpha, eos_id=eos_id,
                                     max_lengths=max_lengths)
  keep = lambda old, new: jnp.where(
      state.done.reshape((-1,) + (1,) * (old.ndim - 1)), old, new)
  fields = ('alive_last', 'alive_seqs', 'alive_log_probs', 'alive_length', 'finished_seqs',
            'finished_scores', 'finished_flags')
  new_state = new_state.replace(
      cache=_reorder_cache(state.cache, cache, origins),
      **{f: keep(getattr(state, f), getattr(new_state, f)) for f in fields})
  return new_state.replace(
      done=state.done | _examples_done(new_state, alpha=alpha, max_lengths=max_lengths))


def _beam_search_results(state, alpha):
  """Finished hypotheses best first; empty slots filled with the best alive ones.

  Alive beams remain only after an early stop; they rank after every finished one and
  are scored as if they ended now. Slots with no hypothesis at all get NEG_INF.
  """
  beam_size = state.alive_log_probs.shape[1]
  alive_valid = state.alive_log_probs > _INVALID_BELOW
  alive_lp = length_penalty(state.alive_length, alpha)[:, None]
  alive_scores = state.alive_log_probs / alive_lp
  scores = jnp.concatenate(
      [state.finished_scores, jnp.where(alive_valid, alive_scores, NEG_INF)], axis=1)
  # Sort group: 0 = finished, 1 = alive, 2 = empty; then by score, best first.
  groups = jnp.concatenate([jnp.where(state.finished_flags, 0, 2),
                            jnp.where(alive_valid, 1, 2)], axis=1)
  order = jnp.lexsort((-scores, groups), axis=-1)[:, :beam_size]
  seqs = jnp.concatenate([state.finished_seqs, state.alive_seqs], axis=1)
  return _take_beams(seqs, order), _take_beams(scores, order)


def beam_search(cache, tokens_to_logits_fn: TokensToLogitsFn, *, batch_size, beam_size,
                alpha, max_decode_len, eos_id, max_lengths=None, bos_id=0, cache_stages=None):
  """Beam search with the GNMT length penalty and early stopping.

  A hypothesis Y with log-probability log P(Y) scores log P(Y) / lp(|Y|), where
  lp(|Y|) = ((5 + |Y|) / 6) ** alpha and |Y| counts its generated tokens including the
  final EOS (not BOS); see `length_penalty`. Each step extends the alive beams, moves
  candidates ending in EOS to a separate finished set, and keeps the `beam_size` best
  of each. At an example's max length every alive beam is forced to end with EOS and
  is charged log p(EOS) there (fairseq does the same), so a hypothesis cut at the
  limit competes fairly with finished ones and has at most max length - 1 other
  tokens.
  An example stops (and is frozen) once no alive beam can beat its best finished score
  any more, so its top beam is exact while lower ranks may be cut short; the loop
  ends when every example has stopped, or at max_decode_len.

  Args:
    cache: the model's decoding cache, non-scalar leaves `[batch * beam_size, ...]`
      (build it for batch_size examples and tile it with `expand_to_beams`). Each step
      reorders the leaves tokens_to_logits_fn changed to follow the surviving beams;
      a leaf it returns unchanged (the very array it was given, e.g. projected encoder
      keys/values) is left alone, so it must be equal across an example's beams (and
      may then be `[batch, ...]`, one row per example: see `predict.for_beams`).
    tokens_to_logits_fn: `(int32 [batch * beam_size, 1], cache) ->
      (logits [batch * beam_size, vocab], cache)`.
    batch_size: number of examples.
    beam_size: hypotheses kept per example (the paper uses 4).
    alpha: length penalty strength (the paper uses 0.6); 0 ranks by raw log-prob.
      A float, or a traced scalar (then changing it does not recompile).
    max_decode_len: output length.
    eos_id: end-of-sequence id; kept in the output, pads follow it.
    max_lengths: optional int32 `[batch]`, at most this many tokens per example,
      the forced EOS included (clipped to [1, max_decode_len]).
    bos_id: first input token.
    cache_stages: optional `cache_stages.CacheStages`; `cache` then holds its first stage's length.

  Returns:
    (sequences int32 `[batch, beam_size, max_decode_len]`,
     scores float32 `[batch, beam_size]`), best first. Unfinished hypotheses (left
    after an early stop) rank below all finished ones; empty slots score NEG_INF.
  """
  max_lengths = _max_lengths_or_default(max_lengths, batch_size, max_decode_len)
  state = _init_beam_state(cache, batch_size, beam_size, max_decode_len, bos_id)
  body_fn = functools.partial(_beam_step, tokens_to_logits_fn=tokens_to_logits_fn,
                              alpha=alpha, eos_id=eos_id, max_lengths=max_lengths)
  state = stages_lib.run_loop(lambda state: ~jnp.all(state.done), body_fn, state, max_decode_len,
                       cache_stages)
  return _beam_search_results(state, alpha)
