"""Sweeps end to end on the copy-task smoke experiment: checks before running, the report's
numbers against an independent computation, member selection, resume after a kill and
parallel members (both bit-identical to one uninterrupted sequential sweep)."""
import csv
import json
import math
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import pytest

from transformer_jax.base import workdir as workdir_lib
from transformer_jax.sweep import processes
from transformer_jax.sweep.reporting import report

REPO = pathlib.Path(__file__).resolve().parents[2]

SWEEP = '''
from transformer_jax.sweep import Curves, Row, Sweep

def get_sweep(arg=None):
  return Sweep(experiment='experiments/copy_task.py:smoke', baseline='base', seeds=(0, 1),
               curves=[Curves('width', 'd_ff', {'ffn': [(32, 'base'), (48, 'wide')]},
                              panels=[('accuracy',), ('loss', 'perplexity')])],
               common={'train.num_steps': 6, 'train.checkpoint_every_steps': 2,
                       'train.eval_every_steps': 6, 'train.log_every_steps': 2,
                       'eval.max_batches': 0},
               metric='accuracy',
               rows=[Row('base'), Row('wide', {'model.mlp_dim': 48}, note='d_ff 48')])
'''


def launch(*args, timeout=900):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def sweep_file(tmp, text=SWEEP):
  path = tmp / 'sweep.py'
  path.write_text(text)
  return str(path)


def results(workdir: pathlib.Path):
  """{member: (eval json without file paths, hypotheses)} of every member's final evaluation."""
  out = {}
  for member in sorted(p for p in workdir.iterdir() if (p / 'done.json').exists()):
    stem = sorted((member / 'eval').glob('validation_step6_*.json'))[0]
    metrics = json.loads(stem.read_text())
    out[member.name] = (metrics, (stem.parent / (stem.stem + '.hyp.txt')).read_text())
  return out


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """One uninterrupted sequential sweep (4 members), shared by the tests below."""
  tmp = tmp_path_factory.mktemp('sweep')
  workdir = tmp / 'sequential'
  done = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={workdir}')
  assert done.returncode == 0, done.stderr[-3000:]
  return tmp, workdir, done.stderr


