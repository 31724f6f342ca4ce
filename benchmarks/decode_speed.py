"""Decoding throughput of the Transformer, with and without the key/value cache, as JSON.

  python -m benchmarks.decode_speed --setting=tiny --batch=16 --src_len=32 --out_len=64
  python -m benchmarks.decode_speed --setting=base --batch=64 --methods=beam5 --cache=on

Measures sentences/s and generated tokens/s of `predict`'s searches (greedy, beam 4,
beam 5, sampling at temperature 1) on one batch of random source ids (no padding)
through a randomly initialised model: whole jitted calls, encoder and cache set-up
included, compiled ahead of time (compile_s); the median of --repeats timed calls
(--uncached_repeats without the cache), cached and uncached calls taking turns. Every
output is exactly --out_len tokens long: the EOS logit is masked (set to NEG_INF) at
every step, so nothing ends early; beam search still ends each hypothesis with the EOS
it forces at the length limit (see decode.beam_search), at log p(EOS) floored.
Generated tokens count the returned sentence, not the beams.

"cached" is predict's path: one decoder position per step against the KV cache.
"uncached" re-runs the whole decoder (teacher-forced, causal mask, output projection
included) each step over a fixed [rows, out_len] buffer of the tokens so far and reads
the logits at the current position; fixed shapes keep it one compiled loop, and it
costs out_len positions per step (about twice the work of re-running only the prefix
so far). Its greedy output is checked against the cached one (`uncached_matches_cached`).
Times are wall seconds and this process's CPU seconds (all threads), which vary less
when other jobs share the cores.

Measured on the 2-core CPU (AMD EPYC, jax 0.10.2; other jobs paused), tiny, vocab 8000,
batch 16, src_len 32, out_len 64: cached beam 5 took 1.19 s a batch (13.4 sentences/s);
cached/uncached 12.9x (greedy), 14.5x (beam 4), 14.8x (beam 5), 8.6x (sampling) by wall
time. On the 2-core Intel Xeon (AVX-512, AMX) of 2026-12-02, with the cache grown in 4
stages (--cache_stages, as predict does by default): beam 5 0.33 s a batch (48.1
sentences/s), greedy 0.084 s (190 sentences/s); cached/uncached 18.0x (greedy), 20.0x
(beam 4), 21.6x (beam 5), 7.8x (sampling). `python -m benchmarks.flax_wmt` compares beam search with Flax's WMT example.
"""
import argparse
import functools
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.decoding import decode
from transformer_jax.decoding import predict
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig

EOS_ID = 1
# name -> (search method, beam size)
METHODS = {'greedy': ('greedy', 1), 'beam4': ('beam', 4), 'beam5': ('beam', 5),
           'sample': ('sample', 1)}


def make_model(setting, vocab_size, src_len, out_len, batch, seed=0):
  """(model, params, inputs int32 [batch, src_len]): random weights, random ids >= 3."""
  config = TransformerConfig.named(setting, vocab_size=vocab_size, dropout_rate=0.0,
                                   max_len=max(256, src_len, out_len))
  model = Transformer(config)
  inputs = np.random.RandomState(seed).randint(3, vocab_size, (batch, src_len)).astype(np.int32)
  params = jax.jit(model.init)(jax.random.key(seed), inputs[:1], inputs[:1, :out_len])['params']
  return model, params, jnp.asarray(inputs)


def without_eos(tokens_to_logits_fn, eos_id):
  """The same fn with EOS never chosen by the model (outputs reach the length limit)."""
  def fn(ids, cache):
    logits, cache = tokens_to_logits_fn(ids, cache)
    return logits.at[:, eos_id].set(decode.NEG_INF), cache
  return fn


def uncached_parts(model, params, encoded, inputs, out_len):
  """(state, tokens_to_logits_fn) that re-run the decoder over every position each step.

  The state holds the decoder inputs so far, `[rows, out_len + 1]` (BOS first), and the
  step. The teacher-forced decoder shifts its targets right, so targets = inputs[:, 1:];
  positions not yet decoded hold 1 (not PAD, whose padding mask would hide the current
  query) and are unseen by the causal mask.
  """
  rows = inputs.shape[0]
  state = {'inputs': jnp.ones((rows, out_len + 1), jnp.int32), 'step': jnp.zeros((), jnp.int32)}

  def tokens_to_logits(ids, state):
    step = state['step']
    decoder_inputs = jax.lax.dynamic_update_slice(state['inputs'], ids, (0, step))
    logits = model.apply({'params': params}, encoded, inputs, decoder_inputs[:, 1:],
                         method='decode')                        # [rows, out_len, vocab]
    logits = jax.lax.dynamic_index_in_dim(logits, step, axis=1, keepdims=False)
    logits = logits.at[:, model.config.pad_id].set(decode.NEG_INF)
    return logits, {'inputs': decoder_inputs, 'step': step + 1}
  return state, tokens_to_logits


