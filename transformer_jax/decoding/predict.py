"""predict_step: translate a batch with an encoder-decoder through its decoding cache.

The searches themselves (greedy, beam, sampling) are model-agnostic and live in
decode.py and beam.py; this module supplies `tokens_to_logits_fn` and the cache for any model with
the cached encoder-decoder interface (families.Family.decodes): the Transformer and the
RNN seq2seq models. Such a model has
  encode(inputs) -> encoded, and
  decode(encoded, inputs, targets) -> logits, which with `decoding=True` reads and
  updates a 'cache' collection one target position per call; the first call (with a
  [n, max_decode_len] placeholder) only creates the cache.
`predict_step` (and `nbest_step`, a beam search's n best with their scores) is pure, so
parallel.py can pmap or jit it like the train step. `translate_texts` (and `translate_nbest`)
is the host side that --mode=translate and `load_pretrained(...).translate` share: lines ->
length-sorted, bucket-padded batches (`source_batches`) -> text in order.
"""
import dataclasses
import re
from typing import Any, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.data import batching
from transformer_jax.decoding import beam
from transformer_jax.decoding import cache_stages
from transformer_jax.decoding import decode
from transformer_jax.nn import attention
from transformer_jax.nn.config import DECODE_METHODS

METHODS = DECODE_METHODS


@dataclasses.dataclass(frozen=True)
class SearchSettings:
  """Static decoding settings (hashable, so a bound predict_step compiles once per shape)."""
  method: str = 'beam'
  beam_size: int = 4
  alpha: float = 0.6
  max_extra_len: int = 50
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  cache_stages: int = 4

  @classmethod
  def from_config(cls, decode_config) -> 'SearchSettings':
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in decode_config.to_dict().items() if k in fields})


def init_cache(model: Any, params: Any, encoded: jnp.ndarray, inputs: jnp.ndarray,
               max_decode_len: int, rows: Optional[int] = None) -> Any:
  """The decoder's 'cache' collection, with the encoder keys/values already projected.

  Args:
    model: the encoder-decoder (decoding=False is fine; a decoding clone is used).
    params: trained parameters (the cross-attention cache is computed from them).
    encoded: [n, src_len, model_dim] encoder output (see `for_beams`).
    inputs: [n, src_len] source ids (for the padding mask).
    max_decode_len: number of target positions the self-attention cache holds.
    rows: decoder rows (default n; n * beam when a model with `beams_share_source`
      decodes beams of untiled sources).
  """
  decoder = model.clone(decoding=True)
  placeholder = jnp.zeros((rows or inputs.shape[0], max_decode_len), jnp.int32)
  _, variables = decoder.apply({'params': params}, encoded, inputs, placeholder,
                               method='decode', mutable=['cache'])
  return variables['cache']


def staged_cache(make_cache, max_decode_len: int, stages: int):
  """(cache, cache_stages.CacheStages): a self-attention cache that grows in `stages` stages.

  make_cache(length) builds the cache for `length` positions; it is called for the first
  stage's length. A cache without self-attention buffers (the RNN's) has nothing to grow
  and runs in one stage.
  """
  lengths = cache_stages.stage_lengths(max_decode_len, stages)
  cache = make_cache(lengths[0])
  if len(lengths) > 1 and not attention.holds_self_cache(cache):
    lengths, cache = (max_decode_len,), make_cache(max_decode_len)
  return cache, cache_stages.CacheStages(lengths, attention.grow_cache)


def make_tokens_to_logits(model: Any, params: Any, encoded: jnp.ndarray,
                          inputs: jnp.ndarray):
  """tokens_to_logits_fn(ids [n, 1], cache) -> (logits [n, vocab], cache) for the searches."""
  decoder = model.clone(decoding=True)

  def tokens_to_logits(ids, cache):
    logits, variables = decoder.apply({'params': params, 'cache': cache}, encoded, inputs, ids,
                                      method='decode', mutable=['cache'])
    # PAD (also the BOS input) is never a real output: the searches must not pick it.
    logits = logits[:, 0].at[:, model.config.pad_id].set(decode.NEG_INF)
    return logits, variables['cache']
  return tokens_to_logits


