"""What launch.py can do with an experiment: train, evaluate, translate, sample (an LM),
export (a self-contained folder for transformer_jax.load_pretrained)."""
import dataclasses
import functools
import hashlib
import itertools
import json
import os
import sys
from typing import List, Optional

import jax
from absl import logging

from transformer_jax.analysis import attention_stats
from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.data import batching
from transformer_jax.data import raw_text
from transformer_jax.decoding import generate
from transformer_jax.decoding import predict
from transformer_jax.evaluation import bleu
from transformer_jax.evaluation import console
from transformer_jax.evaluation import evaluators as evaluation
from transformer_jax.models import summary
from transformer_jax.pretrained import export as export_lib
from transformer_jax.pretrained import provenance
from transformer_jax.pretrained import restored
from transformer_jax.train import components
from transformer_jax.train import metrics_writer
from transformer_jax.train import trainer


def train(config, workdir: str):
  return trainer.train_and_evaluate(config, workdir)


def evaluate(config, workdir: str, step=None):
  """Metrics of a (possibly averaged) checkpoint on `eval.split`, written under <workdir>/eval/.

  `step`: a saved step, None for the newest, or restored.BEST_STEP ('best', see resolve_step). Files:
  <stem>.json, and for a decoding model <stem>.{hyp.txt,ref.txt,by_length.md,by_length.png},
  where stem is `<split>_step<N>_avg<K>[_<decoding>][_partial<scored>of<total>]_<digest>`,
  e.g. `validation_step4_avg1_greedy_partial10of1014_3f2a9c01` when eval.max_batches stops
  early. The digest stands for every setting that may change the result (output_settings),
  so an evaluation with other settings adds files and the same settings again rewrite them.

  The JSON is strict (no NaN/Infinity: a non-finite number is null, with `<key>_null_reason`
  beside it). Keys, named as in metrics.jsonl, TensorBoard and the console:
    loss, nll, perplexity, accuracy   teacher-forced, per target token (loss with label smoothing)
    sacrebleu, sacrebleu_signature    cased sacreBLEU of detokenized text, and its signature
    bleu_tok_lc, bleu_tok_lc_signature  lowercased Moses-tokenized BLEU (bleu.bleu_tok_lc_scored)
    exact_match                       share of hypotheses equal to their reference
    sentences_scored, sentences_in_split, partial   coverage of the split (eval.max_batches)
    num_truncated                     examples cut to the model's max_input_len
    split, step, checkpoints, checkpoints_averaged  the steps whose params were averaged
    checkpoint_choice                 'latest', 'step' or 'best' (then best_metric, best_mode,
                                      best_metric_value: the validation value it was kept by)
    decoding                          method, max_extra_len, and beam_size/alpha (beam) or
                                      temperature/top_k/top_p/seed (sample)
    num_params, bleu_by_source_length (rows: bucket, count, bleu_tok_lc, sacrebleu)
    settings, settings_digest         output_settings and the digest in the file name
  Returns the record as written.
  """
  console.show_info()
  restored.check_run(config, workdir)
  step, choice = restored.resolve_step(config, workdir, step)
  attention_stats.requested(config)      # a family it cannot measure fails before any work
  parts = components.build(config, workdir)
  params, step, chosen = restored.restore_params(config, workdir, parts, step)
  evaluator = evaluation.Evaluator(config, workdir, parts)
  metrics = evaluator.evaluate(parts.runner.put_state(params), step, with_bleu=True)
  metrics.update(attention_stats.eval_metrics(config, parts, params, evaluator.batches()))
  metrics['checkpoints'] = chosen
  metrics['num_params'] = summary.count_params(params)
  metrics.update(_provenance(config, evaluator, chosen, choice, parts.family.decodes))
  settings = output_settings(config, parts.family.decodes)
  metrics['settings'], metrics['settings_digest'] = settings, settings_digest(settings)
  out_dir = os.path.join(workdir, 'eval')
  os.makedirs(out_dir, exist_ok=True)
  stem = os.path.join(out_dir, eval_stem(config, evaluator.split, step, len(chosen),
                                         parts.family.decodes, metrics))
  if parts.family.decodes:
    metrics['bleu_by_source_length'] = _write_hypotheses(evaluator, config, stem)
  record = metrics_writer.strict_json_tree(metrics)
  with open(stem + '.json', 'w') as f:
    json.dump(record, f, indent=2, allow_nan=False)    # a NaN that slipped through fails here
  logging.info('wrote %s.*', stem)
  return record