def test_unknown_key_in_a_row_fails_before_anything_runs(tmp_path):
  bad = SWEEP.replace("{'model.mlp_dim': 48}", "{'model.mlp_dimm': 48}")
  result = launch(f'--sweep={sweep_file(tmp_path, bad)}', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 2
  assert "row 'wide': model.mlp_dimm=48 is not a field" in result.stderr.strip().splitlines()[-1]
  assert not (tmp_path / 'run').exists()
  wrong_type = SWEEP.replace("{'model.mlp_dim': 48}", "{'model.mlp_dim': 'wide'}")
  result = launch(f'--sweep={sweep_file(tmp_path, wrong_type)}', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 2 and 'has the wrong type' in result.stderr.splitlines()[-1]
  out_of_range = SWEEP.replace("{'model.mlp_dim': 48}", "{'model.dropout_rate': 1.5}")
  result = launch(f'--sweep={sweep_file(tmp_path, out_of_range)}', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 2 and 'model.dropout_rate=1.5 is out of range' in result.stderr
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('old, new, message', [
    ("(48, 'wide')", "(48, 'wider')", "draw rows ['wider'] that the sweep does not have"),
    ("('accuracy',), ", "('acuracy',), ", "panels of reported metrics, not ['acuracy']"),
    ("('accuracy',), ", "(), ", 'need non-empty panels'),
    ("Curves('width'", "Curves('a width'", "curves name 'a width' must be letters"),
], ids=['unknown-row', 'unknown-metric', 'empty-panel', 'bad-name'])
def test_bad_curves_fail_when_the_sweep_loads(tmp_path, monkeypatch, old, new, message):
  from transformer_jax.base.errors import UserError
  from transformer_jax.sweep import loading
  monkeypatch.chdir(REPO)
  assert SWEEP.count(old) == 1
  with pytest.raises(UserError, match=re.escape(message)):
    loading.load(sweep_file(tmp_path, SWEEP.replace(old, new)))
  assert loading.load(sweep_file(tmp_path)).curves[0].name == 'width'


def test_curves_draw_each_series_mean_and_error_and_skip_missing_rows(tmp_path):
  from transformer_jax.sweep.reporting import curves as curves_lib
  from transformer_jax.sweep import spec
  figure = spec.Curves('scaling', 'd_k', {'scaled': [(64, 'a64'), (16, 'a16'), (32, 'base')],
                                          'unscaled': [(16, 'b16'), (32, 'b32')]},
                       panels=[('bleu',), ('entropy', 'init_entropy')])
  rows = [{'row': 'base', 'bleu': 21.0, 'bleu_se': 0.5, 'entropy': 1.2, 'entropy_se': None},
          {'row': 'a16', 'bleu': 20.0, 'bleu_se': None, 'entropy': 1.3, 'entropy_se': 0.1},
          {'row': 'b16', 'bleu': 8.0, 'bleu_se': 0.25, 'entropy': None, 'entropy_se': None}]
  assert curves_lib.points(figure, rows, 'bleu') == {
      'scaled': [(16.0, 20.0, 0.0), (32.0, 21.0, 0.5)], 'unscaled': [(16.0, 8.0, 0.25)]}
  assert curves_lib.points(figure, rows, 'entropy') == {
      'scaled': [(16.0, 1.3, 0.1), (32.0, 1.2, 0.0)], 'unscaled': []}
  path = tmp_path / 'curves.png'
  assert curves_lib.plot(figure, rows, str(path), 'test') == ['bleu', 'entropy']
  assert path.stat().st_size > 1000


@pytest.mark.slow
def test_sweep_runs_every_member_and_reports_mean_and_standard_error(reference):
  tmp, workdir, _ = reference
  members = results(workdir)
  assert sorted(members) == ['base_seed0', 'base_seed1', 'wide_seed0', 'wide_seed1']
  recorded = json.loads((workdir / 'wide_seed1' / 'member.json').read_text())
  assert recorded['overrides']['model.mlp_dim'] == 48 and recorded['seed'] == 1
  rows = {}
  with open(workdir / 'report.csv') as f:
    for line in csv.DictReader(f):
      rows[line['row']] = line
  assert sorted(rows) == ['base', 'wide']
  for row in ('base', 'wide'):
    values = [members[f'{row}_seed{s}'][0]['accuracy'] for s in (0, 1)]
    assert int(rows[row]['seeds']) == 2
    assert float(rows[row]['accuracy']) == pytest.approx(statistics.mean(values), rel=1e-9)
    assert float(rows[row]['accuracy_se']) == pytest.approx(
        statistics.stdev(values) / math.sqrt(2), rel=1e-9, abs=1e-12)
  delta = float(rows['wide']['accuracy']) - float(rows['base']['accuracy'])
  with open(workdir / 'report_comparisons.csv') as f:
    tests = {(t['ref'], t['row'], t['metric']): t for t in csv.DictReader(f)}
  assert float(tests[('base', 'wide', 'accuracy')]['delta']) == pytest.approx(delta, abs=1e-12)
  assert json.loads(rows['wide']['accuracy_seeds']) == pytest.approx(
      [members[f'wide_seed{s}'][0]['accuracy'] for s in (0, 1)])
  assert (workdir / 'report.md').read_text().count('\n| ') >= 2
  assert (workdir / 'report.png').stat().st_size > 1000
  assert (workdir / 'report_width.png').stat().st_size > 1000
  # Running again skips every finished member.
  again = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={workdir}')
  assert again.returncode == 0 and '4 done, 0 to run' in again.stderr


@pytest.mark.slow
def test_sweep_list_and_one_member(reference, tmp_path):
  tmp, workdir, _ = reference
  listed = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={workdir}', '--sweep_list')
  lines = listed.stdout.strip().splitlines()
  assert [line.split('\t')[:3] for line in lines] == [
      ['0', 'base_seed0', 'done'], ['1', 'base_seed1', 'done'], ['2', 'wide_seed0', 'done'],
      ['3', 'wide_seed1', 'done']]
  assert '--experiment.model.mlp_dim=48' in lines[3] and '--experiment.train.seed=1' in lines[3]
  alone = tmp_path / 'alone'
  one = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={alone}', '--sweep_member=2')
  assert one.returncode == 0, one.stderr[-2000:]
  assert sorted(p.name for p in alone.iterdir() if p.name != 'shared') == ['wide_seed0']
  assert results(alone)['wide_seed0'] == results(workdir)['wide_seed0']
  out = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={alone}', '--sweep_member=4')
  assert out.returncode == 2 and 'members 0 to 3' in out.stderr.splitlines()[-1]


@pytest.mark.slow
def test_parallel_members_match_the_sequential_sweep(reference, tmp_path):
  tmp, workdir, _ = reference
  parallel = tmp_path / 'parallel'
  done = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={parallel}', '--sweep_parallel=2')
  assert done.returncode == 0, done.stderr[-3000:]
  assert results(parallel) == results(workdir)
  assert 'on cores' not in done.stderr           # pinning is asked for, not the default


@pytest.mark.slow
def test_pinned_members_run_on_their_own_cores(reference, tmp_path):
  tmp, _, _ = reference
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < 2:
    pytest.skip('needs 2 cores')
  pinned = tmp_path / 'pinned'
  done = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={pinned}', '--sweep_parallel=2',
                '--sweep_pin_cores')
  assert done.returncode == 0, done.stderr[-3000:]
  half = len(cores) // 2
  assert f'on cores {cores[0]}-{cores[half - 1]}' in done.stderr
  assert f'on cores {cores[half]}-{cores[2 * half - 1]}' in done.stderr
  assert len(list(pinned.glob('*/done.json'))) == 4


def test_cpu_shares_split_the_cores_into_disjoint_equal_parts(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1, 2, 3, 5}, raising=False)
  assert processes.cpu_shares(2) == [[0, 1], [2, 3]]
  assert processes.cpu_shares(5) == [[0], [1], [2], [3], [5]]
  assert processes.cpu_shares(6) == [None] * 6          # fewer cores than members: no pinning
  assert processes.cpu_shares(1) == [None]


@pytest.mark.slow
def test_killed_sweep_resumes_to_the_same_results(reference, tmp_path):
  tmp, workdir, _ = reference
  killed = tmp_path / 'killed'
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  process = subprocess.Popen([sys.executable, 'launch.py', f'--sweep={sweep_file(tmp)}',
                              f'--workdir={killed}'], cwd=REPO, env=env,
                             stderr=subprocess.PIPE, text=True)
  try:
    for line in process.stderr:            # second member started: wait for its first checkpoint
      if 'base_seed1: pending -> running' in line:
        break
    deadline = time.time() + 300
    while not (killed / 'base_seed1' / 'checkpoints' / '2').exists() and time.time() < deadline:
      time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
  finally:
    process.wait(timeout=60)
  # The orphaned member gets SIGTERM (PDEATHSIG), saves and stops on its own; until then the
  # sweep lists it as running.
  deadline = time.time() + 300
  while workdir_lib.lock_holder(str(killed / 'base_seed1')) and time.time() < deadline:
    time.sleep(0.5)
  assert not workdir_lib.lock_holder(str(killed / 'base_seed1'))
  assert not (killed / 'base_seed1' / 'done.json').exists()
  resumed = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={killed}')
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resumed from checkpoint step' in (killed / 'base_seed1' / 'sweep.log').read_text()
  assert results(killed) == results(workdir)


@pytest.mark.slow
def test_archive_keeps_results_without_checkpoints_and_resumes_elsewhere(reference, tmp_path):
  tmp, workdir, _ = reference
  kept = tmp_path / 'kept'
  done = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={workdir}', '--mode=archive',
                f'--sweep_archive={kept}')
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'archived 4 done member(s)' in done.stderr
  assert not list(kept.rglob('checkpoints')) and not list(kept.rglob('*.lock'))
  assert not list(kept.rglob('*.ref.txt'))         # the data set's sentences stay behind
  assert results(kept) == results(workdir)
  assert (kept / 'wide_seed1' / 'config.json').exists() and (kept / 'wide_seed1' / 'metrics.jsonl').exists()
  # The archive reports on its own: the same numbers, no p-values without references.
  alone = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={kept}', '--mode=report')
  assert alone.returncode == 0, alone.stderr[-3000:]
  original, archived = _report_rows(workdir), _report_rows(kept)
  assert archived == original
  assert (kept / 'report_comparisons.csv').exists()
  # Copied into a new sweep folder with one member left out, only that member runs again,
  # and its references serve the others: the whole report comes out as the original's.
  elsewhere = tmp_path / 'elsewhere'
  shutil.copytree(kept, elsewhere)
  shutil.rmtree(elsewhere / 'wide_seed0')
  resumed = launch(f'--sweep={sweep_file(tmp)}', f'--workdir={elsewhere}')
  assert resumed.returncode == 0 and '3 done, 1 to run' in resumed.stderr, resumed.stderr[-3000:]
  assert results(elsewhere) == results(workdir)
  rerun, original = _report_rows(elsewhere), _report_rows(workdir)
  for rows in (rerun, original):               # the member trained again took its own time
    rows['wide'].pop('train_minutes')
    rows['wide'].pop('provenance')                # and ran with this checkout's code
  assert rerun == original