def for_beams(model: Any, encoded: jnp.ndarray, inputs: jnp.ndarray, beam_size: int):
  """(encoded, inputs) as a beam search's decoder takes them: tiled once per beam
  (`beam.expand_to_beams`), unless the model's beams share one copy of their source
  (`beams_share_source`, the Transformer: its cross-attention reads each source once)."""
  if getattr(model, 'beams_share_source', False):
    return encoded, inputs
  return beam.expand_to_beams((encoded, inputs), beam_size)


def decode_lengths(inputs: jnp.ndarray, settings: SearchSettings, max_len: int) -> Tuple[int, jnp.ndarray]:
  """(static cache length, per-example max output length = source length + max_extra_len)."""
  max_decode_len = min(inputs.shape[1] + settings.max_extra_len, max_len)
  source_lengths = jnp.sum(inputs != 0, axis=-1)
  return max_decode_len, jnp.minimum(source_lengths + settings.max_extra_len, max_decode_len)


def _search_setup(params: Any, inputs: jnp.ndarray, *, model: Any, settings: SearchSettings,
                  eos_id: int):
  """(cache, tokens_to_logits_fn, the searches' common keyword arguments) for `inputs`."""
  batch_size = inputs.shape[0]
  max_decode_len, max_lengths = decode_lengths(inputs, settings, model.config.max_len)
  encoded = model.apply({'params': params}, inputs, method='encode')
  common = dict(batch_size=batch_size, max_decode_len=max_decode_len, eos_id=eos_id,
                max_lengths=max_lengths)
  rows = batch_size
  if settings.method == 'beam':
    encoded, inputs = for_beams(model, encoded, inputs, settings.beam_size)
    rows = batch_size * settings.beam_size
  cache, common['cache_stages'] = staged_cache(
      lambda length: init_cache(model, params, encoded, inputs, length, rows=rows),
      max_decode_len, settings.cache_stages)
  return cache, make_tokens_to_logits(model, params, encoded, inputs), common


def predict_step(params: Any, batch: dict, *, model: Any, settings: SearchSettings,
                 eos_id: int) -> jnp.ndarray:
  """Output ids [batch, max_decode_len] (EOS kept, PAD after it) for `batch['inputs']`."""
  if settings.method == 'beam':
    return nbest_step(params, batch, model=model, settings=settings, eos_id=eos_id,
                      nbest=1)[0][:, 0]
  inputs = batch['inputs']
  cache, fn, common = _search_setup(params, inputs, model=model, settings=settings,
                                    eos_id=eos_id)
  if settings.method == 'greedy':
    return decode.greedy_search(cache, fn, **common)
  rng = jax.random.fold_in(jax.random.PRNGKey(settings.seed), jnp.sum(inputs))
  return decode.sample_search(cache, fn, rng, temperature=settings.temperature,
                              top_k=settings.top_k, top_p=settings.top_p, **common)


def nbest_step(params: Any, batch: dict, *, model: Any, settings: SearchSettings, eos_id: int,
               nbest: int) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """The `nbest` best hypotheses of a beam search for `batch['inputs']`, and their scores.

  A hypothesis Y scores log P(Y | source) / lp(|Y|): its log-probability under the model (PAD
  excluded, which the search never emits; EOS included) divided by the GNMT length penalty
  ((5 + |Y|) / 6) ** alpha, |Y| counting its tokens with the EOS (`beam.length_penalty`).

  Returns:
    (ids int32 [batch, nbest, max_decode_len] (EOS kept, PAD after it),
     scores float32 [batch, nbest]), best first per example; a slot the search could not
    fill (fewer hypotheses exist) scores below decode.NEG_INF / 2.
  """
  if settings.method != 'beam':
    raise UserError(f'an n-best list ranks the hypotheses of a beam search, not of '
                    f'method={settings.method!r}: decode with method=beam')
  cache, fn, common = _search_setup(params, batch['inputs'], model=model, settings=settings,
                                    eos_id=eos_id)
  sequences, scores = beam.beam_search(cache, fn, beam_size=settings.beam_size,
                                       alpha=settings.alpha, nbest=nbest, **common)
  return sequences[:, :nbest], scores[:, :nbest]


