"""Beam search through a key/value cache (Vaswani et al., 2017, §6.1: beam 4, alpha 0.6), with
the length penalty of Wu et al. (2016, GNMT, §7), and the beam layout helpers.

The step function and cache follow interface.py, with n = batch * beam_size rows: beams of one
example are adjacent rows (`expand_to_beams`). The search is a `jax.lax.while_loop` over a
struct state, so it compiles under `jax.jit` and `jax.pmap`; bind the keyword-only settings
with `functools.partial`. With `cache_stages` the loop runs in stages over a growing cache
(cache_stages.py). Outputs leave out the BOS input, keep the EOS and pad after it.

A hypothesis that reaches its max length must end there with EOS, as in fairseq's
SequenceGenerator: it is charged the model's log p(EOS) at that last step rather than ending
for free, so a cut-off hypothesis cannot outrank finished ones. Greedy search and sampling
(decode.py) rank nothing and just stop at the max length (without EOS), so beam search with
one beam equals greedy search only on outputs that end before their limit.

An n-best list (`nbest`, what fairseq-generate --nbest and Hugging Face's
num_return_sequences give) keeps the search going until the nbest-th finished hypothesis of
an example can no longer be beaten, so its first nbest results are finished hypotheses ranked
by score, exact within the beam.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp

from transformer_jax.base.errors import UserError
from transformer_jax.decoding import cache_stages as stages_lib
from transformer_jax.decoding import top_k as topk
from transformer_jax.decoding.interface import NEG_INF
from transformer_jax.decoding.interface import TokensToLogitsFn
from transformer_jax.decoding.interface import max_lengths_or_default
from transformer_jax.nn.losses import PAD_ID

# Log-probs below this come from dead or impossible hypotheses, never real ones.
_INVALID_BELOW = NEG_INF / 2
# Lowest log p(EOS) charged to a beam forced to end at its max length: a model that
# gives EOS (almost) no probability there still returns its hypotheses, valid and
# ranked by the rest of their log-probs, instead of none.
_FORCED_EOS_FLOOR = -1.0e5


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


def _examples_done(state, *, alpha, max_lengths, nbest):
  """bool [batch]: no alive beam can beat the example's nbest-th finished score any more.

  Log-probs only fall as tokens are added, so an alive beam's final score is at most
  its log-prob now divided by the largest penalty it can still get, i.e. that of its
  shortest (alpha < 0) or longest (alpha >= 0) possible length. The finished set is sorted
  best first, so its slot nbest - 1 holds the nbest-th best (a real one if its flag is set).
  """
  best_alive = state.alive_log_probs[:, 0]
  largest_lp = jnp.maximum(length_penalty(state.cur_index + 1, alpha),
                           length_penalty(max_lengths, alpha))
  has_nbest = state.finished_flags[:, nbest - 1]
  return (best_alive <= _INVALID_BELOW) | (
      has_nbest & (state.finished_scores[:, nbest - 1] >= best_alive / largest_lp))


def _beam_step(state, *, tokens_to_logits_fn, alpha, eos_id, max_lengths, nbest):
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
      done=state.done | _examples_done(new_state, alpha=alpha, max_lengths=max_lengths,
                                       nbest=nbest))


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
                alpha, max_decode_len, eos_id, max_lengths=None, bos_id=0, cache_stages=None,
                nbest=1):
  """Beam search with the GNMT length penalty and early stopping.

  A hypothesis Y with log-probability log P(Y) scores log P(Y) / lp(|Y|), where
  lp(|Y|) = ((5 + |Y|) / 6) ** alpha and |Y| counts its generated tokens including the
  final EOS (not BOS); see `length_penalty`. Each step extends the alive beams, moves
  candidates ending in EOS to a separate finished set, and keeps the `beam_size` best
  of each. At an example's max length every alive beam is forced to end with EOS and
  is charged log p(EOS) there (fairseq does the same), so a hypothesis cut at the
  limit competes fairly with finished ones and has at most max length - 1 other
  tokens.
  An example stops (and is frozen) once no alive beam can beat its nbest-th finished
  score any more, so its top nbest beams are exact (within the beam) while lower ranks may
  be cut short; the loop ends when every example has stopped, or at max_decode_len.

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
    nbest: static int in [1, beam_size], the hypotheses that must be exact: the first nbest
      results are finished hypotheses (fewer only where the search finds fewer), at the
      price of the steps it takes to rule out the alive beams against the nbest-th.

  Returns:
    (sequences int32 `[batch, beam_size, max_decode_len]`,
     scores float32 `[batch, beam_size]`), best first. Unfinished hypotheses (left
    after an early stop) rank below all finished ones; empty slots score NEG_INF.

  Raises:
    UserError: nbest outside [1, beam_size].
  """
  if not 1 <= nbest <= beam_size:
    raise UserError(f'beam search got nbest={nbest} with beam_size={beam_size}: give an nbest '
                    'from 1 to beam_size (the beam keeps beam_size hypotheses)')
  max_lengths = max_lengths_or_default(max_lengths, batch_size, max_decode_len)
  state = _init_beam_state(cache, batch_size, beam_size, max_decode_len, bos_id)
  body_fn = functools.partial(_beam_step, tokens_to_logits_fn=tokens_to_logits_fn,
                              alpha=alpha, eos_id=eos_id, max_lengths=max_lengths, nbest=nbest)
  state = stages_lib.run_loop(lambda state: ~jnp.all(state.done), body_fn, state,
                              max_decode_len, cache_stages)
  return _beam_search_results(state, alpha)
