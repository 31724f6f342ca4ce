"""What launch.py can do with an experiment: train, evaluate, translate, sample (an LM)."""
import json
import os
import sys
from typing import List, Optional

import jax
import numpy as np
from absl import logging

from transformer_jax import bleu
from transformer_jax import checkpoint
from transformer_jax import components
from transformer_jax import evaluation
from transformer_jax import generate
from transformer_jax import predict
from transformer_jax import trainer
from transformer_jax.data import batching
from transformer_jax import workdir as workdir_lib
from transformer_jax.errors import UserError


def train(config, workdir: str):
  return trainer.train_and_evaluate(config, workdir)


def restore_params(config, workdir: str, parts, step: Optional[int]):
  """Params of checkpoint `step` (latest if None), averaged over the last `eval.average_last`."""
  workdir_lib.load_config(workdir)           # a run must exist here ...
  workdir_lib.check_config(workdir, config)  # ... made with these pinned settings
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=None, async_save=False)
  available = ckpt.all_steps()
  if not available:
    raise UserError(f'no checkpoint in {workdir}: train first, or point --workdir at a run')
  step = step if step is not None else available[-1]
  # Shapes are all a restore needs: no random initialisation just to be overwritten.
  template = jax.eval_shape(lambda: components.init_state(parts, config.train.seed))
  k = max(1, config.eval.average_last)
  chosen = [s for s in available if s <= step][-k:]
  if len(chosen) > 1:
    logging.info('averaging the params of checkpoints %s', chosen)
    params = checkpoint.average_params(ckpt, chosen, template.params)
  else:
    params = ckpt.restore(template, step)[0].params
  ckpt.close()
  return params, step, chosen


def evaluate(config, workdir: str, step: Optional[int] = None):
  """Metrics of a (possibly averaged) checkpoint on `eval.split`, written under <workdir>/eval/."""
  parts = components.build(config, workdir)
  params, step, chosen = restore_params(config, workdir, parts, step)
  evaluator = evaluation.Evaluator(config, workdir, parts)
  metrics = evaluator.evaluate(parts.runner.put_state(params), step, with_bleu=True)
  metrics['checkpoints'] = chosen
  out_dir = os.path.join(workdir, 'eval')
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, f'{evaluator.split}_step{step}_avg{len(chosen)}')
  if parts.family.decodes:
    stem += '_' + decode_tag(config.decode)
    metrics['bleu_by_source_length'] = _write_hypotheses(evaluator, config, stem)
  with open(stem + '.json', 'w') as f:
    json.dump(metrics, f, indent=2)
  logging.info('wrote %s.*', stem)
  return metrics


def decode_tag(decode_config) -> str:
  """The decoding settings in a file name, so scoring with other settings adds files."""
  if decode_config.method == 'beam':
    return f'beam{decode_config.beam_size}_alpha{decode_config.alpha:g}'
  if decode_config.method == 'sample':
    return (f'sample_t{decode_config.temperature:g}_k{decode_config.top_k}'
            f'_p{decode_config.top_p:g}')
  return decode_config.method


def _write_hypotheses(evaluator, config, stem: str):
  """<stem>.{hyp.txt,by_length.md,by_length.png}; returns the BLEU-by-length rows."""
  with open(stem + '.hyp.txt', 'w', encoding='utf-8') as f:
    f.writelines(h + '\n' for h in evaluator.last_hypotheses)
  count = len(evaluator.last_hypotheses)     # eval.max_batches may stop early
  rows = bleu.bleu_by_length(evaluator.eval_data.sources[:count], evaluator.last_hypotheses,
                             evaluator.eval_data.references[:count], lang=evaluator.target_lang)
  with open(stem + '.by_length.md', 'w') as f:
    f.write(bleu.format_table(rows) + '\n')
  bleu.plot_bleu_by_length({config.data.dataset: rows}, stem + '.by_length.png')
  logging.info('BLEU by source length:\n%s', bleu.format_table(rows))
  return rows


def _source_batches(tokenizer, lines: List[str], data_config, batch_multiple: int):
  """(batch, row order) pairs: sources sorted by length, padded to bucket lengths, one row count."""
  ids = tokenizer.encode(lines)
  order = np.argsort([len(x) for x in ids], kind='stable')
  buckets, rows = batching.eval_layout(data_config.bucket_lengths, data_config.max_len,
                                       max(len(x) for x in ids), data_config.tokens_per_batch,
                                       batch_multiple)
  for start in range(0, len(order), rows):
    chosen = order[start:start + rows]
    length = buckets[batching.bucket_ids(max(len(ids[i]) for i in chosen), buckets)]
    sources = [np.asarray(ids[i]) for i in chosen]
    yield batching.pad_batch(sources, sources, rows, length), chosen


def translate(config, workdir: str, step: Optional[int] = None, input_path: str = '-'):
  """Source sentences (one a line, stdin or a file) -> translations on stdout, in order."""
  if jax.process_count() > 1:
    raise UserError('--mode=translate runs in one process: drop --multihost')
  lines = _read_lines(input_path)
  if not lines:
    return []
  parts = components.build(config, workdir)
  params, step, chosen = restore_params(config, workdir, parts, step)
  logging.info('translating %d sentences with checkpoint(s) %s', len(lines), chosen)
  evaluator = evaluation.Evaluator(config, workdir, parts)
  params = parts.runner.put_state(params)
  outputs = [''] * len(lines)
  for batch, rows in _source_batches(parts.tokenizer, lines, config.data, jax.device_count()):
    ids = parts.runner.run_replicated(evaluator.predict_fn, params,
                                      parts.runner.put_batch({'inputs': batch['inputs']}))
    for row, text in zip(rows, parts.tokenizer.decode_batch(np.asarray(ids))):
      outputs[row] = text
  for text in outputs:
    print(text, flush=True)
  return outputs


def sample(config, workdir: str, step: Optional[int] = None, input_path: Optional[str] = None):
  """LM samples on stdout: `decode.num_samples` of them, or with `input_path` (a file, or -
  for stdin) one continuation per line, each starting with its prompt."""
  if jax.process_count() > 1:
    raise UserError('--mode=sample runs in one process: drop --multihost')
  family = components.family_of(config)
  if not family.samples:
    raise UserError(f'--mode=sample needs a language model, not model.family={family.name!r}: '
                    'use --mode=translate, or an LM experiment (experiments/multi30k_lm.py)')
  lines = (_read_lines(input_path) if input_path is not None
           else [''] * config.decode.get('num_samples', 8))
  parts = components.build(config, workdir)
  params, step, chosen = restore_params(config, workdir, parts, step)
  logging.info('%d samples with checkpoint(s) %s', len(lines), chosen)
  texts = generate.generate_texts(parts, parts.runner.put_state(params), lines,
                                  predict.SearchSettings.from_config(config.decode))
  for text in texts:
    print(text, flush=True)
  return texts


def _read_lines(input_path: str) -> List[str]:
  if input_path == '-':
    return [line.rstrip('\n') for line in sys.stdin]
  if not os.path.exists(input_path):
    raise UserError(f'--input file {input_path} does not exist: give a file of source sentences '
                    'or - for stdin')
  with open(input_path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]
