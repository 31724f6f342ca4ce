"""Our beam search against the Flax WMT example's, same model size and inputs, as JSON.

  python -m benchmarks.flax_wmt --setting=tiny --batch=16 --src_len=32 --out_len=64
  python -m benchmarks.flax_wmt --flax_wmt_dir=/path/to/flax/examples/wmt

The Flax example (examples/wmt/decode.py and models.py of the installed flax version's
source distribution) is imported from where it lies, never copied here: from
--flax_wmt_dir, else extracted from the sdist given by --flax_sdist, else from
`pip download flax==<version> --no-deps --no-binary :all:` into --cache_dir.

Both sides translate the same random source ids [batch, src_len] with randomly
initialised models of the named size (ours: `TransformerConfig.named(setting)`; theirs:
the same layers, widths and heads, tied embeddings) and beam search (beam --beam_size,
alpha 0.6), EOS masked so every output is --out_len tokens (see decode_speed.py).
Timed: one jitted call, encoder included, compiled ahead of time; the median of
--repeats calls, ours and theirs taking turns so that load changes hit both alike.
Ours builds its cache inside the call (cross-attention keys/values projected once);
theirs takes a zero cache made outside, as their train.py does, and re-projects the
encoder output in every step. Wall and CPU seconds as in decode_speed.py.

Measured on the 2-core CPU (AMD EPYC, jax 0.10.2, flax 0.12.8), tiny, vocab 8000, batch 16,
src_len 32, out_len 64, five runs: ours/theirs 1.59-1.87x by wall time, 1.79-2.06x by CPU
time (ours 1.04-1.16 s a batch, theirs 1.72-2.16 s); the two models have 2.35M parameters
each. With the blocked top-k (transformer_jax/decoding/top_k.py), on the AVX-512 machine of 2026-12-01,
three runs: ours 0.42-0.54 s, theirs 0.79-0.94 s, 1.74-1.89x by wall time, 1.90-2.09x by CPU.
With our cache grown in 4 stages (--cache_stages=4, the default; see cache_stages.CacheStages), on
the 2-core Intel Xeon (AVX-512, AMX) of 2026-12-02, three runs: ours 0.32-0.36 s, theirs
0.71-0.81 s, 2.21-2.25x by wall time, 2.44-2.49x by CPU time; --cache_stages=1 in the same
hour: 0.44 s against 0.75 s, 1.72x.
"""
import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tarfile

import flax
import jax
import jax.numpy as jnp

from benchmarks import decode_speed
from transformer_jax.decoding import decode
from transformer_jax.models import summary

DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser('~'), '.cache', 'transformer_jax', 'flax_sdist')


def find_example_dir(flax_wmt_dir, flax_sdist, cache_dir):
  """The folder holding the Flax WMT example's decode.py and models.py."""
  if flax_wmt_dir:
    return flax_wmt_dir
  version = flax.__version__
  example_dir = os.path.join(cache_dir, f'flax-{version}', 'examples', 'wmt')
  if os.path.isfile(os.path.join(example_dir, 'decode.py')):
    return example_dir
  if not flax_sdist:
    flax_sdist = os.path.join(cache_dir, f'flax-{version}.tar.gz')
  if not os.path.isfile(flax_sdist):
    subprocess.run([sys.executable, '-m', 'pip', 'download', f'flax=={version}', '--no-deps',
                    '--no-binary', ':all:', '-d', os.path.dirname(flax_sdist)], check=True)
  prefix = f'flax-{version}/examples/wmt/'
  with tarfile.open(flax_sdist) as tar:
    members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
    tar.extractall(cache_dir, members=members, filter='data')
  return example_dir


