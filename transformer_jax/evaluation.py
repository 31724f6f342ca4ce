"""Evaluation on a split: teacher-forced loss, perplexity and token accuracy, and (when
`eval.bleu`) decoding with BLEU. Used by the training loop and by `--mode=eval`.
"""
from typing import Dict

import jax
import numpy as np

from transformer_jax import data
from transformer_jax import metrics_writer


class Evaluator:
  """Holds the padded batches of one split and evaluates params on them."""

  def __init__(self, config, workdir: str, parts, split: str = None):
    self.config = config
    self.workdir = workdir
    self.parts = parts
    self.split = split or config.eval.split
    self._data = None

  @property
  def eval_data(self):
    if self._data is None:     # built on first use: a run without eval never pays for it
      rows = self.config.data.get('eval_rows_per_batch', 0) or None
      self._data = data.make_eval_batches(
          self.config.data, self.parts.tokenizer, self.split, workdir=self.workdir,
          batch_multiple=jax.device_count(), process_index=jax.process_index(),
          process_count=jax.process_count(), rows_per_batch=rows)
    return self._data

  def batches(self):
    batches = self.eval_data.batches
    limit = self.config.eval.max_batches
    return batches[:limit] if limit else batches

  def loss_metrics(self, params) -> Dict[str, float]:
    """Token-level loss/nll/accuracy over the split (sums reduced on the host)."""
    runner = self.parts.runner
    pending = [runner.eval_step(params, runner.put_batch(b)) for b in self.batches()]
    host = jax.device_get(pending)
    sums = {k: float(sum(np.asarray(m[k]).sum() for m in host)) for k in host[0]}
    out = metrics_writer.reduce_sums(sums)
    out.pop('tokens', None)
    return out

  def evaluate(self, params, step: int, writer=None) -> Dict[str, float]:
    metrics = self.loss_metrics(params)
    if writer is not None:
      writer.write(step, self.split, metrics)
    from absl import logging
    logging.info('eval %s at step %d: %s', self.split, step,
                 '  '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items())))
    return metrics
