"""The sweep report on fabricated member folders (no training): Δ on the reported metric with
every seed, provenance refusal and --sweep_allow_mixed, the LaTeX table's structure, each
seed's value in the CSV, the still-improving rule and the learning curves, the inner tuning
grid, Grid names, budgets, changed rows, --sweep_rerun and members packed on one device."""
import csv
import json
import os
import random

import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.evaluation import bleu
from transformer_jax.sweep import Budget, Grid, Row, Sweep
from transformer_jax.sweep import loading
from transformer_jax.sweep import processes
from transformer_jax.sweep.reporting import learning
from transformer_jax.sweep.reporting import records as records_lib
from transformer_jax.sweep.reporting import report
from transformer_jax.sweep import runner
from transformer_jax.sweep import spec

WORDS = 'ein mann hund frau kind läuft spielt auf dem der die das im park straße ball rot'.split()


def _sentences(rng, count):
  return [' '.join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(count)]


def _noisy(rng, refs, keep):
  """Hypotheses that keep each reference word with probability `keep`."""
  return [' '.join(w if rng.random() < keep else rng.choice(WORDS) for w in r.split())
          for r in refs]


def _member(workdir, name, row, seed, hyps, refs, *, commit='a' * 40, curve=(3.0, 2.5, 2.4),
            overrides=None, tune=None):
  folder = workdir / name
  (folder / 'eval').mkdir(parents=True)
  stem = folder / 'eval' / 'validation_step30_avg1_beam4'
  metrics = {'bleu_tok_lc': bleu.bleu_tok_lc(hyps, refs), 'loss': curve[-1],
             'num_params': 1000, 'checkpoints_averaged': 1}
  stem.with_suffix('.json').write_text(json.dumps(metrics))
  (folder / 'eval' / 'validation_step30_avg1_beam4.hyp.txt').write_text('\n'.join(hyps) + '\n')
  (folder / 'eval' / 'validation_step30_avg1_beam4.ref.txt').write_text('\n'.join(refs) + '\n')
  lines = [{'step': 10 * (i + 1), 'split': 'validation', 'loss': v} for i, v in enumerate(curve)]
  lines += [{'step': 10 * (i + 1), 'split': 'train', 'loss': v + 0.1, 'tokens': 500.0,
             'minutes': float(i)} for i, v in enumerate(curve)]
  (folder / 'metrics.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in lines))
  (folder / 'config.json').write_text(json.dumps({'data': {'dataset': 'copy', 'target_lang': 'de'}}))
  overrides = {'train.seed': seed, 'data.shuffle_seed': seed} if overrides is None else overrides
  (folder / runner.MEMBER).write_text(json.dumps({'row': row, 'seed': seed,
                                                  'overrides': overrides}))
  record = {'code': {'commit': commit, 'dirty': False, 'diff_sha256': None},
            'libraries': {'jax': '0.10.2', 'numpy': '2.4.6'}, 'machine': {'cpu_model': 'test'}}
  (folder / runner.PROVENANCE).write_text(json.dumps(record))
  (folder / runner.DONE).write_text('{}')
  return metrics


@pytest.fixture
def fabricated(tmp_path):
  """A sweep of a baseline (3 seeds) and a better row (2 seeds) on 40 sentences."""
  rng = random.Random(0)
  refs = _sentences(rng, 40)
  sweep = Sweep('experiments/copy_task.py:smoke', [Row('base', seeds=(0, 1, 2)), Row('good')],
                'base', seeds=(0, 1))
  plan = runner.Plan(sweep, 'test', str(tmp_path), ('python', 'launch.py'))
  values = {}
  for row, seeds, keep in (('base', (0, 1, 2), 0.5), ('good', (0, 1), 0.8)):
    for seed in seeds:
      hyps = _noisy(rng, refs, keep + 0.03 * seed)
      values[(row, seed)] = _member(tmp_path, f'{row}_seed{seed}', row, seed, hyps, refs)['bleu_tok_lc']
  return plan, values


def test_delta_uses_the_reported_metric_and_every_seed(fabricated):
  plan, values = fabricated
  records = records_lib.collect(plan)
  rows, comparisons, metrics = report.summarize(plan.sweep, records, samples=500)
  assert metrics[0] == 'bleu_tok_lc'
  base = sum(values[('base', s)] for s in (0, 1, 2)) / 3
  good = sum(values[('good', s)] for s in (0, 1)) / 2
  result = comparisons[0]['results']['bleu_tok_lc']
  assert result['delta'] == pytest.approx(good - base, abs=1e-6)   # all 3 baseline seeds
  assert result['n_ref'] == 3 and result['n_row'] == 2
  assert result['ci_low'] < result['delta'] < result['ci_high']
  assert result['p_holm'] >= result['p']
  by_row = {line['row']: line for line in rows}
  assert by_row['base']['bleu_tok_lc_seeds'] == pytest.approx([values[('base', s)] for s in (0, 1, 2)])


def test_report_files_csv_seeds_and_tex_structure(fabricated):
  plan, values = fabricated
  report.write(plan, samples=500)
  with open(os.path.join(plan.workdir, 'report.csv')) as f:
    rows = {line['row']: line for line in csv.DictReader(f)}
  assert json.loads(rows['good']['bleu_tok_lc_seeds']) == pytest.approx(
      [values[('good', 0)], values[('good', 1)]])
  tex = open(os.path.join(plan.workdir, 'report.tex')).read()
  assert tex.count(r'\begin{tabular}') == tex.count(r'\end{tabular}') == 1
  for rule in (r'\toprule', r'\midrule', r'\bottomrule'):
    assert tex.count(rule) == 1
  body = tex.split(r'\midrule')[1].split(r'\bottomrule')[0].strip().splitlines()
  assert [line.split(' & ')[0] for line in body] == ['base', 'good']      # one line per row
  header = tex.split(r'\toprule')[1].split(r'\midrule')[0]
  columns = tex.split(r'\begin{tabular}{')[1].split('}')[0]
  assert all(line.count(' & ') == len(columns) - 1 for line in body + [header.strip()])
  assert all(line.endswith(r'\\') for line in body)
  assert header.split(' & ')[4] == r'95\% CI' and r'\textbackslash' not in tex  # escaped once
  markdown = open(os.path.join(plan.workdir, 'report.md')).read()
  assert '## Provenance' in markdown and 'aaaaaaa' in markdown
  with open(os.path.join(plan.workdir, 'report_comparisons.csv')) as f:
    assert {line['metric'] for line in csv.DictReader(f)} >= {'bleu_tok_lc', 'loss'}
  assert os.path.getsize(os.path.join(plan.workdir, 'report_curves.png')) > 1000


def test_mixed_code_is_refused_in_one_line_and_marked_when_allowed(fabricated):
  plan, _ = fabricated
  path = os.path.join(plan.workdir, 'good_seed1', runner.PROVENANCE)
  record = json.load(open(path))
  record['code']['commit'] = 'b' * 40
  json.dump(record, open(path, 'w'))
  with pytest.raises(UserError) as error:
    report.summarize(plan.sweep, records_lib.collect(plan), samples=200)
  message = str(error.value)
  assert '\n' not in message and 'commit aaaaaaa vs bbbbbbb' in message
  assert '--sweep_allow_mixed' in message
  _, comparisons, _ = report.summarize(plan.sweep, records_lib.collect(plan), samples=200,
                                       allow_mixed=True)
  assert comparisons[0]['mixed_mark'] == '†'


def test_still_improving_rule():
  falling = {'validation_curve': [(100, 3.0), (200, 2.5), (400, 2.2), (500, 2.0)],
             'train_curve': []}
  flat = {'validation_curve': [(100, 3.0), (200, 2.5), (400, 2.2), (500, 2.19)],
          'train_curve': []}
  assert learning.still_improving(falling) == (True, 'validation')
  assert learning.still_improving(flat) == (False, 'validation')
  one_eval = {'validation_curve': [(600, 2.0)],
              'train_curve': [(100, 5.0), (480, 3.0), (600, 2.8)]}
  assert learning.still_improving(one_eval) == (True, 'training')
  assert learning.flops(1e6, 2e9) == 6 * 1e6 * 2e9


def test_tuning_grid_keeps_the_setting_with_the_lowest_validation_loss(tmp_path):
  rng = random.Random(1)
  refs = _sentences(rng, 20)
  row = Row('drop', tune={'model.dropout_rate': [0.1, 0.3]})
  sweep = Sweep('experiments/copy_task.py:smoke', [Row('base'), row], 'base', seeds=(0, 1))
  names = [m.name for m in sweep.members()]
  assert names == ['base_seed0', 'base_seed1', 'drop_t0_seed0', 'drop_t0_seed1',
                   'drop_t1_seed0', 'drop_t1_seed1']
  assert loading.member_overrides(sweep, sweep.members()[4])['model.dropout_rate'] == 0.3
  plan = runner.Plan(sweep, 'test', str(tmp_path), ('python', 'launch.py'))
  for member in sweep.members():
    loss = 2.0 if member.tune == 1 else 2.5
    _member(tmp_path, member.name, member.row.name, member.seed, _noisy(rng, refs, 0.6), refs,
            curve=(3.0, loss + 0.1, loss))
  rows, _, _ = report.summarize(sweep, records_lib.collect(plan), samples=200)
  drop = next(line for line in rows if line['row'] == 'drop')
  assert drop['members'] == ['drop_t1_seed0', 'drop_t1_seed1']
  assert 'tuned: dropout_rate=0.3' in drop['note']


def test_grid_names_and_budgets():
  rows = Grid({'model.num_heads': [1, 8], 'model.dropout_rate': [0.1, 0.3]}, prefix='A_').rows()
  assert [r.name for r in rows] == ['A_num_heads1_dropout_rate0.1', 'A_num_heads1_dropout_rate0.3',
                                    'A_num_heads8_dropout_rate0.1', 'A_num_heads8_dropout_rate0.3']
  assert rows[3].overrides == {'model.num_heads': 8, 'model.dropout_rate': 0.3}
  sweep = Sweep('experiments/copy_task.py:smoke', rows, rows[0].name)
  loading.check(sweep, 'test')            # every grid row is a valid, checked config
  config = loading.base_config('experiments/copy_task.py:smoke')
  plateau = Budget('plateau', patience=3, eval_every_steps=50, max_steps=900).overrides(config)
  assert plateau['train.early_stop_patience'] == 3 and plateau['eval.average_last'] == 4
  assert plateau['train.keep_checkpoints'] == 4 and plateau['train.num_steps'] == 900
  tokens = Budget('tokens', tokens=10 * config.data.tokens_per_batch).overrides(config)
  assert tokens == {'train.num_steps': 10}
  params = spec.count_params(config)
  assert params > 1000
  per_step = 6 * params * config.data.tokens_per_batch
  flops = Budget('flops', flops=7.5 * per_step).overrides(config)
  assert flops == {'train.num_steps': 7}
  wide = loading.config_with('experiments/copy_task.py:smoke', {'model.model_dim': 32}, 'w')
  assert spec.count_params(wide) > params
  assert Budget('flops', flops=7.5 * per_step).overrides(wide)['train.num_steps'] < 7


def test_width_rows_scale_the_learning_rate():
  sweep = Sweep('experiments/copy_task.py:smoke',
                [Row('base'), Row('wide', {'model.model_dim': 64}, scale_lr_with_width=True)],
                'base', common={'optim.learning_rate': 1e-3})
  base_dim = loading.base_config('experiments/copy_task.py:smoke').model.model_dim
  lr = loading.member_overrides(sweep, sweep.members()[2])['optim.learning_rate']
  assert lr == pytest.approx(1e-3 * (base_dim / 64) ** 0.5)
  assert 'optim.learning_rate' not in loading.member_overrides(sweep, sweep.members()[0]) or \
      loading.member_overrides(sweep, sweep.members()[0])['optim.learning_rate'] == 1e-3


def test_duplicate_seeds_and_bad_comparisons_are_refused():
  with pytest.raises(UserError, match='repeats a seed'):
    loading.check(Sweep('experiments/copy_task.py:smoke', [Row('base')], 'base', seeds=(0, 0)), 't')
  with pytest.raises(UserError, match='compare entry'):
    loading.check(Sweep('experiments/copy_task.py:smoke', [Row('base')], 'base',
                     compare=[('base', 'nope')]), 't')


def test_changed_rows_are_refused_and_rerun_moves_members_aside(fabricated):
  plan, _ = fabricated
  path = os.path.join(plan.workdir, 'good_seed0', runner.MEMBER)
  json.dump({'row': 'good', 'seed': 0,
             'overrides': {'train.seed': 0, 'data.shuffle_seed': 0, 'optim.learning_rate': 3e-3}},
            open(path, 'w'))
  changed = runner.changed_members(plan)
  assert len(changed) == 1 and changed[0].startswith('good_seed0 (optim.learning_rate')
  with pytest.raises(UserError, match='--sweep_rerun=good_seed0'):
    runner.check_unchanged(plan)
  runner.check_unchanged(plan, ['good_seed0'])       # asked to run again: accepted
  names = runner.rerun_names(plan, '3,good_seed0')
  assert names == ['good_seed0', 'good_seed0']
  moved = runner.move_aside(plan, ['good_seed0'])
  assert len(moved) == 1 and os.path.isdir(moved[0]) and '.old-' in moved[0]
  assert not os.path.exists(os.path.join(plan.workdir, 'good_seed0'))
  with pytest.raises(UserError, match='not a member'):
    runner.rerun_names(plan, 'nobody')


def test_members_packed_per_device_get_their_share():
  slots = processes.device_slots(4, 2, ['0', '1'])
  assert [s['CUDA_VISIBLE_DEVICES'] for s in slots] == ['0', '0', '1', '1']
  assert all(s['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '0.450' for s in slots)
  assert processes.device_slots(2, 1, ['0', '1']) == [{'CUDA_VISIBLE_DEVICES': '0'},
                                                    {'CUDA_VISIBLE_DEVICES': '1'}]
  assert processes.device_slots(3, 4, []) == [{}, {}, {}]
  with pytest.raises(UserError, match='hold 2 members'):
    processes.device_slots(3, 2, ['0'])


def test_mixed_code_from_the_command_line_exits_2_and_is_marked_with_allow_mixed(fabricated):
  import subprocess
  import sys
  plan, _ = fabricated
  path = os.path.join(plan.workdir, 'base_seed2', runner.PROVENANCE)
  record = json.load(open(path))
  record['libraries']['jax'] = '0.11.2'
  json.dump(record, open(path, 'w'))
  sweep_file = os.path.join(plan.workdir, 'sweep.py')
  with open(sweep_file, 'w') as f:
    f.write('from transformer_jax.sweep import Row, Sweep\n'
            'def get_sweep(arg=None):\n'
            "  return Sweep('experiments/copy_task.py:smoke', [Row('base', seeds=(0, 1, 2)), "
            "Row('good')], 'base', seeds=(0, 1))\n")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  command = [sys.executable, 'launch.py', f'--sweep={sweep_file}', f'--workdir={plan.workdir}',
             '--mode=report', '--sweep_resamples=200']
  refused = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
  assert refused.returncode == 2
  assert refused.stderr.strip().splitlines()[-1].startswith("error: row 'base' pool members")
  assert 'jax 0.10.2 vs 0.11.2' in refused.stderr and 'Traceback' not in refused.stderr
  assert not os.path.exists(os.path.join(plan.workdir, 'report.md'))
  allowed = subprocess.run(command + ['--sweep_allow_mixed'], cwd=repo, capture_output=True,
                           text=True, timeout=300)
  assert allowed.returncode == 0, allowed.stderr[-2000:]
  assert 'base → good†' in open(os.path.join(plan.workdir, 'report.md')).read()


def test_report_over_several_sweep_folders_pools_the_shared_baseline(fabricated, tmp_path_factory):
  plan, values = fabricated
  other = tmp_path_factory.mktemp('other')
  rng = random.Random(5)
  refs = [line.rstrip('\n') for line in open(os.path.join(
      plan.workdir, 'base_seed0', 'eval', 'validation_step30_avg1_beam4.ref.txt'))]
  extra = {}
  for row, seed, keep in (('base', 3, 0.5), ('good', 0, 0.6), ('good', 1, 0.6)):
    extra[(row, seed)] = _member(other, f'{row}_seed{seed}', row, seed,
                                 _noisy(rng, refs, keep), refs)['bleu_tok_lc']
  records = records_lib.collect(plan, also=[str(other)])
  rows, comparisons, _ = report.summarize(plan.sweep, records, samples=200)
  by_row = {line['row']: line for line in rows}
  assert by_row['base']['seeds'] == 4                        # 3 here + 1 there
  clash = f'{os.path.basename(str(other))}:good'
  assert by_row[clash]['seeds'] == 2 and by_row['good']['seeds'] == 2
  assert ('base', clash) in {(c['ref'], c['row']) for c in comparisons}
  base_mean = (sum(values[('base', s)] for s in (0, 1, 2)) + extra[('base', 3)]) / 4
  assert by_row['base']['bleu_tok_lc'] == pytest.approx(base_mean)


def test_a_damaged_eval_json_leaves_the_member_out_and_the_report_goes_on(fabricated):
  plan, _ = fabricated
  path = os.path.join(plan.workdir, 'good_seed1', 'eval', 'validation_step30_avg1_beam4.json')
  with open(path, 'r+') as f:
    f.truncate(10)
  report.write(plan, samples=200)
  markdown = open(os.path.join(plan.workdir, 'report.md')).read()
  assert 'Left out, damaged**: good_seed1' in markdown
  with open(os.path.join(plan.workdir, 'report.csv')) as f:
    assert {line['row']: int(line['seeds']) for line in csv.DictReader(f)} == {'base': 3, 'good': 1}


def test_sweep_files_that_do_not_return_a_sweep_and_archives_to_a_file(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_sweep(arg=None):\n  return {"rows": []}\n')
  with pytest.raises(UserError, match='returned dict, not a Sweep'):
    loading.load(str(bad))
  exits = tmp_path / 'exits.py'
  exits.write_text('import sys\nsys.exit(0)\n')
  with pytest.raises(UserError, match='SystemExit'):
    loading.load(str(exits))
  from transformer_jax.sweep import archive
  sweep = Sweep('experiments/copy_task.py:smoke', [Row('base')], 'base')
  plan = runner.Plan(sweep, 'test', str(tmp_path / 'run'), ('python', 'launch.py'))
  (tmp_path / 'afile').write_text('x')
  with pytest.raises(UserError, match='is a file, not a folder'):
    archive.write(plan, str(tmp_path / 'afile'))


def test_failed_txt_holds_the_error_of_the_last_attempt(tmp_path):
  log = tmp_path / 'sweep.log'
  log.write_text('$ python launch.py a\nerror: the first attempt\n'
                 '$ python launch.py a\nTraceback (most recent call last):\n'
                 '  File "x", line 1\nValueError: the second attempt\n')
  assert processes.last_error(str(log), 1) == 'ValueError: the second attempt'
  log.write_text('$ python launch.py a\nI1207 something\nerror: it failed\nI1207 after\n')
  assert processes.last_error(str(log), 2) == 'error: it failed'


def test_a_sweep_whose_members_fail_exits_non_zero_naming_them(tmp_path):
  import subprocess
  import sys
  sweep_file = tmp_path / 'failing.py'
  sweep_file.write_text(
      'from transformer_jax.sweep import Row, Sweep\n'
      'def get_sweep(arg=None):\n'
      "  return Sweep('experiments/copy_task.py:smoke', [Row('base')], 'base', seeds=(0,),\n"
      "               common={'train.init_embeddings': '/nonexistent/vectors.txt'})\n")
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for extra in ([], ['--sweep_member=0']):
    workdir = tmp_path / f'run{len(extra)}'
    done = subprocess.run([sys.executable, 'launch.py', f'--sweep={sweep_file}',
                           f'--workdir={workdir}', *extra], cwd=repo, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith('error:') and 'base_seed0' in last and 'failed' in last
    assert 'init_embeddings' in (workdir / 'base_seed0' / 'failed.txt').read_text()