def source_batches(tokenizer, lines: List[str], data_config, batch_multiple: int,
                   limit: Optional[int] = None, rows: Optional[int] = None,
                   first_line: int = 1):
  """(batch, row order) pairs: sources sorted by length, padded to bucket lengths, one row count.

  Lines longer than `limit` tokens (the model's max_input_len) are cut to it, with one warning.
  `rows` fixes the row count (streamed groups: one shape per bucket, whatever the group
  holds); by default it is the token budget's at the longest line's bucket. `first_line` is
  the number of lines[0] in the whole input, for the messages that name lines.
  `data_config` needs bucket_lengths, max_len and tokens_per_batch (the run's `data` section).
  """
  ids, cut = batching.cut_to_length(_encode(tokenizer, lines, first_line), limit)
  if cut:
    logging.warning(batching.describe_cut_lines([i + first_line - 1 for i in cut], limit))
  order = np.argsort([len(x) for x in ids], kind='stable')
  buckets, budget_rows = batching.eval_layout(data_config.bucket_lengths, data_config.max_len,
                                              max(len(x) for x in ids),
                                              data_config.tokens_per_batch, batch_multiple,
                                              limit=limit)
  rows = rows or budget_rows
  for start in range(0, len(order), rows):
    chosen = order[start:start + rows]
    length = buckets[batching.bucket_ids(max(len(ids[i]) for i in chosen), buckets)]
    sources = [np.asarray(ids[i]) for i in chosen]
    yield batching.pad_batch(sources, sources, rows, length), chosen


def _encode(tokenizer, lines: List[str], first_line: int):
  """tokenizer.encode(lines), its 'line N' in errors counted from `first_line`."""
  try:
    return tokenizer.encode(lines)
  except UserError as e:
    renumber = lambda m: f'line {int(m.group(1)) + first_line - 1}'
    raise UserError(re.sub(r'^line (\d+)', renumber, str(e))) from None


def _decoded_batches(parts, params, lines: List[str], predict_fn, data_config, *,
                     rows: Optional[int], first_line: int) -> Iterator[Tuple[Any, Any]]:
  """(`predict_fn`'s host output for a batch, the lines its rows hold, in row order)."""
  for batch, order in source_batches(parts.tokenizer, lines, data_config, jax.device_count(),
                                     parts.model_config.max_input_len, rows=rows,
                                     first_line=first_line):
    yield parts.runner.run_replicated(predict_fn, params,
                                      parts.runner.put_batch({'inputs': batch['inputs']})), order


def translate_texts(parts, params, lines: List[str], predict_fn, data_config, *,
                    rows: Optional[int] = None, first_line: int = 1) -> List[str]:
  """The translation of each line, in the lines' order (host side, through `parts.runner`).

  Args:
    parts: components.Components of an encoder-decoder (tokenizer, model_config, runner).
    params: parameters put on the devices by `parts.runner.put_state`.
    lines: source sentences (at least one).
    predict_fn: `predict_step` with model, settings and eos_id bound; the same object at
      every call, so the runner compiles it once per shape.
    data_config: the run's `data` section (see `source_batches`).
    rows, first_line: as in `source_batches`.
  """
  texts = [''] * len(lines)
  for ids, order in _decoded_batches(parts, params, lines, predict_fn, data_config, rows=rows,
                                     first_line=first_line):
    for row, text in zip(order, parts.tokenizer.decode_batch(np.asarray(ids))):
      texts[row] = text
  return texts


def translate_nbest(parts, params, lines: List[str], nbest_fn, data_config, *,
                    rows: Optional[int] = None,
                    first_line: int = 1) -> List[List[Tuple[str, float]]]:
  """Per line, in the lines' order, its n best translations as (text, score), best first.

  As `translate_texts`, with `nbest_fn` = `nbest_step` with model, settings, eos_id and nbest
  bound. Scores are nbest_step's (length-penalised log-probabilities); slots the search could
  not fill are left out, so a list may be shorter than nbest.
  """
  ranked = [[] for _ in lines]
  for (ids, scores), order in _decoded_batches(parts, params, lines, nbest_fn, data_config,
                                               rows=rows, first_line=first_line):
    for row, line in enumerate(order):
      texts = parts.tokenizer.decode_batch(np.asarray(ids[row]))
      ranked[line] = [(text, float(score)) for text, score in zip(texts, scores[row])
                      if score > decode.NEG_INF / 2]
  return ranked
