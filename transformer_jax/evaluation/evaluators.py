"""Evaluation on a split: teacher-forced loss, perplexity and token accuracy, and (when
`eval.bleu`) decoding with sacreBLEU, `bleu_tok_lc` and exact match. Used by the
training loop and by `--mode=eval`.

Metric names, the same in metrics.jsonl, TensorBoard (`<split>/<name>`), the console and the
eval JSON: `loss` (with label smoothing), `nll`, `perplexity` (exp of nll), `accuracy` (per
target token), `sacrebleu` (cased sacreBLEU), `bleu_tok_lc` (lowercased, Moses-tokenized),
`exact_match`, `num_truncated`, and `sentences_scored` of `sentences_in_split`: below it when
`eval.max_batches` stops early, which a warning then says (once per Evaluator).

Examples longer than the model reads (`max_input_len`: max_len for a table of positions)
are cut to it, with a warning, and every result says how many in `num_truncated`, so it is
never silently computed on another set than the one named.

A family may add metrics of its own (`Family.extra_metrics`, e.g. word2vec's SimLex-999
correlation), called after the loss metrics.

With a writer (the training loop's), the first `eval.tensorboard_examples` examples of the split
go to TensorBoard's text tab at each evaluation: source, reference and hypothesis (decoded for
them alone when `eval.bleu` is off), so one can watch the same sentences improve.
"""
import functools
from typing import Dict, List, Tuple

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from transformer_jax import data
from transformer_jax.decoding import predict
from transformer_jax.evaluation import bleu
from transformer_jax.evaluation import console
from transformer_jax.evaluation import metric_sums


class Evaluator:
  """Holds the padded batches of one split and evaluates params on them."""

  def __init__(self, config, workdir: str, parts, split: str = None):
    self.config = config
    self.workdir = workdir
    self.parts = parts
    self.split = split or config.eval.split
    self._data = None
    self._warned_partial = False
    self.last_signatures = {}     # {'sacrebleu': ..., 'bleu_tok_lc': ...} of the last decoding
    self.predict_fn = functools.partial(
        predict.predict_step, model=parts.model,
        settings=predict.SearchSettings.from_config(config.decode),
        eos_id=parts.tokenizer.eos_id)

  @property
  def eval_data(self):
    if self._data is None:     # built on first use: a run without eval never pays for it
      rows = self.config.data.get('eval_rows_per_batch', 0) or None
      limit = self.parts.model_config.max_input_len
      self._data = data.make_eval_batches(
          self.config.data, self.parts.tokenizer, self.split, workdir=self.workdir,
          batch_multiple=jax.device_count(), process_index=jax.process_index(),
          process_count=jax.process_count(), rows_per_batch=rows, max_input_len=limit)
      if self._data.num_truncated:
        logging.warning('%d examples of split %r are longer than the %d tokens the model '
                        'reads (its max_len): they are evaluated cut to it (num_truncated)',
                        self._data.num_truncated, self.split, limit)
    return self._data

  def batches(self):
    batches = self.eval_data.batches
    limit = self.config.eval.max_batches
    return batches[:limit] if limit else batches

  def coverage(self) -> Tuple[int, int]:
    """(examples scored, examples in the split): `eval.max_batches` may stop before the end.

    Examples are sentences (pairs) for translation, LMs and classifiers, and word-pair rows for
    word2vec. Batches hold consecutive examples, pad rows only at the end of the last one.
    """
    total = self.eval_data.num_examples
    batches = self.eval_data.batches
    limit = self.config.eval.max_batches
    if not limit or limit >= len(batches):
      return total, total
    rows = len(next(iter(batches[0].values()))) * jax.process_count()   # global rows per batch
    return min(total, limit * rows), total

  def loss_metrics(self, params) -> Dict[str, float]:
    """Token-level loss/nll/accuracy over the split (sums reduced on the host)."""
    runner = self.parts.runner
    pending = [runner.eval_step(params, runner.put_batch(b)) for b in self.batches()]
    sums = metric_sums.sum_device_metrics(pending)
    sums.pop('num_steps')                       # batches, not steps: nothing to average by it
    out = metric_sums.reduce_sums(sums)
    out.pop('tokens', None)
    return out

  def translate(self, params, max_examples: int = 0) -> List[str]:
    """Decoded outputs for the split's sources, in order (only real examples); with
    `max_examples`, only the batches that hold the first that many are decoded."""
    runner = self.parts.runner
    hypotheses = []
    for batch in self.batches():
      if max_examples and len(hypotheses) >= max_examples:
        break
      ids = runner.run_replicated(self.predict_fn, params, runner.put_batch({'inputs': batch['inputs']}))
      if jax.process_count() > 1:
        ids = multihost_utils.process_allgather(ids, tiled=True)
      hypotheses.extend(self.parts.tokenizer.decode_batch(np.asarray(ids)))
    return hypotheses[:min(self.eval_data.num_examples, max_examples or len(hypotheses))]

  def bleu_metrics(self, hypotheses: List[str]) -> Dict[str, float]:
    references = self.eval_data.references[:len(hypotheses)]
    score, signature = bleu.sacre_bleu(hypotheses, references)
    score_lc, signature_lc = bleu.bleu_tok_lc_scored(hypotheses, references, lang=self.target_lang)
    self.last_signatures = {'sacrebleu': signature, 'bleu_tok_lc': signature_lc}
    logging.info('sacrebleu signature: %s; bleu_tok_lc signature: %s', signature, signature_lc)
    return {'sacrebleu': score, 'bleu_tok_lc': score_lc,
            'exact_match': float(np.mean([h == r for h, r in zip(hypotheses, references)]))}

  @property
  def target_lang(self) -> str:
    return self.config.data.get('target_lang', 'en')

  def evaluate(self, params, step: int, writer=None, *, with_bleu=None) -> Dict[str, float]:
    """Loss metrics, plus decoding metrics when `eval.bleu` (or `with_bleu`) is set,
    `num_truncated` (examples of the split cut to the model's max_input_len), and
    `sentences_scored` / `sentences_in_split` (see `coverage`)."""
    metrics = self.loss_metrics(params)
    metrics['num_truncated'] = self.eval_data.num_truncated
    scored, total = self.coverage()
    metrics.update(sentences_scored=scored, sentences_in_split=total)
    if scored < total and not self._warned_partial:
      logging.warning('partial evaluation: %d of the %d examples of split %r are scored '
                      '(eval.max_batches=%d); set %s for all', scored, total, self.split,
                      self.config.eval.max_batches, console.setting('eval.max_batches', 0))
      self._warned_partial = True
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
      self._write_examples(params, step, writer, decoded=with_bleu)
    logging.info('eval %s at step %d: %s', self.split, step,
                 '  '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items())))
    return metrics

  def _write_examples(self, params, step: int, writer, *, decoded: bool) -> None:
    """The first eval.tensorboard_examples examples, with their translations, to TensorBoard."""
    count = self.config.eval.get('tensorboard_examples', 0)
    if not count or not self.parts.family.decodes:
      return
    hypotheses = (self.last_hypotheses[:count] if decoded
                  else self.translate(params, max_examples=count))
    data = self.eval_data
    writer.write_examples(step, self.split, data.sources[:len(hypotheses)],
                          data.references[:len(hypotheses)], hypotheses)