def _report_rows(folder):
  import csv
  with open(folder / 'report.csv') as f:
    return {line['row']: line for line in csv.DictReader(f)}


def test_archive_needs_its_folder_and_a_sweep(tmp_path):
  source = sweep_file(tmp_path)
  result = launch(f'--sweep={source}', f'--workdir={tmp_path / "run"}', '--mode=archive')
  assert result.returncode == 2 and '--sweep_archive=DIR' in result.stderr.splitlines()[-1]
  result = launch(f'--sweep={source}', f'--workdir={tmp_path / "run"}', '--mode=archive',
                  f'--sweep_archive={tmp_path / "kept"}')
  assert result.returncode == 2 and 'nothing to archive' in result.stderr.splitlines()[-1]
  result = launch('--mode=archive', f'--workdir={tmp_path / "run"}')
  assert result.returncode == 2 and 'works on a sweep' in result.stderr.splitlines()[-1]
  assert not (tmp_path / 'kept').exists()


def test_sentence_only_paired_test_p_values():
  from transformer_jax.sweep.reporting import statistics as sweep_statistics
  refs = [f'the cat sat on mat number {i}' for i in range(60)]
  worse = [f'a dog stood by door {i}' if i % 2 else r for i, r in enumerate(refs)]
  assert sweep_statistics.sentence_paired_test(worse, worse, refs) == pytest.approx(1.0, abs=0.01)
  assert sweep_statistics.sentence_paired_test(worse, refs, refs) < 0.05


