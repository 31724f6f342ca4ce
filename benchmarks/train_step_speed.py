"""Training-step throughput of the Transformer on the local devices, printed as JSON.

  python benchmarks/train_step_speed.py                                 # tiny, pmap, all devices
  python benchmarks/train_step_speed.py --setting=base --tokens=4096 --parallelism=jit
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/train_step_speed.py

Random token ids (lengths fixed at --length, no padding) through the real train step
(label-smoothed loss, Adam, psum over devices). Reports the median step time over
--steps timed steps after --warmup untimed ones, target tokens/s, and the model FLOP
rate as 6 * params * target tokens per step (each parameter meets each source or target
position once; sources and targets have equal length here; attention's L^2 term left out).
"""
import argparse
import json
import statistics
import time

import jax
import numpy as np
import ml_collections

from transformer_jax.models import summary
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.train import optim
from transformer_jax.train import parallel
from transformer_jax.train import steps


def make_optimizer(model_dim):
  """The paper's Adam (beta2 0.98, rsqrt warmup 4000), as the benchmarks train with it."""
  config = ml_collections.ConfigDict(dict(
      schedule='rsqrt', learning_rate=None, warmup_steps=4000, b1=0.9, b2=0.98, eps=1e-9,
      weight_decay=0.0, grad_clip_norm=0.0, grad_accum_steps=1))
  return optim.make_optimizer(config, model_dim, 100_000)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--setting', default='tiny', choices=['tiny', 'base', 'big'])
  parser.add_argument('--vocab_size', type=int, default=10000)
  parser.add_argument('--tokens', type=int, default=4096, help='target tokens per global batch')
  parser.add_argument('--length', type=int, default=32)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--attention_impl', default='explicit', help='model.attention_impl')
  parser.add_argument('--parallelism', default='pmap', choices=sorted(parallel.RUNNERS))
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()

  config = TransformerConfig.named(args.setting, vocab_size=args.vocab_size, dtype=args.dtype,
                                  attention_impl=args.attention_impl)
  model = Transformer(config)
  rows = max(args.tokens // args.length // jax.device_count(), 1) * jax.device_count()
  rng = np.random.default_rng(0)
  batch = {k: rng.integers(3, args.vocab_size, (rows, args.length)).astype(np.int32)
           for k in ('inputs', 'targets')}
  tx, lr_fn = make_optimizer(config.model_dim)
  state = steps.init_train_state(model, jax.random.PRNGKey(0), batch, tx)
  runner = parallel.make_runner(args.parallelism, model=model, label_smoothing=0.1,
                                learning_rate_fn=lr_fn)
  state = runner.put_state(state)
  device_batch = runner.put_batch(batch)
  start = time.perf_counter()
  state, metrics = runner.train_step(state, device_batch)
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  times = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    state, metrics = runner.train_step(state, device_batch)
    jax.block_until_ready(metrics)
    if i >= args.warmup:
      times.append(time.perf_counter() - start)
  step = statistics.median(times)
  tokens = rows * args.length
  params = summary.count_params(runner.get_state(state).params)
  print(json.dumps({
      'setting': args.setting, 'dtype': args.dtype, 'parallelism': args.parallelism,
      'attention_impl': args.attention_impl,
      'devices': jax.device_count(), 'platform': jax.devices()[0].platform,
      'params': params, 'batch': [rows, args.length], 'compile_s': round(compile_seconds, 2),
      'step_ms_median': round(step * 1e3, 1), 'target_tokens_per_s': round(tokens / step),
      'model_tflops_per_s': round(6 * params * tokens / step / 1e12, 3),
  }))


if __name__ == '__main__':
  main()
