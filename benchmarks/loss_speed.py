"""The tied output projection + label-smoothed loss + metrics, with gradients: logits formed whole
(`layers.tied_logits` + `losses.compute_metrics`) against chunks (`projected_loss`), as JSON.

  python -m benchmarks.loss_speed                                   # Tiny: 128 x 32, 10k, d 128
  python -m benchmarks.loss_speed --rows=16 --length=40 --vocab_size=37000 --model_dim=512

Random hidden states, table and targets; each figure is the fastest of --repeats calls of the
jitted value-and-gradient, after one call to compile. Measured on the 2-core CPU (AMD EPYC with
AVX-512, jax 0.10.2), 2026-12-01, one run each beside a sweep paused:
  128 x 32 tokens, vocab 10,000, d 128: whole 305 ms; chunks of 128 / 256 / 512: 215 / 219 /
    229 ms (before accuracy stopped using argmax, whole took 376 ms);
  128 x 32, vocab 6,000, d 256: whole 291 ms; chunks of 256: 227 ms;
  128 x 32, vocab 10,000, d 512: whole 832 ms; chunks of 512: 713 ms;
  16 x 40, vocab 37,000, d 512 (the base benchmark's small batch): whole 521 ms; chunks of
    256 (two of 320): 558 ms. With few tokens and a wide model the [vocab, d] gradient the
    chunks add to each time costs more than the cache saves.
After the table's gradient was accumulated as [d, vocab] (no transpose of each chunk), two A/B
rounds on 2026-12-02: 128 x 32, 10k, d 128: chunks 202 / 257 ms against whole 317 / 387 ms
(before: 253 / 229 against 319 / 296); 16 x 40, 37k, d 512: 533 / 514 against 568 / 533 ms
(before: 645 / 573 against 583 / 518).
"""
import argparse
import json
import time

import jax

from benchmarks import decode_speed
from transformer_jax.nn import layers
from transformer_jax.nn import losses
from transformer_jax.nn import projected_loss


def _fastest(fn, args, repeats):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', type=int, default=128)
  parser.add_argument('--length', type=int, default=32)
  parser.add_argument('--vocab_size', type=int, default=10000)
  parser.add_argument('--model_dim', type=int, default=128)
  parser.add_argument('--chunks', default='128,256,512', help='tokens per chunk, comma-separated')
  parser.add_argument('--label_smoothing', type=float, default=0.1)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  hidden = jax.random.normal(keys[0], (args.rows, args.length, args.model_dim))
  table = jax.random.normal(keys[1], (args.vocab_size, args.model_dim)) * args.model_dim ** -0.5
  targets = jax.random.randint(keys[2], (args.rows, args.length), 1, args.vocab_size)
  weights = losses.target_weights(targets)

  def whole(h, t):
    sums = losses.compute_metrics(layers.tied_logits(h, t), targets, args.label_smoothing, weights)
    return sums['loss'], sums

  def chunked(chunk):
    def fn(h, t):
      sums = projected_loss.metric_sums(projected_loss.Projection(h, t), targets,
                                        args.label_smoothing, weights, chunk)
      return sums['loss'], sums
    return fn

  grad = lambda fn: jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))
  result = {'tokens': [args.rows, args.length], 'vocab_size': args.vocab_size,
            'model_dim': args.model_dim, 'machine': decode_speed.machine(),
            'ms': {'whole': round(1e3 * _fastest(grad(whole), (hidden, table), args.repeats), 1)}}
  for chunk in (int(c) for c in args.chunks.split(',')):
    result['ms'][f'chunk_{chunk}'] = round(
        1e3 * _fastest(grad(chunked(chunk)), (hidden, table), args.repeats), 1)
  print(json.dumps(result))


if __name__ == '__main__':
  main()
