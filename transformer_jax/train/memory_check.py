"""A rough memory estimate of a training before anything is allocated, so a model or batch that
cannot fit is refused with one line instead of swapping for minutes or being killed.

Per device (pmap keeps a full replica on each): parameters, their gradients and the optimizer's
moments (Adam 2, Adagrad 1, SGD 0 per parameter), in 4-byte floats; activations of the batch's
share of tokens, about 20 values of model_dim per token and layer kept for the backward pass;
and the logits of one loss chunk (train.loss_chunk_tokens tokens, or the whole batch) in
float32. The parameter count comes from shapes (jax.eval_shape): nothing is allocated.

Available: on an accelerator, the device's memory limit; on the CPU, the host's available
memory (MemAvailable, or the cgroup's limit less its usage when lower) shared by its local
devices. A training whose estimate exceeds it is refused; `train.skip_memory_check=True`
trains anyway (the estimate is deliberately rough and errs high).
"""
import math
import os
from typing import Optional

import jax
import jax.numpy as jnp

from transformer_jax.base.errors import UserError

_FLOAT = 4
_ACTIVATION_VALUES = 20            # per token, layer and model_dim unit
_OPTIMIZER_MOMENTS = {'adam': 2, 'adagrad': 1, 'sgd': 0}
GIB = 2 ** 30


def count_params(model, family) -> int:
  """Parameters of `model` (a `family` model) initialised on its example batch, shapes only."""
  def init():
    batch = {key: jnp.ones((1, 8)[:rank], jnp.dtype(dtype))
             for key, rank, dtype in family.example_batch}
    return model.init({'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(1)},
                      **batch, deterministic=True)['params']
  shapes = jax.eval_shape(init)
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes)))


def estimate_bytes(num_params: int, config, model_config) -> int:
  """Bytes one device needs to train (see the module docstring)."""
  moments = _OPTIMIZER_MOMENTS.get(config.optim.get('optimizer', 'adam'), 2)
  state = num_params * _FLOAT * (2 + moments)                  # params, gradients, moments
  tokens = config.data.tokens_per_batch / max(1, jax.device_count())
  layers = (getattr(model_config, 'num_layers', 1) or 1) + \
      (getattr(model_config, 'decoder_layers', 0) or 0)
  width = getattr(model_config, 'model_dim', None) or getattr(model_config, 'hidden_dim', 0) or 0
  activations = tokens * layers * width * _ACTIVATION_VALUES * _FLOAT
  vocab = getattr(model_config, 'vocab_size', 0) or 0
  chunk = config.train.get('loss_chunk_tokens', 0) or tokens
  logits = min(chunk, tokens) * vocab * _FLOAT * 2              # values and their gradient
  return int(state + activations + logits)


def _host_available() -> Optional[int]:
  available = None
  try:
    with open('/proc/meminfo', encoding='ascii') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          available = int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    with open('/sys/fs/cgroup/memory.max', encoding='ascii') as f:
      limit = f.read().strip()
    with open('/sys/fs/cgroup/memory.current', encoding='ascii') as f:
      used = int(f.read().strip())
    if limit.isdigit():
      free = int(limit) - used
      available = free if available is None else min(available, free)
  except (OSError, ValueError):
    pass
  return available


def available_bytes() -> Optional[int]:
  """Memory one device may use, or None when it cannot be told."""
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    stats = getattr(device, 'memory_stats', lambda: None)() or {}
    return stats.get('bytes_limit')
  host = _host_available()
  return None if host is None else host // max(1, jax.local_device_count())


def check(num_params: int, config, model_config) -> None:
  """Raises UserError when the estimate exceeds what a device has (unless skipped)."""
  if config.train.get('skip_memory_check', False):
    return
  needed, available = estimate_bytes(num_params, config, model_config), available_bytes()
  if available is None or needed <= available:
    return
  raise UserError(f'this training needs about {needed / GIB:.1f} GiB per device '
                  f'({num_params:,} parameters with gradients and optimizer state, and the '
                  f'batch\'s activations) but {available / GIB:.1f} GiB is available: make the '
                  'model or data.tokens_per_batch smaller, use more devices, or give '
                  '--experiment.train.skip_memory_check=True to try anyway')


def check_model(config, model_config, family) -> None:
  """`check` with the parameter count of the family's model for `model_config`."""
  if not config.train.get('skip_memory_check', False):
    check(count_params(family.model_class()(model_config), family), config, model_config)