def load_module(example_dir, name):
  """Imports `<example_dir>/<name>.py` as module `flax_wmt_<name>`."""
  spec = importlib.util.spec_from_file_location(f'flax_wmt_{name}',
                                                os.path.join(example_dir, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def flax_config(models, ours, src_len, out_len):
  """Their TransformerConfig with our model's sizes (their decoder cache needs out_len + 1)."""
  return models.TransformerConfig(
      vocab_size=ours.vocab_size, output_vocab_size=ours.vocab_size, share_embeddings=True,
      logits_via_embedding=True, emb_dim=ours.model_dim, num_heads=ours.num_heads,
      num_layers=ours.num_layers, qkv_dim=ours.model_dim, mlp_dim=ours.mlp_dim,
      max_len=max(256, src_len, out_len + 1), dropout_rate=0.0, attention_dropout_rate=0.0,
      deterministic=True)


def flax_beam_decode(params, inputs, cache, *, models, wmt_decode, config, beam_size,
                     max_decode_len):
  """Their predict step (as in their train.py), EOS masked: ids [batch, max_decode_len - 1].

  Their max_decode_len counts the BOS they keep in front, so it makes max_decode_len - 1
  decoder calls; the cache holds max_decode_len positions.
  """
  model = models.Transformer(config)
  decoder = models.Transformer(config.replace(decode=True))
  encoded = wmt_decode.flat_batch_beam_expand(
      model.apply({'params': params}, inputs, method=models.Transformer.encode), beam_size)
  raw_inputs = wmt_decode.flat_batch_beam_expand(inputs, beam_size)

  def tokens_to_logits(ids, cache):
    logits, variables = decoder.apply({'params': params, 'cache': cache}, encoded, raw_inputs,
                                      ids, mutable=['cache'], method=models.Transformer.decode)
    logits = logits[:, 0].at[:, 0].set(decode.NEG_INF)        # PAD, as ours does
    return logits, variables['cache']

  seqs, _ = wmt_decode.beam_search(
      inputs, cache, decode_speed.without_eos(tokens_to_logits, decode_speed.EOS_ID),
      beam_size=beam_size, alpha=0.6, eos_id=decode_speed.EOS_ID, max_decode_len=max_decode_len)
  return seqs[:, -1, 1:]                                       # best last; drop BOS


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  decode_speed.add_shape_flags(parser)
  parser.add_argument('--beam_size', type=int, default=5)
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--flax_wmt_dir', default='', help='folder with their decode.py, models.py')
  parser.add_argument('--flax_sdist', default='', help='flax-<version>.tar.gz already downloaded')
  parser.add_argument('--cache_dir', default=DEFAULT_CACHE_DIR)
  args = parser.parse_args()

  example_dir = find_example_dir(args.flax_wmt_dir, args.flax_sdist, args.cache_dir)
  models, wmt_decode = load_module(example_dir, 'models'), load_module(example_dir, 'decode')
  model, params, inputs = decode_speed.make_model(args.setting, args.vocab_size, args.src_len,
                                                  args.out_len, args.batch)
  config = flax_config(models, model.config, args.src_len, args.out_len)
  targets = jnp.ones((args.batch, args.out_len + 1), jnp.int32)
  flax_params = jax.jit(models.Transformer(config).init)(
      jax.random.key(0), inputs, targets)['params']
  # A zero cache for the batch (their beam search tiles it), made outside the timed call.
  flax_cache = jax.jit(models.Transformer(config.replace(decode=True)).init)(
      jax.random.key(0), inputs, targets)['cache']

  our_args, their_args = (params, inputs, jax.random.key(0)), (flax_params, inputs, flax_cache)
  ours, our_compile = decode_speed.compile_call(
      functools.partial(decode_speed.decode_batch, model=model, method='beam',
                        beam_size=args.beam_size, cached=True, out_len=args.out_len,
                        cache_stages=args.cache_stages), *our_args)
  theirs, their_compile = decode_speed.compile_call(
      functools.partial(flax_beam_decode, models=models, wmt_decode=wmt_decode, config=config,
                        beam_size=args.beam_size, max_decode_len=args.out_len + 1), *their_args)
  (our_ids, *our_s), (their_ids, *their_s) = decode_speed.time_alternately(
      [(ours, our_args), (theirs, their_args)], [args.repeats] * 2)
  assert our_ids.shape == their_ids.shape == (args.batch, args.out_len), (our_ids.shape,
                                                                         their_ids.shape)
  our_speed = decode_speed.throughput(*our_s, our_compile, args.batch, args.out_len)
  their_speed = decode_speed.throughput(*their_s, their_compile, args.batch, args.out_len)
  print(json.dumps({
      'setting': args.setting, 'vocab_size': args.vocab_size, 'batch': args.batch,
      'src_len': args.src_len, 'out_len': args.out_len, 'beam_size': args.beam_size,
      'cache_stages': args.cache_stages,
      'alpha': 0.6, 'eos': 'masked', 'repeats': args.repeats, 'flax': flax.__version__,
      'flax_wmt_dir': example_dir, 'machine': decode_speed.machine(),
      'params': {'ours': summary.count_params(params),
                 'flax_wmt': summary.count_params(flax_params)},
      'ours': our_speed, 'flax_wmt': their_speed,
      'ours_over_flax': decode_speed.ratio(slow=their_speed, fast=our_speed),
  }))


if __name__ == '__main__':
  main()
