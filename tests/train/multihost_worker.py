"""Stand-in model and batches for the step tests, and the multi-host test's worker.

Imported by steps_test.py / parallel_test.py for `TinySeq2Seq` (same call signature
as models.transformer.Transformer) and run as a script by parallel_test.py:

  python tests/train/multihost_worker.py --process_id=0 --num_processes=2 --port=P --out=F

Each worker joins a 2-process CPU cluster (2 devices each, gloo collectives, as in
TOOLCHAIN §12), feeds its own half of the global batch to both runners and saves
the metrics and parameters after two steps to `--out` (an .npz file). The parent
sets XLA_FLAGS=--xla_force_host_platform_device_count=2 in the worker's environment.
"""
import argparse
import os
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

if __name__ == '__main__':  # run as a script: the package is one folder up
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.train import optim
from transformer_jax.train import parallel
from transformer_jax.train import steps

NUM_STEPS = 2
GLOBAL_ROWS = 16


def optim_config(**overrides):
  """An optim config as experiments give it (attribute access only)."""
  fields = dict(schedule='constant', learning_rate=0.01, warmup_steps=0, b1=0.9,
                b2=0.98, eps=1e-9, weight_decay=0.0, grad_clip_norm=0.0,
                grad_accum_steps=1)
  fields.update(overrides)
  return types.SimpleNamespace(**fields)


def make_batch(rows=GLOBAL_ROWS, length=6, vocab_size=11, seed=0):
  """int32 `inputs`/`targets` `[rows, length]` with trailing padding (id 0)."""
  rng = np.random.default_rng(seed)
  batch = {}
  for key in ('inputs', 'targets'):
    tokens = rng.integers(1, vocab_size, size=(rows, length))
    lengths = rng.integers(1, length + 1, size=(rows, 1))
    batch[key] = np.where(np.arange(length) < lengths, tokens, 0).astype(np.int32)
  return batch


class TinySeq2Seq(nn.Module):
  """Embeddings -> mean-pooled source + shifted targets -> MLP -> logits."""
  vocab_size: int = 11
  dim: int = 8
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, inputs, targets, inputs_position=None,
               targets_position=None, inputs_segmentation=None,
               targets_segmentation=None, deterministic=True):
    embed = nn.Embed(self.vocab_size, self.dim)
    mask = (inputs > 0)[..., None].astype(jnp.float32)
    source = (embed(inputs) * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
    shifted = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))  # teacher forcing
    h = embed(shifted) + nn.Dense(self.dim)(source)[:, None]
    h = nn.tanh(nn.Dense(self.dim)(h))
    h = nn.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(self.vocab_size)(h)  # [batch, target_len, vocab]


def tiny_transformer():
  """The real encoder-decoder at toy size (same vocabulary as make_batch)."""
  return Transformer(TransformerConfig(vocab_size=11, model_dim=8, num_heads=2, mlp_dim=16,
                                       num_layers=1, dropout_rate=0.0, max_len=16))


def setup(model=None, tx_config=None, batch=None):
  """(model, host TrainState, learning_rate_fn, global batch) for the tests.

  The default model is a tiny real Transformer, so the equivalence tests exercise
  its masks, embeddings and attention under pmap/jit.
  """
  model = model or tiny_transformer()
  batch = make_batch() if batch is None else batch
  tx, learning_rate_fn = optim.make_optimizer(tx_config or optim_config(),
                                              model_dim=8, num_steps=10)
  state = steps.init_train_state(model, jax.random.PRNGKey(0), batch, tx)
  return model, state, learning_rate_fn, batch


def _run(parallelism, process_id, num_processes):
  """Two steps with this process's rows; returns arrays to save."""
  model, state, learning_rate_fn, batch = setup()
  rows = GLOBAL_ROWS // num_processes
  local = {k: v[process_id * rows:(process_id + 1) * rows] for k, v in batch.items()}
  runner = parallel.make_runner(parallelism, model=model, label_smoothing=0.1,
                                learning_rate_fn=learning_rate_fn)
  device_state = runner.put_state(state)
  device_batch = runner.put_batch(local)
  results = {}
  for step in range(NUM_STEPS):
    device_state, metrics = runner.train_step(device_state, device_batch)
    for name, value in jax.device_get(metrics).items():
      results[f'{parallelism}/step{step}/{name}'] = np.asarray(value)
  leaves = jax.tree_util.tree_leaves(runner.get_state(device_state).params)
  for i, leaf in enumerate(leaves):
    results[f'{parallelism}/param{i}'] = np.asarray(leaf)
  return results


def main(argv):
  parser = argparse.ArgumentParser()
  parser.add_argument('--process_id', type=int, required=True)
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--port', type=int, required=True)
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  # The parent sets XLA_FLAGS (2 devices per process); gloo must be chosen
  # before the first device is touched.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{args.port}',
                             num_processes=args.num_processes,
                             process_id=args.process_id)
  results = {'process_count': np.asarray(jax.process_count()),
             'device_count': np.asarray(jax.device_count())}
  for parallelism in ('pmap', 'jit'):
    results.update(_run(parallelism, args.process_id, args.num_processes))
  np.savez(args.out, **results)
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv[1:])
