"""Metric sums over steps and devices, and the means they turn into (loss, nll, accuracy per
token; norms and learning rate per step). Training and evaluation both reduce through here."""
import math
from typing import Any, Dict, List

import jax
import numpy as np


def sum_device_metrics(pending: List[Dict[str, Any]]) -> Dict[str, float]:
  """Adds up metric dicts still on device (one host transfer for all); `num_steps` counts them."""
  host = jax.device_get(pending)
  sums = {k: float(sum(np.asarray(m[k]).sum() for m in host)) for k in host[0]}
  sums['num_steps'] = float(len(host))
  return sums


def reduce_sums(sums: Dict[str, float]) -> Dict[str, float]:
  """Turn metric sums plus `weight` into means; per-step values (norms, lr) are averaged by count.

  Args:
    sums: `loss`, `nll`, `accuracy`, `weight` summed over steps; `grad_norm`,
      `param_norm`, `learning_rate` summed too, with `num_steps` the count.
  """
  weight = max(sums.get('weight', 0.0), 1e-9)
  out = {}
  for name in ('loss', 'nll', 'accuracy'):
    if name in sums:
      out[name] = sums[name] / weight
  if 'nll' in out:
    out['perplexity'] = math.exp(min(out['nll'], 50.0))
  steps = max(sums.get('num_steps', 1.0), 1.0)
  for name in ('grad_norm', 'param_norm', 'learning_rate'):
    if name in sums:
      out[name] = sums[name] / steps
  out['tokens'] = sums.get('weight', 0.0)
  return out
