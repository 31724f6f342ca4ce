"""An export of a real run records how the run measured its params, and --mode=translate prints
n-best lists: modes.py in-process on a two-step copy-task smoke run (evaluated on its test split
too); provenance.run_metrics's choice among a run's records on hand-written files."""
import json
import os

import pytest

import transformer_jax
from transformer_jax.experiments import copy_task
from transformer_jax.pretrained import provenance
from transformer_jax.run import modes

LINES = ['5 6 7', '9 8', '4 4 5 6 7 8', '12 3 7 7 8 9 10 11', '3 5 3 5 3']


def smoke_config(**decode):
  config = copy_task.get_config('smoke')
  config.decode.update(**decode)
  return config


@pytest.fixture(scope='module')
def evaluated_run(tmp_path_factory):
  """(workdir, its export): trained, evaluated on the test split, then exported."""
  workdir = str(tmp_path_factory.mktemp('run'))
  modes.train(smoke_config(), workdir)
  tested = smoke_config()
  tested.eval.split = 'test'
  modes.evaluate(tested, workdir)
  return workdir, modes.export(smoke_config(), workdir)


def test_the_export_records_the_runs_validation_and_test_metrics(evaluated_run):
  workdir, export_dir = evaluated_run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    periodic = [r for r in map(json.loads, f) if r['split'] == 'validation'][-1]
  [test_file] = [name for name in os.listdir(os.path.join(workdir, 'eval'))
                 if name.startswith('test_') and name.endswith('.json')]
  with open(os.path.join(workdir, 'eval', test_file)) as f:
    tested = json.load(f)
  with open(os.path.join(export_dir, 'model.json')) as f:
    metrics = json.load(f)['metrics']
  assert set(metrics) == {'validation', 'test'}
  validation = metrics['validation']
  assert validation['source'] == 'metrics.jsonl' and validation['checkpoints'] == [2]
  for key in ('loss', 'perplexity', 'accuracy', 'sacrebleu', 'exact_match'):
    assert validation[key] == periodic[key], key
  test = metrics['test']
  assert test['source'] == os.path.join('eval', test_file) and test['checkpoints'] == [2]
  for key in ('loss', 'accuracy', 'sacrebleu', 'sacrebleu_signature', 'decoding', 'partial'):
    assert test[key] == tested[key], key
  assert transformer_jax.load_pretrained(export_dir).metrics == metrics
  card = open(os.path.join(export_dir, 'README.md')).read()
  assert f'| validation | [2] | {periodic["loss"]:.4g} |' in card
  assert (f'| test ({tested["sentences_scored"]} of {tested["sentences_in_split"]} sentences) | '
          f'[2] | {tested["loss"]:.4g} |') in card
  assert tested['sacrebleu_signature'] in card


def test_translate_prints_nbest_lines_and_the_one_best_as_before(evaluated_run, tmp_path,
                                                                capsys):
  workdir, export_dir = evaluated_run
  (tmp_path / 'in.txt').write_text(''.join(line + '\n' for line in LINES))
  beam = dict(method='beam', beam_size=3)
  one = modes.translate(smoke_config(**beam), workdir, input_path=str(tmp_path / 'in.txt'))
  assert capsys.readouterr().out == ''.join(text + '\n' for text in one)
  printed = modes.translate(smoke_config(nbest=3, **beam), workdir,
                            input_path=str(tmp_path / 'in.txt'))
  assert capsys.readouterr().out == ''.join(line + '\n' for line in printed)
  model = transformer_jax.load_pretrained(export_dir)
  assert one == model.translate(LINES, **beam)            # one translation a line, as before
  fields = [line.split('\t') for line in printed]
  assert all(len(row) == 4 for row in fields)
  ranked = model.translate(LINES, nbest=3, return_scores=True, **beam)
  assert [(int(i), int(rank), text) for i, rank, _, text in fields] == [
      (i, rank, text) for i, hypotheses in enumerate(ranked)
      for rank, (text, _) in enumerate(hypotheses, start=1)]
  assert [float(score) for _, _, score, _ in fields] == pytest.approx(
      [score for hypotheses in ranked for _, score in hypotheses], abs=2e-6)
  assert [text for i, rank, _, text in fields if rank == '1'] == one
  assert len(printed) == 3 * len(LINES)


def write_json(path, content):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(content, f)


def test_run_metrics_takes_the_evaluation_of_exactly_the_exported_checkpoints(tmp_path):
  workdir = str(tmp_path)
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    for record in ({'step': 4, 'split': 'train', 'loss': 9.0},
                   {'step': 4, 'split': 'validation', 'loss': 2.0, 'time': 1.0, 'minutes': 3.0},
                   {'step': 6, 'split': 'validation', 'loss': 1.5, 'sacrebleu': float('nan')}):
      f.write(json.dumps(record) + '\n')
  evaluation = lambda **kw: {'split': 'validation', 'checkpoints': [4, 6], 'partial': False,
                             'loss': 1.0, 'bleu_by_source_length': [{'bucket': 1}],
                             'settings': {'eval.split': 'validation'}, **kw}
  eval_dir = tmp_path / 'eval'
  write_json(eval_dir / 'validation_step6_avg2_greedy_aaaa.json', evaluation())
  write_json(eval_dir / 'validation_step6_avg2_greedy_partial2of9_bbbb.json',
             evaluation(partial=True, loss=7.0))                  # newer, but partial
  write_json(eval_dir / 'validation_step6_avg1_greedy_cccc.json',
             evaluation(checkpoints=[6], loss=8.0))               # other params
  write_json(eval_dir / 'test_step6_avg2_beam4_alpha0.6_dddd.json',
             evaluation(split='test', loss=3.0, decoding={'method': 'beam'}))
  (eval_dir / 'test_step6_avg2_damaged.json').write_text('{"split": "te')
  metrics = provenance.run_metrics(workdir, [4, 6])
  assert metrics == {
      'validation': {'checkpoints': [4, 6], 'partial': False, 'loss': 1.0,
                     'source': os.path.join('eval', 'validation_step6_avg2_greedy_aaaa.json')},
      'test': {'checkpoints': [4, 6], 'partial': False, 'loss': 3.0,
               'decoding': {'method': 'beam'},
               'source': os.path.join('eval', 'test_step6_avg2_beam4_alpha0.6_dddd.json')}}
  assert provenance.run_metrics(workdir, [6])['validation']['loss'] == 8.0
  # No evaluation of these checkpoints: the periodic validation of the last one (strict JSON).
  assert provenance.run_metrics(workdir, [2, 4]) == {'validation': {
      'loss': 2.0, 'source': 'metrics.jsonl', 'checkpoints': [4]}}
  assert provenance.run_metrics(workdir, [5, 6]) == {'validation': {
      'loss': 1.5, 'sacrebleu': None, 'sacrebleu_null_reason': 'not finite (nan)',
      'source': 'metrics.jsonl', 'checkpoints': [6]}}
  assert provenance.run_metrics(workdir, [8]) == {}
