"""Tampering with what a run wrote around its checkpoints' arrays is detected: a renamed step
folder, an edited data position or meta item is damage (the step is skipped, and moved aside
when training resumes); an edited config.json that changes the model is refused, naming the
field. A 4-step copy-task smoke run (checkpoints at steps 2 and 4) is copied for each test."""
import json
import pathlib

import pytest

from tests.reliability import runner

SMOKE = '--experiment=experiments/copy_task.py:smoke'
STEPS = ['--experiment.train.num_steps=4', '--experiment.train.keep_checkpoints=2']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  folder = tmp_path_factory.mktemp('integrity') / 'run'
  code, stderr = runner.launch([SMOKE, *STEPS, f'--workdir={folder}'], timeout=600)
  assert code == 0, stderr[-3000:]
  assert sorted(p.name for p in (folder / 'checkpoints').iterdir()) == ['2', '4']
  return folder


def _eval_steps(workdir: pathlib.Path):
  return sorted(json.loads(p.read_text())['step'] for p in (workdir / 'eval').glob('*.json'))


def test_renamed_step_folder_is_skipped_by_eval(run):
  (run / 'checkpoints' / '4').rename(run / 'checkpoints' / '6')
  code, stderr = runner.launch([SMOKE, *STEPS, f'--workdir={run}', '--mode=eval'])
  assert code == 0, stderr[-3000:]
  assert 'checkpoint step 6' in stderr and 'renamed step folder' in stderr
  assert _eval_steps(run) == [2]               # step 4's params are never reported as step 6
  assert (run / 'checkpoints' / '6').is_dir()  # read-only: nothing moved


def test_renamed_step_folder_is_moved_aside_when_training_resumes(run):
  (run / 'checkpoints' / '4').rename(run / 'checkpoints' / '6')
  code, stderr = runner.launch([SMOKE, '--experiment.train.num_steps=8',
                                '--experiment.train.keep_checkpoints=2', f'--workdir={run}'])
  assert code == 0, stderr[-3000:]
  assert 'resumed from checkpoint step 2' in stderr
  assert (run / 'checkpoints' / 'damaged' / '6').is_dir()
  for step in ('6', '8'):
    meta = json.loads((run / 'checkpoints' / step / 'meta' / 'metadata').read_text())
    assert meta['step'] == int(step)


def test_edited_data_position_is_damage(run):
  path = run / 'checkpoints' / '4' / 'data' / 'metadata'
  position = json.loads(path.read_text())
  position['index'] = 0
  path.write_text(json.dumps(position))
  code, stderr = runner.launch([SMOKE, '--experiment.train.num_steps=6',
                                '--experiment.train.keep_checkpoints=2', f'--workdir={run}'])
  assert code == 0, stderr[-3000:]
  assert 'data position differs' in stderr and 'resumed from checkpoint step 2' in stderr
  assert (run / 'checkpoints' / 'damaged' / '4').is_dir()


def test_edited_meta_item_is_damage(run):
  path = run / 'checkpoints' / '4' / 'meta' / 'metadata'
  meta = json.loads(path.read_text())
  meta['step'] = 6                               # as if "fixing" a renamed folder by hand
  path.write_text(json.dumps(meta))
  code, stderr = runner.launch([SMOKE, *STEPS, f'--workdir={run}', '--mode=eval'])
  assert code == 0, stderr[-3000:]
  assert 'meta item was changed' in stderr and _eval_steps(run) == [2]


def test_edited_config_json_that_changes_the_model_is_refused(run):
  path = run / 'config.json'
  config = json.loads(path.read_text())
  config['model']['positional'] = 'none'
  path.write_text(json.dumps(config))
  before = runner.snapshot(run)
  code, stderr = runner.launch([f'--workdir={run}', '--mode=eval'])
  assert code == 2 and 'Traceback' not in stderr
  line = stderr.strip().splitlines()[-1]
  assert line.startswith('error:') and "model.positional='sinusoidal'" in line
  assert "gives 'none'" in line
  assert runner.snapshot(run) == before
