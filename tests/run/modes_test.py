"""modes.py in-process on a two-step copy-task run whose model reads at most 12 tokens, while
its evaluation split holds sequences of up to 17: long inputs are cut to the model, never NaN.
Then what the eval JSON says (strict JSON, signatures, coverage, decoding settings), the file
names of evaluations with other settings, a partial evaluation, and train.keep_best with
--step=best on a four-step run with scripted losses."""
import glob
import json
import logging
import os

import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.decoding import predict
from transformer_jax.evaluation import evaluators as evaluation
from transformer_jax.experiments import copy_task
from transformer_jax.pretrained import restored
from transformer_jax.run import modes
from transformer_jax.sweep.reporting import records as records_lib
from transformer_jax.train import validation

MAX_LEN = 12


def smoke_config():
  config = copy_task.get_config('smoke')
  config.model.max_len = MAX_LEN
  config.data.max_len = MAX_LEN       # training drops the longer pairs; evaluation keeps them
  config.data.tokens_per_batch = 4096  # room for a 288-token bucket: the old code translated it
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """(workdir, the periodic evaluation's metrics at step 2)."""
  workdir = str(tmp_path_factory.mktemp('run'))
  return workdir, modes.train(smoke_config(), workdir)


def translate(workdir, tmp_path, lines):
  path = tmp_path / 'input.txt'
  path.write_text(''.join(line + '\n' for line in lines))
  return modes.translate(smoke_config(), workdir, input_path=str(path))


def test_a_long_line_is_cut_and_the_others_translate_as_without_it(trained, tmp_path, caplog):
  workdir, _ = trained
  short = ['5 6 7', '9 8', '4 4 5 6 7 8', '12 3 7 7 8 9 10 11', '3 5 3 5 3 5 3 5 3 5 3']
  alone = translate(workdir, tmp_path, short)
  with caplog.at_level(logging.WARNING):
    mixed = translate(workdir, tmp_path, short[:2] + [' '.join(['7'] * 287)] + short[2:])
  assert mixed[:2] + mixed[3:] == alone
  assert all(mixed), mixed                       # the batch of the long line is not blanked
  warnings = [r.getMessage() for r in caplog.records if 'were cut' in r.getMessage()]
  assert len(warnings) == 1 and '1 input line(s)' in warnings[0]
  assert f'max_len={MAX_LEN}' in warnings[0] and 'line(s) 3;' in warnings[0]


def test_a_5000_word_line_needs_no_larger_token_budget(caplog):
  """Defect 10: the layout used to ask for tokens_per_batch >= 40,064 for such a line."""
  config = copy_task.get_config('smoke')      # tokens_per_batch=256 over 8 devices
  lines = ['5 6 7', ' '.join(['9'] * 5000)]
  with caplog.at_level(logging.WARNING):
    batches = list(predict.source_batches(tokenizer_lib.IdentityTokenizer(32), lines,
                                          config.data, batch_multiple=8, limit=64))
  assert max(batch['inputs'].shape[1] for batch, _ in batches) == 64
  assert sorted(int(row) for _, rows in batches for row in rows) == [0, 1]
  assert sum('were cut' in r.getMessage() for r in caplog.records) == 1


def test_evaluation_cuts_long_examples_and_counts_them(trained, caplog):
  workdir, periodic = trained
  for metrics in (periodic, None):
    if metrics is None:                         # --mode=eval, with decoding
      with caplog.at_level(logging.WARNING):
        metrics = modes.evaluate(smoke_config(), workdir)
      assert any('num_truncated' in r.getMessage() for r in caplog.records)
    assert np.isfinite(metrics['loss']), metrics
    assert metrics['num_truncated'] > 0


def eval_path(workdir, record, name='validation_step2_avg1_greedy', suffix='.json'):
  """The file of an evaluation that returned `record`: `name`, then its settings digest."""
  return os.path.join(workdir, 'eval', f"{name}_{record['settings_digest']}{suffix}")


def strict_json(path):
  """The JSON file at `path`, refusing NaN/Infinity as strict parsers do."""
  def refuse(name):
    raise ValueError(f'{path} holds {name}, which is not JSON')
  with open(path, encoding='utf-8') as f:
    return json.loads(f.read(), parse_constant=refuse)


