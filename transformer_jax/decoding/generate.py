"""Text generation from a decoder-only LM through decode.py's and beam.py's searches.

`sample_step` draws (or greedy/beam-searches) continuations of a batch of prompts.
The LM's key/value cache is wrapped in a small state that the searches carry as their
`cache` pytree:

  {'model': the LM's 'cache' collection, 'step': int32 scalar (tokens fed so far),
   'prompts': int32 [n, prompt_len], 'prompt_lengths': int32 [n]}

While `step < prompt_lengths[row]`, tokens_to_logits replaces the row's logits by a
one-hot at its next prompt token, so every search (greedy, sampling at any
temperature/top-k/top-p, beam) takes the prompt token: the prompt is fed through the
same one-token decode path that fills the cache, rows of different prompt lengths
need no alignment, and the output starts with the prompt itself. Forced tokens have
log-probability 0, so beam scores and sampling are those of the continuation given the
prompt. An empty prompt (length 0) is unconditional generation from BOS.

`sample_step` is pure; parallel.py's runners pmap or jit it like predict_step.
"""
import functools
from typing import Any, List

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer_jax.data import batching
from transformer_jax.decoding import beam
from transformer_jax.decoding import decode
from transformer_jax.decoding import predict
from transformer_jax.decoding.predict import SearchSettings

# Rows per generation batch (rounded up to a multiple of the device count).
ROWS_PER_BATCH = 64


def init_state(model: Any, params: Any, prompts: jnp.ndarray, prompt_lengths: jnp.ndarray,
               max_decode_len: int) -> dict:
  """The search state: an empty LM cache for max_decode_len positions and the prompts.

  Args:
    model: the DecoderOnlyLM (decoding=False is fine; a decoding clone is used).
    params: its parameters.
    prompts: int32 [n, prompt_len] prompt ids, 0-padded on the right.
    prompt_lengths: int32 [n] real tokens of each prompt (0 = no prompt).
    max_decode_len: positions the cache holds (prompt and continuation together).
  """
  lm = model.clone(decoding=True)
  placeholder = jnp.zeros((prompts.shape[0], max_decode_len), jnp.int32)
  _, variables = lm.apply({'params': params}, placeholder, mutable=['cache'])
  return {'model': variables['cache'], 'step': jnp.zeros((), jnp.int32),
          'prompts': prompts, 'prompt_lengths': prompt_lengths}


def make_tokens_to_logits(model: Any, params: Any):
  """tokens_to_logits_fn(ids [n, 1], state) -> (logits [n, vocab], state) for the searches."""
  lm = model.clone(decoding=True)
  pad = model.config.pad_id

  def tokens_to_logits(ids, state):
    logits, variables = lm.apply({'params': params, 'cache': state['model']}, ids,
                                 mutable=['cache'])
    # PAD (also the BOS input) is never a real output: the searches must not pick it.
    logits = logits[:, 0].at[:, pad].set(decode.NEG_INF)
    step, prompts = state['step'], state['prompts']
    forced = jax.lax.dynamic_index_in_dim(prompts, jnp.minimum(step, prompts.shape[1] - 1),
                                          axis=1)                       # [n, 1]
    one_hot = jnp.where(jnp.arange(logits.shape[-1]) == forced, 0.0, decode.NEG_INF)
    logits = jnp.where((step < state['prompt_lengths'])[:, None], one_hot, logits)
    return logits, {**state, 'model': variables['cache'], 'step': step + 1}
  return tokens_to_logits