def eval_stem(config, split: str, step: int, averaged: int, decodes: bool, metrics) -> str:
  """The file name stem of an evaluation (see `evaluate`): readable parts, then the digest of
  `metrics['settings']`, so that no other settings ever write the same files."""
  stem = f'{split}_step{step}_avg{averaged}'
  if decodes:
    stem += '_' + decode_tag(config.decode)
  if metrics['partial']:
    stem += f"_partial{metrics['sentences_scored']}of{metrics['sentences_in_split']}"
  return f"{stem}_{metrics['settings_digest']}"


# Settings of the sections output_settings reads that leave the result as it is: eval.bleu
# switches decoding in the periodic evaluation only (--mode=eval always decodes),
# decode.cache_stages changes how the decoding cache grows, not what is decoded, and
# decode.nbest is how many hypotheses --mode=translate prints (evaluation scores the best).
SAME_OUTPUT = ('eval.bleu', 'eval.tensorboard_examples', 'decode.cache_stages', 'decode.nbest')


def output_settings(config, decodes: bool) -> dict:
  """{'section.field': value} of every setting that may change what --mode=eval writes for a
  checkpoint: eval.* (split, max_batches, average_last, attention_stats, ...) and, for a
  decoding model, the search's settings (decoding_settings: the method's own and
  max_extra_len; greedy ignores beam_size, for one) with any decode.* field the search does not
  know, less SAME_OUTPUT. The run's pinned settings (model, data, ...) cannot change after
  training, so they are left out."""
  settings = {f'eval.{name}': value for name, value in workdir_lib.as_json(config.eval).items()}
  if decodes:
    search = {field.name for field in dataclasses.fields(predict.SearchSettings)}
    settings.update({f'decode.{name}': value
                     for name, value in decoding_settings(config.decode).items()})
    settings.update({f'decode.{name}': value
                     for name, value in workdir_lib.as_json(config.decode).items()
                     if name not in search})
  return {key: settings[key] for key in sorted(settings) if key not in SAME_OUTPUT}


def settings_digest(settings: dict) -> str:
  """8 hex digits of the SHA-256 of `settings` as canonical JSON (sorted keys)."""
  text = json.dumps(settings, sort_keys=True, separators=(',', ':'), allow_nan=True)
  return hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]


def _provenance(config, evaluator, chosen: List[int], choice: dict, decoded: bool) -> dict:
  """What an eval JSON's numbers are of: split, checkpoints, coverage, decoding, signatures."""
  scored, total = evaluator.coverage()
  out = {'split': evaluator.split, 'step': chosen[-1], **choice,
         'checkpoints_averaged': len(chosen), 'partial': scored < total}
  if decoded:
    out['decoding'] = decoding_settings(config.decode)
    out.update({f'{name}_signature': text for name, text in evaluator.last_signatures.items()})
  return out


def decoding_settings(decode_config) -> dict:
  """The search settings that shaped the hypotheses: the method's own and max_extra_len."""
  settings = dataclasses.asdict(predict.SearchSettings.from_config(decode_config))
  own = {'greedy': (), 'beam': ('beam_size', 'alpha'),
         'sample': ('temperature', 'top_k', 'top_p', 'seed')}[settings['method']]
  return {key: settings[key] for key in ('method', *own, 'max_extra_len')}


def decode_tag(decode_config) -> str:
  """The decoding settings in a file name, so scoring with other settings adds files."""
  if decode_config.method == 'beam':
    return f'beam{decode_config.beam_size}_alpha{decode_config.alpha:g}'
  if decode_config.method == 'sample':
    return (f'sample_t{decode_config.temperature:g}_k{decode_config.top_k}'
            f'_p{decode_config.top_p:g}')
  return decode_config.method