def test_eval_json_is_strict_json_even_when_the_loss_is_nan(trained, monkeypatch):
  workdir, _ = trained
  real = evaluation.Evaluator.loss_metrics
  monkeypatch.setattr(evaluation.Evaluator, 'loss_metrics', lambda self, params: dict(
      real(self, params), loss=float('nan'), perplexity=float('inf')))
  returned = modes.evaluate(smoke_config(), workdir)
  written = strict_json(eval_path(workdir, returned))
  assert written == returned
  assert written['loss'] is None and written['loss_null_reason'] == 'not finite (nan)'
  assert written['perplexity'] is None and written['perplexity_null_reason'] == 'not finite (inf)'
  assert np.isfinite(written['accuracy'])


def test_eval_json_says_what_was_scored_and_how(trained):
  workdir, _ = trained
  returned = modes.evaluate(smoke_config(), workdir)
  written = strict_json(eval_path(workdir, returned))
  assert written['sacrebleu_signature'].startswith(
      'nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:')
  assert 'tok:none|smooth:none' in written['bleu_tok_lc_signature']
  assert 'pre:lowercase+moses-punct-norm+moses-tok|lang:' in written['bleu_tok_lc_signature']
  assert 0 <= written['sacrebleu'] <= 100 and 'bleu' not in written      # one name for it
  assert written['sentences_scored'] == written['sentences_in_split'] == 16
  assert written['partial'] is False
  assert written['decoding'] == {'method': 'greedy', 'max_extra_len': 50}
  assert written['checkpoints'] == [2] and written['checkpoints_averaged'] == 1
  assert written['checkpoint_choice'] == 'latest' and written['step'] == 2


def test_decoding_settings_name_those_of_the_method():
  config = smoke_config()
  config.decode.update(method='beam', beam_size=5, alpha=0.6)
  assert modes.decoding_settings(config.decode) == {
      'method': 'beam', 'beam_size': 5, 'alpha': 0.6, 'max_extra_len': 50}
  config.decode.update(method='sample', temperature=0.7, top_k=10, top_p=0.9)
  assert modes.decoding_settings(config.decode) == {
      'method': 'sample', 'temperature': 0.7, 'top_k': 10, 'top_p': 0.9, 'seed': 0,
      'max_extra_len': 50}


def test_other_search_settings_keep_their_own_files_and_the_same_settings_rewrite_theirs(
    trained):
  workdir, _ = trained
  default = modes.evaluate(smoke_config(), workdir)
  config = smoke_config()
  config.decode.max_extra_len = 2
  shorter = modes.evaluate(config, workdir)
  assert default['settings']['decode.max_extra_len'] == 50
  assert shorter['settings']['decode.max_extra_len'] == 2
  assert default['settings_digest'] != shorter['settings_digest']
  for record in (default, shorter):              # the second evaluation left the first's files
    assert strict_json(eval_path(workdir, record)) == record
    for suffix in ('.hyp.txt', '.ref.txt', '.by_length.md'):
      assert os.path.isfile(eval_path(workdir, record, suffix=suffix))
  again = modes.evaluate(smoke_config(), workdir)    # the same settings: the same files
  assert again['settings_digest'] == default['settings_digest']
  same = glob.glob(eval_path(workdir, default, name='*'))
  assert same == [eval_path(workdir, default)], same
  # The sweep report's glob (eval/<split>_step*_avg*.json) still finds them.
  stem = records_lib.eval_files(workdir, 'validation')
  assert stem and os.path.basename(stem).startswith('validation_step2_avg1_greedy_'), stem
  assert stem.endswith('_' + again['settings_digest'])    # the newest


def test_the_settings_digest_follows_only_settings_that_change_the_output():
  config = smoke_config()
  base = modes.output_settings(config, decodes=True)
  assert base['decode.method'] == 'greedy' and base['eval.max_batches'] == 1
  assert 'decode.beam_size' not in base and 'eval.bleu' not in base
  assert 'decode.cache_stages' not in base
  digest = modes.settings_digest(base)
  assert len(digest) == 8 and int(digest, 16) >= 0
  assert modes.settings_digest(modes.output_settings(config, decodes=True)) == digest
  same = smoke_config()
  same.decode.update(beam_size=9, alpha=1.5, cache_stages=2)     # greedy ignores these
  same.eval.bleu = False
  assert modes.settings_digest(modes.output_settings(same, decodes=True)) == digest
  for section, field, value in (('decode', 'max_extra_len', 2), ('decode', 'method', 'beam'),
                                ('eval', 'max_batches', 0), ('eval', 'average_last', 2),
                                ('eval', 'attention_stats', True), ('eval', 'split', 'test')):
    other = smoke_config()
    other[section][field] = value
    changed = modes.output_settings(other, decodes=True)
    assert changed[f'{section}.{field}'] == value
    assert modes.settings_digest(changed) != digest, (section, field)
  assert not any(key.startswith('decode.') for key in modes.output_settings(config, False))


