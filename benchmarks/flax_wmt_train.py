"""Our training step against the Flax WMT example's, same model size and batch, as JSON.

  python -m benchmarks.flax_wmt_train --setting=tiny --rows=128 --length=32
  python -m benchmarks.flax_wmt_train --setting=base --rows=16 --length=40 --pairs=3

Both sides train on the same random token ids [rows, length] (no padding) with
randomly initialised models of the named size (ours: `TransformerConfig.named`; theirs:
the same layers, widths, heads, dropout rate and tied embeddings) and the same optax
optimizer (Adam, rsqrt schedule). Theirs is the `train_step` of their train.py,
imported from the installed flax version's source distribution (see flax_wmt.py; its
TensorFlow, clu, BLEU and input-pipeline imports are stubbed, none of them is used by
the step) and run as their train.py runs it, `jax.pmap` over the local devices. Ours
runs through `parallel.make_runner(--parallelism)`.

Timed: --steps steps per turn, ours and theirs taking turns --pairs times, so that load
changes hit both alike; each side's figure is the median over its turns of the median
step in the turn. `ours_over_flax` > 1 means ours is faster.

Measured on the 2-core CPU (AMD EPYC with AVX-512, jax 0.10.2, flax 0.12.8), 2026-12-01,
--pairs=3: tiny, vocab 10,000, 128 x 32, --steps=3: 789 and 735 ms against 1177 and 1135 ms
(1.49x, 1.55x in two runs; 1.16x before the chunked loss, argmax-free accuracy and 16-bit
dropout masks, 1.38x with the chunked loss alone); base, vocab 37,000, 16 x 40 (63.07 M
parameters), --steps=2: 1974 ms against 2189 ms (1.11x); later the same day, with the blocked
beam top-k (no change to training): 1978 vs 2570 ms (1.30x) and, --pairs=5, 2102 vs 2486 ms
(1.18x); --rows=64 --length=40: 7469 vs 11031 ms (1.48x); tiny again: 737 vs 1152 ms (1.56x).
With the loss's table gradient accumulated as [d, vocab] (projected_loss), two runs each:
tiny 805 vs 1284 ms (1.60x), 804 vs 1179 ms (1.47x); base 16 x 40 1864 vs 2539 ms (1.36x),
2013 vs 2456 ms (1.22x).
"""
import argparse
import contextlib
import importlib
import json
import shutil
import statistics
import sys
import time
import types

from flax import jax_utils
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import decode_speed
from benchmarks import flax_wmt
from benchmarks.train_step_speed import make_optimizer
from transformer_jax.models import summary
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.train import parallel
from transformer_jax.train import steps

_STUBBED = ('tensorflow', 'clu', 'clu.metric_writers', 'clu.periodic_actions', 'input_pipeline',
            'bleu')


class _Stub(types.ModuleType):
  """A module whose every attribute is another stub (their annotations name tf.data...)."""

  def __getattr__(self, name):
    if name.startswith('__'):
      raise AttributeError(name)
    return _Stub(f'{self.__name__}.{name}')


@contextlib.contextmanager
def _example_imports(models, wmt_decode):
  """Lets their train.py import: its siblings are ours to give, the unused ones stubs."""
  # Flax's own modules look for TensorFlow when imported: import them before the stubs.
  for name in ('checkpoints', 'common_utils', 'dynamic_scale'):
    importlib.import_module(f'flax.training.{name}')
  saved = {name: sys.modules.get(name) for name in (*_STUBBED, 'models', 'decode')}
  sys.modules.update({name: _Stub(name) for name in _STUBBED})
  sys.modules['models'], sys.modules['decode'] = models, wmt_decode
  try:
    yield
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module


def our_stepper(config, batch, parallelism, label_smoothing):
  """(step() running one training step to completion, parameter count)."""
  model = Transformer(config)
  tx, lr_fn = make_optimizer(config.model_dim)
  state = steps.init_train_state(model, jax.random.PRNGKey(0), batch, tx)
  runner = parallel.make_runner(parallelism, model=model, label_smoothing=label_smoothing,
                                learning_rate_fn=lr_fn)
  holder = {'state': runner.put_state(state)}
  device_batch = runner.put_batch(batch)

  def step():
    holder['state'], metrics = runner.train_step(holder['state'], device_batch)
    jax.block_until_ready(metrics)
  return step, summary.count_params(state.params)


def their_stepper(train, models, config, batch, label_smoothing):
  """The same for their train_step under their pmap (one replica per local device)."""
  tx, lr_fn = make_optimizer(config.emb_dim)
  params = jax.jit(models.Transformer(config.replace(deterministic=True)).init)(
      jax.random.key(0), batch['inputs'], batch['targets'])['params']
  state = train.TrainState.create(apply_fn=None, params=params, tx=tx, dynamic_scale=None)
  p_step = jax.pmap(
      lambda state, batch, rng: train.train_step(state, batch, config, lr_fn,
                                                 label_smoothing=label_smoothing, dropout_rng=rng),
      axis_name='batch', donate_argnums=(0,))
  replicas = jax.local_device_count()
  holder = {'state': jax_utils.replicate(state)}
  on_devices = jax.pmap(lambda x: x)            # their arrays split over the devices, once
  device_batch = on_devices(jax.tree.map(lambda x: x.reshape(replicas, -1, *x.shape[1:]), batch))
  rngs = on_devices(jax.random.split(jax.random.key(1), replicas))

  def step():
    holder['state'], metrics = p_step(holder['state'], device_batch, rngs)
    jax.block_until_ready(metrics)
  return step, summary.count_params(params)