def _write_hypotheses(evaluator, config, stem: str):
  """<stem>.{hyp.txt,ref.txt,by_length.md,by_length.png}; returns the BLEU-by-length rows."""
  count = len(evaluator.last_hypotheses)     # eval.max_batches may stop early
  for suffix, lines in (('hyp', evaluator.last_hypotheses),
                        ('ref', evaluator.eval_data.references[:count])):
    with open(f'{stem}.{suffix}.txt', 'w', encoding='utf-8') as f:   # aligned, for paired tests
      f.writelines(line + '\n' for line in lines)
  rows = bleu.bleu_by_length(evaluator.eval_data.sources[:count], evaluator.last_hypotheses,
                             evaluator.eval_data.references[:count], lang=evaluator.target_lang)
  with open(stem + '.by_length.md', 'w') as f:
    f.write(bleu.format_table(rows) + '\n')
  bleu.plot_bleu_by_length({config.data.dataset: rows}, stem + '.by_length.png')
  logging.info('BLEU by source length:\n%s', bleu.format_table(rows))
  empty = {f'{name}_null_reason': 'no sentence in this bucket'
           for name in ('bleu_tok_lc', 'sacrebleu')}
  return [row if row['count'] else {**row, **empty} for row in rows]   # their NaN becomes null


# Without a new stdin line for this long (seconds), translate waits no more to fill a group.
STREAM_WAIT_S = 0.2


def translate(config, workdir: str, step: Optional[int] = None, input_path: str = '-',
              buffer_lines: int = 16):
  """Source sentences (one a line, stdin or a file) -> translations on stdout, in order.

  A file (or stdin redirected from one) is read whole and batched by length. A pipe or
  terminal is translated as it arrives, like fairseq-interactive's --buffer-size: groups of
  up to `buffer_lines` lines, a group closed early after STREAM_WAIT_S seconds without a new
  line, each group's translations printed (and flushed) as soon as it is done. Every group
  is padded to the same rows, so the model compiles once per bucket length, not per group.

  A line longer than a position table (model.max_len tokens, EOS included) is cut to it,
  with one warning naming the lines; the other lines translate as they would without it.

  Each input's translation is one line. With decode.nbest=k > 1 (a beam search, k at most
  decode.beam_size; what fairseq-generate --nbest gives) each input has k lines instead, best
  first (fewer where the search finds fewer hypotheses), tab-separated:
    <input index>\t<rank>\t<score>\t<translation>
  The index counts the input lines from 0, the rank from 1 (the best), and the score is the
  translation's log-probability under the model divided by the beam's length penalty
  ((5 + |Y|) / 6) ** alpha, |Y| its tokens with the EOS (predict.nbest_step), to 6 decimals.
  Returns the lines printed.
  """
  console.show_info()
  if jax.process_count() > 1:
    raise UserError('--mode=translate runs in one process: drop --multihost')
  restored.check_run(config, workdir)
  groups, streamed = _input_groups(input_path, buffer_lines)
  if streamed:
    logging.info('reading source sentences from stdin, one a line (translated in groups of up '
                 'to %d; end the input with Ctrl-D)', buffer_lines)
  first = next(groups, None)
  if first is None:
    return []
  parts = components.build(config, workdir)
  parts.tokenizer.encode(first)   # input it refuses (text for a copy task) fails before the restore
  params, step, chosen = restored.restore_params(config, workdir, parts, step)
  logging.info('translating %s with checkpoint(s) %s', f'stdin in groups of up to '
               f'{buffer_lines} lines' if streamed else f'{len(first)} sentences', chosen)
  predict_fn = _translate_fn(config, workdir, parts)
  params = parts.runner.put_state(params)
  limit = parts.model_config.max_input_len
  rows = _stream_rows(config.data, buffer_lines, jax.device_count(), limit) if streamed else None
  outputs, done = [], 0
  for group in itertools.chain([first], groups):
    lines = _translation_lines(parts, params, group, predict_fn, config, rows=rows, done=done)
    sys.stdout.write(''.join(line + '\n' for line in lines))
    sys.stdout.flush()
    outputs.extend(lines)
    done += len(group)
  return outputs


def _translate_fn(config, workdir: str, parts):
  """The bound predict step of --mode=translate: the evaluation's, or with decode.nbest > 1 a
  beam search's n best with their scores."""
  nbest = config.decode.get('nbest', 1)
  if nbest == 1:
    return evaluation.Evaluator(config, workdir, parts).predict_fn
  return functools.partial(predict.nbest_step, model=parts.model, nbest=nbest,
                           settings=predict.SearchSettings.from_config(config.decode),
                           eos_id=parts.tokenizer.eos_id)