def keep_best_config():
  """Copy-task smoke: 16 evaluation sequences in two batches; every step evaluated and saved."""
  config = copy_task.get_config('smoke')
  config.data.eval_rows_per_batch = 8
  config.train.update(num_steps=4, eval_every_steps=1, checkpoint_every_steps=1,
                      keep_checkpoints=1, keep_best='loss')
  config.eval.max_batches = 0
  return config


SCRIPTED_LOSSES = [3.0, 1.0, 2.0, 2.5]      # steps 1-4: step 2 is the best (lowest)


@pytest.fixture(scope='module')
def best_run(tmp_path_factory):
  """A workdir trained 4 steps with keep_checkpoints=1 and keep_best='loss', its validation
  losses scripted so that the best step (2) is not among the newest."""
  workdir = str(tmp_path_factory.mktemp('best'))
  losses = iter(SCRIPTED_LOSSES)
  real = evaluation.Evaluator.loss_metrics
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(evaluation.Evaluator, 'loss_metrics',
                  lambda self, params: dict(real(self, params), loss=next(losses)))
    modes.train(keep_best_config(), workdir)
  assert next(losses, None) is None                 # one evaluation per step
  return workdir


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_keep_best_keeps_the_best_step_and_step_best_evaluates_it(best_run):
  assert sorted(os.listdir(os.path.join(best_run, 'checkpoints'))) == ['2', '4']
  record = modes.evaluate(keep_best_config(), best_run, step=restored.BEST_STEP)
  assert record['step'] == 2 and record['checkpoints'] == [2]
  assert record['checkpoint_choice'] == 'best' and record['best_metric'] == 'loss'
  assert record['best_mode'] == 'min' and record['best_metric_value'] == 1.0
  written = strict_json(eval_path(best_run, record))
  assert written == record and np.isfinite(written['loss'])


def test_a_partial_evaluation_says_so_in_the_log_the_file_name_and_the_json(best_run, caplog):
  config = keep_best_config()
  config.eval.max_batches = 1           # 8 of the 16 sequences
  config.train.keep_best = ''           # --step=best then uses the metric the run recorded
  with caplog.at_level(logging.WARNING):
    record = modes.evaluate(config, best_run, step=restored.BEST_STEP)
  stem = eval_path(best_run, record, 'validation_step2_avg1_greedy_partial8of16', suffix='')
  assert strict_json(stem + '.json') == record
  assert record['partial'] is True
  assert (record['sentences_scored'], record['sentences_in_split']) == (8, 16)
  with open(stem + '.hyp.txt', encoding='utf-8') as f:
    assert len(f.read().splitlines()) == 8
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any('partial evaluation: 8 of the 16 examples' in w for w in warnings), warnings


def test_keep_best_must_name_a_metric_the_evaluation_measures(tmp_path):
  config = keep_best_config()
  config.train.keep_best = 'bleu'
  with pytest.raises(UserError, match=r"train.keep_best='bleu' is not a metric .*: set "
                     r'--experiment.train.keep_best to one of loss, nll, perplexity, accuracy, '
                     r'sacrebleu, bleu_tok_lc, exact_match \(lower is better'):
    modes.train(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()              # refused before anything is written
  config.train.keep_best = 'bleu_tok_lc'
  config.eval.bleu = False
  with pytest.raises(UserError, match=r'also need --experiment.eval.bleu=True'):
    validation.check_config(config)


def test_streamed_groups_keep_one_shape_per_bucket_and_name_lines_of_the_whole_input(caplog):
  config = copy_task.get_config('smoke')
  tokenizer = tokenizer_lib.IdentityTokenizer(32)
  shapes = set()
  for group in (['5 6 7'], ['9 8', '4 4 5 6 7 8', '12 3 7'], ['5'] * 11):
    for batch, _ in predict.source_batches(tokenizer, group, config.data, batch_multiple=8,
                                           limit=64, rows=16):
      shapes.add(batch['inputs'].shape)
  assert shapes == {(16, 8)}                     # any group size, one compiled shape
  with caplog.at_level(logging.WARNING):
    list(predict.source_batches(tokenizer, ['5 6', ' '.join(['9'] * 70)], config.data,
                                batch_multiple=8, limit=64, rows=16, first_line=17))
  assert any('line(s) 18;' in r.getMessage() for r in caplog.records)
  with pytest.raises(UserError, match=r'^line 21 \('):
    list(predict.source_batches(tokenizer, ['5 6', 'a b'], config.data, batch_multiple=8,
                                limit=64, rows=16, first_line=20))
