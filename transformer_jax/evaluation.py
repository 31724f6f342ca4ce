"""Evaluation on a split: teacher-forced loss, perplexity and token accuracy, and (when
`eval.bleu`) decoding with sacreBLEU, `bleu_tok_lc` and exact match. Used by the
training loop and by `--mode=eval`.

A family may add metrics of its own (`Family.extra_metrics`, e.g. word2vec's SimLex-999
correlation), called after the loss metrics.
"""
import functools
from typing import Dict, List

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from transformer_jax import bleu
from transformer_jax import data
from transformer_jax import metrics_writer
from transformer_jax import predict


class Evaluator:
  """Holds the padded batches of one split and evaluates params on them."""

  def __init__(self, config, workdir: str, parts, split: str = None):
    self.config = config
    self.workdir = workdir
    self.parts = parts
    self.split = split or config.eval.split
    self._data = None
    self.predict_fn = functools.partial(
        predict.predict_step, model=parts.model,
        settings=predict.SearchSettings.from_config(config.decode),
        eos_id=parts.tokenizer.eos_id)

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
    sums = metrics_writer.sum_device_metrics(pending)
    sums.pop('num_steps')                       # batches, not steps: nothing to average by it
    out = metrics_writer.reduce_sums(sums)
    out.pop('tokens', None)
    return out

  def translate(self, params) -> List[str]:
    """Decoded outputs for the split's sources, in order (only real examples)."""
    runner = self.parts.runner
    hypotheses = []
    for batch in self.batches():
      ids = runner.run_replicated(self.predict_fn, params, runner.put_batch({'inputs': batch['inputs']}))
      if jax.process_count() > 1:
        ids = multihost_utils.process_allgather(ids, tiled=True)
      hypotheses.extend(self.parts.tokenizer.decode_batch(np.asarray(ids)))
    return hypotheses[:self.eval_data.num_examples]

  def bleu_metrics(self, hypotheses: List[str]) -> Dict[str, float]:
    references = self.eval_data.references[:len(hypotheses)]
    score, signature = bleu.sacre_bleu(hypotheses, references)
    logging.info('sacreBLEU signature: %s', signature)
    return {'bleu': score,
            'bleu_tok_lc': bleu.bleu_tok_lc(hypotheses, references, lang=self.target_lang),
            'exact_match': float(np.mean([h == r for h, r in zip(hypotheses, references)]))}

  @property
  def target_lang(self) -> str:
    return self.config.data.get('target_lang', 'en')

  def evaluate(self, params, step: int, writer=None, *, with_bleu=None) -> Dict[str, float]:
    """Loss metrics, plus decoding metrics when `eval.bleu` (or `with_bleu`) is set."""
    metrics = self.loss_metrics(params)
    extra = self.parts.family.extra_metrics_fn()
    if extra:
      metrics.update(extra(self, params, step))
    with_bleu = self.config.eval.bleu if with_bleu is None else with_bleu
    if with_bleu and self.parts.family.decodes:
      self.last_hypotheses = self.translate(params)
      metrics.update(self.bleu_metrics(self.last_hypotheses))
    if writer is not None:
      metrics['minutes'] = writer.elapsed_minutes()
      writer.write(step, self.split, metrics)
    logging.info('eval %s at step %d: %s', self.split, step,
                 '  '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items())))
    return metrics