# slow: ~105 s on 2 cores; the plateau rule itself is in tests/train/early_stop_test.py and
# the GPU slots in sweep_report_test.py, which stay in the default suite.
@pytest.mark.slow
def test_smoke_sweep_with_a_plateau_budget_reports_and_packs_members_per_device(tmp_path):
  """A :smoke-based sweep (partial evaluations) reports end to end, with learning curves;
  run two members at a time packed on one (pretend) GPU, each member's results are those it
  has when run alone."""
  source = 'experiments/ablations/converged.py:smoke'
  env = dict(os.environ, PYTHONUNBUFFERED='1', CUDA_VISIBLE_DEVICES='0')   # JAX_PLATFORMS=cpu
  packed = tmp_path / 'packed'
  done = subprocess.run([sys.executable, 'launch.py', f'--sweep={source}', f'--workdir={packed}',
                         '--sweep_parallel=2', '--sweep_per_device=2', '--sweep_resamples=500'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stderr.count('on GPU 0') == 4
  markdown = (packed / 'report.md').read_text()
  assert 'Partial evaluations' in markdown and 'base → wide' in markdown
  assert (packed / 'report_curves.png').stat().st_size > 1000
  provenance = json.loads((packed / 'wide_seed1' / 'provenance.json').read_text())
  assert provenance['machine']['cuda_visible_devices'] == '0' and provenance['finished'] > 0
  alone = tmp_path / 'alone'
  one = launch(f'--sweep={source}', f'--workdir={alone}', '--sweep_member=3')
  assert one.returncode == 0, one.stderr[-2000:]
  assert _member_result(alone / 'wide_seed1') == _member_result(packed / 'wide_seed1')


def _member_result(folder):
  stem = sorted((folder / 'eval').glob('validation_step*.json'))[0]
  metrics = json.loads(stem.read_text())
  return metrics, (stem.parent / (stem.stem + '.hyp.txt')).read_text()


def test_mean_and_standard_error():
  assert report.mean_and_error([1.0, 2.0, 4.0]) == pytest.approx(
      (7 / 3, statistics.stdev([1.0, 2.0, 4.0]) / math.sqrt(3)))
  assert report.mean_and_error([3.0]) == (3.0, None)


@pytest.mark.parametrize('source', ['experiments/ablations/table3.py',
                                    'experiments/ablations/table3.py:mini',
                                    'experiments/ablations/seed_claims.py',
                                    'experiments/ablations/seed_claims.py:mini'])
def test_shipped_sweeps_load_and_every_member_config_checks(source, monkeypatch):
  from transformer_jax.sweep import loading
  monkeypatch.chdir(REPO)
  sweep = loading.load(source)
  members = sweep.members()
  baseline = [m for m in members if m.row.name == sweep.baseline]
  assert len(baseline) >= 3 and all(len(r.seeds or sweep.seeds) >= 2 for r in sweep.rows)
  assert len({m.name for m in members}) == len(members)