def _translation_lines(parts, params, group: List[str], predict_fn, config, *,
                       rows: Optional[int], done: int) -> List[str]:
  """The lines `translate` prints for `group`, `done` input lines having come before it."""
  if config.decode.get('nbest', 1) == 1:
    return predict.translate_texts(parts, params, group, predict_fn, config.data, rows=rows,
                                   first_line=done + 1)
  ranked = predict.translate_nbest(parts, params, group, predict_fn, config.data, rows=rows,
                                   first_line=done + 1)
  return [f'{done + index}\t{rank}\t{score:.6f}\t{text}'
          for index, hypotheses in enumerate(ranked)
          for rank, (text, score) in enumerate(hypotheses, start=1)]


def _input_groups(input_path: str, buffer_lines: int):
  """(iterator over groups of input lines, whether they stream from a pipe or terminal)."""
  if input_path == '-':
    raw_text.check_stdin_open()
  stdin = getattr(sys.stdin, 'buffer', sys.stdin)
  if input_path != '-' or raw_text.is_regular_file(stdin):
    lines = raw_text.read_input_lines(input_path)
    return iter([lines] if lines else []), False
  return raw_text.line_groups(stdin, buffer_lines, STREAM_WAIT_S, '<stdin>', raw_text.INPUT_FIX), True


def _stream_rows(data_config, buffer_lines: int, batch_multiple: int, limit: Optional[int]):
  """Rows of every streamed batch: a group's lines (a multiple of the devices), at most the
  token budget's rows at the longest bucket, so a group never needs more memory than that."""
  top = batching.eval_layout(data_config.bucket_lengths, data_config.max_len, 1,
                             data_config.tokens_per_batch, batch_multiple, limit=limit)[0][-1]
  budget_rows = batching.eval_layout(data_config.bucket_lengths, data_config.max_len, top,
                                     data_config.tokens_per_batch, batch_multiple, limit=limit)[1]
  return min(-(-buffer_lines // batch_multiple) * batch_multiple, budget_rows)


def sample(config, workdir: str, step: Optional[int] = None, input_path: Optional[str] = None):
  """LM samples on stdout: `decode.num_samples` of them, or with `input_path` (a file, or -
  for stdin) one continuation per line, each starting with its prompt."""
  console.show_info()
  if jax.process_count() > 1:
    raise UserError('--mode=sample runs in one process: drop --multihost')
  family = components.family_of(config)
  if not family.samples:
    raise UserError(f'--mode=sample needs a language model, not model.family={family.name!r}: '
                    'use --mode=translate, or an LM experiment (experiments/multi30k_lm.py)')
  restored.check_run(config, workdir)
  lines = (raw_text.read_input_lines(input_path) if input_path is not None
           else [''] * config.decode.get('num_samples', 8))
  parts = components.build(config, workdir)
  params, step, chosen = restored.restore_params(config, workdir, parts, step)
  logging.info('%d samples with checkpoint(s) %s', len(lines), chosen)
  texts = generate.generate_texts(parts, parts.runner.put_state(params), lines,
                                  predict.SearchSettings.from_config(config.decode))
  for text in texts:
    print(text, flush=True)
  return texts


def export(config, workdir: str, export_dir: Optional[str] = None, step=None) -> str:
  """Writes the run's (averaged) params, model config, tokenizer and decode settings to
  `export_dir` (default <workdir>/export), for `transformer_jax.load_pretrained`.

  The params are those --mode=eval scores: `step` (None for the newest, or BEST_STEP) and the
  eval.average_last steps before it; model.json and the model card record how the run measured
  exactly those (provenance.run_metrics). A folder that holds anything is refused, never
  overwritten. Returns the export folder. Its layout: pretrained/layout.py.
  """
  console.show_info()
  if jax.process_count() > 1:
    raise UserError('--mode=export runs in one process: drop --multihost')
  export_dir = export_dir or os.path.join(workdir, 'export')
  export_lib.check_exportable(components.family_of(config))
  export_lib.check_export_dir(export_dir)
  restored.check_run(config, workdir)
  parts = components.build(config, workdir)
  export_lib.tokenizer_record(parts.tokenizer)       # one it cannot carry fails before the restore
  params, step, chosen = restored.restore_params(config, workdir, parts, step)
  export_lib.write(export_dir, parts, params, config,
                   {'workdir': os.path.abspath(workdir), 'step': step, 'steps_averaged': chosen,
                    'average_last': config.eval.average_last},
                   metrics=provenance.run_metrics(workdir, chosen))
  logging.info('exported checkpoint(s) %s of %s to %s', chosen, workdir, export_dir)
  return export_dir