def time_turns(steppers, steps_per_turn, pairs):
  """Median seconds per step of each stepper, turns interleaved."""
  turns = [[] for _ in steppers]
  for _ in range(pairs):
    for i, step in enumerate(steppers):
      times = []
      for _ in range(steps_per_turn):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
      turns[i].append(statistics.median(times))
  return [statistics.median(t) for t in turns], turns


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--setting', default='tiny', choices=['tiny', 'base', 'big'])
  parser.add_argument('--vocab_size', type=int, default=10000)
  parser.add_argument('--rows', type=int, default=128)
  parser.add_argument('--length', type=int, default=32)
  parser.add_argument('--label_smoothing', type=float, default=0.1)
  parser.add_argument('--dtype', default='float32', choices=['float32', 'bfloat16'],
                      help='compute dtype of both models (parameters stay float32)')
  parser.add_argument('--attention_impl', default='explicit', help='ours: model.attention_impl')
  parser.add_argument('--parallelism', default='jit', choices=sorted(parallel.RUNNERS))
  parser.add_argument('--steps', type=int, default=3, help='timed steps per turn')
  parser.add_argument('--pairs', type=int, default=3)
  parser.add_argument('--flax_wmt_dir', default='')
  parser.add_argument('--flax_sdist', default='')
  parser.add_argument('--cache_dir', default=flax_wmt.DEFAULT_CACHE_DIR)
  parser.add_argument('--copy_example_to', default='',
                      help='only copy their example folder here (for a machine with no network)')
  args = parser.parse_args()
  if args.copy_example_to:
    shutil.copytree(flax_wmt.find_example_dir(args.flax_wmt_dir, args.flax_sdist, args.cache_dir),
                    args.copy_example_to, dirs_exist_ok=True)
    return
  if args.rows % jax.local_device_count():
    sys.exit(f'error: --rows={args.rows} is not divisible by the '
             f'{jax.local_device_count()} local devices: pass a multiple of it')

  example_dir = flax_wmt.find_example_dir(args.flax_wmt_dir, args.flax_sdist, args.cache_dir)
  models = flax_wmt.load_module(example_dir, 'models')
  wmt_decode = flax_wmt.load_module(example_dir, 'decode')
  with _example_imports(models, wmt_decode):
    train = flax_wmt.load_module(example_dir, 'train')

  config = TransformerConfig.named(args.setting, vocab_size=args.vocab_size, dtype=args.dtype,
                                  attention_impl=args.attention_impl)
  their_config = flax_wmt.flax_config(models, config, args.length, args.length).replace(
      dropout_rate=config.dropout_rate, attention_dropout_rate=config.attention_dropout_rate,
      deterministic=False, dtype=jnp.dtype(args.dtype))
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(3, args.vocab_size, (args.rows, args.length)).astype(np.int32)
           for k in ('inputs', 'targets')}

  ours, our_params = our_stepper(config, batch, args.parallelism, args.label_smoothing)
  theirs, their_params = their_stepper(train, models, their_config, batch, args.label_smoothing)
  compile_s = []
  for step in (ours, theirs):               # compile and one warm step, untimed
    start = time.perf_counter()
    step()
    compile_s.append(round(time.perf_counter() - start, 1))
    step()
  (our_s, their_s), turns = time_turns([ours, theirs], args.steps, args.pairs)
  tokens = args.rows * args.length
  print(json.dumps({
      'setting': args.setting, 'vocab_size': args.vocab_size, 'batch': [args.rows, args.length],
      'dropout_rate': config.dropout_rate, 'label_smoothing': args.label_smoothing,
      'dtype': args.dtype, 'attention_impl': args.attention_impl,
      'ours_parallelism': args.parallelism, 'flax_parallelism': 'pmap',
      'devices': jax.local_device_count(), 'flax_wmt_dir': example_dir,
      'machine': decode_speed.machine(),
      'params': {'ours': our_params, 'flax_wmt': their_params},
      'compile_s': {'ours': compile_s[0], 'flax_wmt': compile_s[1]},
      'step_ms': {'ours': round(our_s * 1e3, 1), 'flax_wmt': round(their_s * 1e3, 1)},
      'turn_ms': {'ours': [round(t * 1e3, 1) for t in turns[0]],
                  'flax_wmt': [round(t * 1e3, 1) for t in turns[1]]},
      'target_tokens_per_s': {'ours': round(tokens / our_s), 'flax_wmt': round(tokens / their_s)},
      'ours_over_flax': round(their_s / our_s, 3),
  }))


if __name__ == '__main__':
  main()