def decode_batch(params, inputs, rng, *, model, method, beam_size, cached, out_len,
                 cache_stages=predict.SearchSettings.cache_stages):
  """Output ids [batch, out_len] of one search over `inputs` [batch, src_len]; the cache
  grows in `cache_stages` stages as in predict (the uncached search has no cache)."""
  batch_size = inputs.shape[0]
  encoded = model.apply({'params': params}, inputs, method='encode')
  beams = beam_size if method == 'beam' else 1
  common = dict(batch_size=batch_size, max_decode_len=out_len, eos_id=EOS_ID)
  if cached:
    encoded, inputs = predict.for_beams(model, encoded, inputs, beams)
    cache, common['cache_stages'] = predict.staged_cache(
        lambda length: predict.init_cache(model, params, encoded, inputs, length,
                                          rows=batch_size * beams), out_len, cache_stages)
    fn = predict.make_tokens_to_logits(model, params, encoded, inputs)
  else:
    encoded, inputs = decode.expand_to_beams((encoded, inputs), beams)
    cache, fn = uncached_parts(model, params, encoded, inputs, out_len)
  fn = without_eos(fn, EOS_ID)
  if method == 'beam':
    return decode.beam_search(cache, fn, beam_size=beam_size, alpha=0.6, **common)[0][:, 0]
  if method == 'greedy':
    return decode.greedy_search(cache, fn, **common)
  return decode.sample_search(cache, fn, rng, **common)


def compile_call(fn, *args):
  """(fn compiled for `args`, compile seconds): compiled ahead, so no timed call compiles."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - start


def time_alternately(calls, repeats):
  """[(outputs, median wall seconds, median CPU seconds)] of each (compiled fn, args) in
  `calls`, timed `repeats[i]` times. The calls take turns, so a change in the shared
  machine's load hits all alike; CPU seconds (this process, all threads) count the work
  done and vary less than wall time when other jobs compete for the cores."""
  outputs, times = [None] * len(calls), [[] for _ in calls]
  for turn in range(max(repeats)):
    for i, (fn, args) in enumerate(calls):
      if turn < repeats[i]:
        wall, cpu = time.perf_counter(), time.process_time()
        outputs[i] = jax.block_until_ready(fn(*args))
        times[i].append((time.perf_counter() - wall, time.process_time() - cpu))
  return [(out, statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
          for out, t in zip(outputs, times)]


def throughput(seconds, cpu_seconds, compile_s, batch, out_len):
  return {'seconds': round(seconds, 4), 'cpu_seconds': round(cpu_seconds, 4),
          'compile_s': round(compile_s, 2), 'sentences_per_s': round(batch / seconds, 1),
          'tokens_per_s': round(batch * out_len / seconds)}


def ratio(slow, fast):
  """How many times faster `fast` is, by wall time and by CPU time."""
  return {'wall': round(slow['seconds'] / fast['seconds'], 2),
          'cpu': round(slow['cpu_seconds'] / fast['cpu_seconds'], 2)}


def machine():
  return {'platform': jax.devices()[0].platform, 'device': jax.devices()[0].device_kind,
          'devices': jax.device_count(), 'cpu_count': os.cpu_count(), 'jax': jax.__version__}


def measure(name, model, params, inputs, cache_modes, args):
  """Throughput of search `name` (a METHODS key) in each cache mode, and their ratio."""
  method, beam_size = METHODS[name]
  call_args = (params, inputs, jax.random.key(0))
  compiled = [compile_call(functools.partial(decode_batch, model=model, method=method,
                                             beam_size=beam_size, cached=cached,
                                             out_len=args.out_len,
                                             cache_stages=args.cache_stages), *call_args)
              for cached in cache_modes]
  timed = time_alternately([(fn, call_args) for fn, _ in compiled],
                           [args.repeats if cached else args.uncached_repeats
                            for cached in cache_modes])
  entry = {}
  for cached, (_, compile_s), (_, seconds, cpu_seconds) in zip(cache_modes, compiled, timed):
    entry['cached' if cached else 'uncached'] = throughput(
        seconds, cpu_seconds, compile_s, args.batch, args.out_len)
  if len(cache_modes) == 2:
    entry['cached_over_uncached'] = ratio(entry['uncached'], entry['cached'])
    if method == 'greedy':
      entry['uncached_matches_cached'] = bool(np.array_equal(timed[0][0], timed[1][0]))
  return entry


def add_shape_flags(parser):
  """The model and input flags this benchmark shares with flax_wmt.py."""
  parser.add_argument('--setting', default='tiny', choices=['tiny', 'base'])
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--src_len', type=int, default=32)
  parser.add_argument('--out_len', type=int, default=64)
  parser.add_argument('--vocab_size', type=int, default=8000)
  parser.add_argument('--cache_stages', type=int, default=predict.SearchSettings.cache_stages,
                      help='stages the key/value cache grows in (1 = one fixed-size cache)')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_shape_flags(parser)
  parser.add_argument('--methods', default=','.join(METHODS), help='subset of ' + ','.join(METHODS))
  parser.add_argument('--cache', default='both', choices=['both', 'on', 'off'])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--uncached_repeats', type=int, default=1,
                      help='timed calls without the cache (each is ~15x slower)')
  args = parser.parse_args()

  model, params, inputs = make_model(args.setting, args.vocab_size, args.src_len, args.out_len,
                                     args.batch)
  cache_modes = {'both': (True, False), 'on': (True,), 'off': (False,)}[args.cache]
  results = {name: measure(name, model, params, inputs, cache_modes, args)
             for name in args.methods.split(',')}
  print(json.dumps({
      'setting': args.setting, 'vocab_size': args.vocab_size, 'batch': args.batch,
      'src_len': args.src_len, 'out_len': args.out_len, 'cache_stages': args.cache_stages,
      'eos': 'masked', 'alpha': 0.6,
      'repeats': args.repeats, 'uncached_repeats': args.uncached_repeats,
      'machine': machine(), 'results': results}))

if __name__ == '__main__':
  main()