def sample_step(params: Any, batch: dict, *, model: Any, settings: SearchSettings,
                eos_id: int) -> jnp.ndarray:
  """Prompt + continuation ids [n, max_decode_len] (EOS kept, PAD after it).

  Args:
    params: the LM's parameters.
    batch: {'prompts': int32 [n, prompt_len]} (0-padded, no EOS; all 0 = unconditional),
      optionally 'seeds': int32 [n], folded into the sampling key (so rows on different
      devices draw differently).
    model: the DecoderOnlyLM.
    settings: method ('sample', 'greedy' or 'beam'), temperature, top_k, top_p,
      beam_size, alpha, max_extra_len (new tokens at most), seed.
    eos_id: end-of-sequence id.
  """
  prompts = batch['prompts']
  batch_size = prompts.shape[0]
  # A row holds its prompt plus max_extra_len new tokens, within the model's max_len.
  max_decode_len, max_lengths = predict.decode_lengths(prompts, settings, model.config.max_len)
  prompt_lengths = jnp.sum(prompts != 0, axis=-1).astype(jnp.int32)
  common = dict(batch_size=batch_size, max_decode_len=max_decode_len, eos_id=eos_id,
                max_lengths=max_lengths)
  fn = make_tokens_to_logits(model, params)
  if settings.method == 'beam':
    prompts, prompt_lengths = beam.expand_to_beams((prompts, prompt_lengths),
                                                   settings.beam_size)
  state, common['cache_stages'] = predict.staged_cache(
      lambda length: init_state(model, params, prompts, prompt_lengths, length),
      max_decode_len, settings.cache_stages)
  if settings.method == 'beam':
    sequences, _ = beam.beam_search(state, fn, beam_size=settings.beam_size,
                                    alpha=settings.alpha, **common)
    return sequences[:, 0]
  if settings.method == 'greedy':
    return decode.greedy_search(state, fn, **common)
  seeds = batch.get('seeds', jnp.zeros((batch_size,), jnp.int32))
  rng = jax.random.fold_in(jax.random.PRNGKey(settings.seed), seeds[0])
  return decode.sample_search(state, fn, rng, temperature=settings.temperature,
                              top_k=settings.top_k, top_p=settings.top_p, **common)


def prompt_batches(tokenizer, lines: List[str], batch_multiple: int, max_len: int):
  """Batches {'prompts', 'seeds'} of the lines' ids (EOS dropped; '' = no prompt).

  Every batch has the same row count (a multiple of batch_multiple; extra rows are
  empty prompts) and prompts padded to a multiple of 8, so few shapes compile. The cache
  holds max_len tokens in all, so a prompt keeps at most its first max_len - 1 tokens
  (one warning names the lines cut), leaving room for at least one new token.
  """
  ids, cut = batching.cut_to_length(tokenizer.encode(lines), max_len)
  if cut:
    logging.warning(batching.describe_cut_lines(cut, max_len))
  ids = [x[:-1] for x in ids]
  rows = -(-min(ROWS_PER_BATCH, len(lines)) // batch_multiple) * batch_multiple
  for start in range(0, len(ids), rows):
    chunk = ids[start:start + rows]
    length = max(8, -(-max(len(x) for x in chunk) // 8) * 8)
    prompts = np.zeros((rows, length), np.int32)
    for r, x in enumerate(chunk):
      prompts[r, :len(x)] = x
    yield {'prompts': prompts, 'seeds': np.arange(start, start + rows, dtype=np.int32)}


def generate_texts(parts, params, lines: List[str], settings: SearchSettings) -> List[str]:
  """Prompt + continuation text for each line (host side, through `parts.runner`).

  Args:
    parts: components.Components of an LM run.
    params: parameters put on the devices by `parts.runner.put_state`.
    lines: prompts; '' asks for an unconditional sample.
    settings: the search settings (`decode` section of the experiment).
  """
  # One bound function for every batch, so the runner compiles it once per shape.
  fn = functools.partial(sample_step, model=parts.model, settings=settings,
                         eos_id=parts.tokenizer.eos_id)
  texts = []
  for batch in prompt_batches(parts.tokenizer, lines, jax.device_count(),
                              parts.model_config.max_len):
    ids = parts.runner.run_replicated(fn, params, parts.runner.put_batch(batch))
    texts.extend(parts.tokenizer.decode_batch(np.asarray(ids)))
  return texts[:len(lines)]

