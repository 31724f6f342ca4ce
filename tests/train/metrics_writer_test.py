"""Training minutes in metrics.jsonl continue across a resume; the time-to-BLEU benchmark
stitches logs written before they did."""
import json

import pytest

from benchmarks import time_to_bleu
from transformer_jax.base.errors import UserError
from transformer_jax.train import metrics_writer


def write_lines(path, records, tail=''):
  path.write_text(''.join(json.dumps(r) + '\n' for r in records) + tail)


def test_a_resumed_writer_continues_the_clock_of_the_resumed_step(tmp_path):
  write_lines(tmp_path / 'metrics.jsonl', [
      {'step': 100, 'split': 'train', 'time': 1.0, 'minutes': 5.0},
      {'step': 200, 'split': 'train', 'time': 2.0, 'minutes': 9.0},
      {'step': 300, 'split': 'train', 'time': 3.0, 'minutes': 12.0},  # after the checkpoint
  ], tail='{"step": 400, "spl')                                       # cut short by a kill
  writer = metrics_writer.MetricsWriter(str(tmp_path), num_steps=1000, start_step=200)
  writer.write(210, 'validation', {'loss': 1.0})
  writer.close()
  records = metrics_writer.read_records(str(tmp_path / 'metrics.jsonl'))  # skips the cut
  assert [r['step'] for r in records] == [100, 200, 300, 210]
  assert 9.0 <= records[-1]['minutes'] < 9.5
  (tmp_path / 'new').mkdir()
  fresh = metrics_writer.MetricsWriter(str(tmp_path / 'new'), num_steps=10, start_step=0)
  assert fresh.elapsed_minutes() < 0.5
  fresh.close()


def test_time_to_bleu_stitches_a_log_whose_processes_each_restarted_the_clock(tmp_path):
  bleu = {'bleu': 30.0, 'bleu_tok_lc': 31.0}
  write_lines(tmp_path / 'metrics.jsonl', [
      {'step': 10, 'split': 'train', 'time': 1030.0},
      {'step': 20, 'split': 'validation', 'time': 1060.0, 'minutes': 1.0, **bleu},
      {'step': 25, 'split': 'train', 'time': 1180.0},                 # then stopped
      {'step': 30, 'split': 'train', 'time': 9030.0},                 # resumed at 9000 s
      {'step': 40, 'split': 'validation', 'time': 9120.0, 'minutes': 2.0, **bleu},
  ])
  curve = time_to_bleu.read_curve(str(tmp_path))
  assert [(step, round(minutes, 6)) for step, minutes, _, _ in curve] == [(20, 1.0), (40, 5.0)]


def test_time_to_bleu_reads_continuing_minutes_as_they_are(tmp_path):
  write_lines(tmp_path / 'metrics.jsonl', [
      {'step': s, 'split': 'validation', 'time': 7.0 * s, 'minutes': m, 'sacrebleu': b,
       'bleu_tok_lc': b}
      for s, m, b in [(1, 1.5, 10.0), (2, 4.0, 20.0), (3, 6.5, 25.0)]])
  assert time_to_bleu.read_curve(str(tmp_path)) == [
      (1, 1.5, 10.0, 10.0), (2, 4.0, 20.0, 20.0), (3, 6.5, 25.0, 25.0)]


def refuse_constant(name):
  raise ValueError(f'{name} is not strict JSON')


def test_a_nan_metric_is_written_as_null_with_its_reason(tmp_path):
  writer = metrics_writer.MetricsWriter(str(tmp_path), num_steps=10, start_step=0)
  writer.write(5, 'validation',
               {'loss': float('nan'), 'perplexity': float('inf'), 'sacrebleu': 3.5})
  writer.close()
  line = (tmp_path / 'metrics.jsonl').read_text().splitlines()[-1]
  record = json.loads(line, parse_constant=refuse_constant)
  assert record['loss'] is None and record['loss_null_reason'] == 'not finite (nan)'
  assert record['perplexity'] is None and record['perplexity_null_reason'] == 'not finite (inf)'
  assert record['sacrebleu'] == 3.5 and 'sacrebleu_null_reason' not in record


GARBAGE = b'\x00\xff\xfe garbage \x9c\x80\n\xde\xad\xbe\xef'    # not UTF-8, no final newline


def test_undecodable_and_non_record_lines_are_skipped_like_cut_ones(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  write_lines(path, [{'step': 1, 'split': 'train', 'minutes': 0.5}])
  with open(path, 'ab') as f:
    f.write(b'[1, 2]\n"text"\n{"step": 2, "split": "train", "minutes": null}\n' + GARBAGE)
  records = metrics_writer.read_records(str(path))
  assert [r['step'] for r in records] == [1, 2]
  assert metrics_writer.logged_minutes(str(path), 5) == 0.5     # null minutes skipped
  assert metrics_writer.read_records(str(tmp_path)) == []        # a folder holds no records


def test_a_writer_resumes_after_binary_garbage_at_the_end(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  write_lines(path, [{'step': 2, 'split': 'train', 'time': 1.0, 'minutes': 3.0}])
  with open(path, 'ab') as f:
    f.write(GARBAGE)
  writer = metrics_writer.MetricsWriter(str(tmp_path), num_steps=4, start_step=2)
  writer.write(4, 'train', {'loss': 1.0})
  writer.close()
  assert path.read_bytes().startswith(b'{"step": 2')             # the old lines stay as they were
  records = metrics_writer.read_records(str(path))
  assert [r['step'] for r in records] == [2, 4]
  assert records[-1]['minutes'] >= 3.0


def test_a_metrics_file_that_cannot_be_opened_is_a_user_error(tmp_path):
  (tmp_path / 'metrics.jsonl').mkdir()
  with pytest.raises(UserError, match='metrics could not be written to .*metrics.jsonl'):
    metrics_writer.MetricsWriter(str(tmp_path), num_steps=4, start_step=0)


@pytest.mark.slow   # two launch.py trainings, about two minutes on 2 busy cores
def test_a_run_resumes_over_binary_garbage_at_the_end_of_its_metrics(tmp_path):
  from tests.reliability import runner   # pylint: disable=import-outside-toplevel
  workdir = runner.train_smoke_run(tmp_path / 'run')
  path = workdir / 'metrics.jsonl'
  with open(path, 'ab') as f:
    f.write(GARBAGE)
  returncode, stderr = runner.launch(['--experiment=experiments/copy_task.py:smoke',
                                      f'--workdir={workdir}', '--experiment.train.num_steps=4'],
                                     timeout=600)
  assert returncode == 0, stderr[-3000:]
  steps = [r['step'] for r in metrics_writer.read_records(str(path)) if r.get('split') == 'train']
  assert steps == [1, 2, 3, 4]
