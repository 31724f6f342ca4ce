"""launch.py end to end in subprocesses: one-line errors that leave the workdir as it was,
and a two-step run that resumes from its checkpoint."""
import os
import re
import signal
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SMOKE = '--experiment=experiments/copy_task.py:smoke'


def launch(*args, timeout=300, stdin=None):
  env = dict(os.environ, PYTHONUNBUFFERED='1')    # keeps conftest's 8 host devices
  return subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env, input=stdin,
                        capture_output=True, text=True, timeout=timeout)


def snapshot(folder: pathlib.Path):
  return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob('*'))


@pytest.fixture
def workdir(tmp_path):
  folder = tmp_path / 'run'
  folder.mkdir()
  (folder / 'notes.txt').write_text('a file the user keeps here\n')
  return folder


BAD_INPUTS = [
    (['--experiment=experiments/no_such.py'], 'unknown experiment file'),
    ([SMOKE, '--experiment.model.num_layerz=3'], 'did you mean num_layers'),
    ([SMOKE, '--experiment.train.num_steps=two'], "invalid literal for int() with base 10: 'two'"),
    ([SMOKE, '--experiment.model.positional=spiral'], "positional='spiral'"),
    (['--experiment=experiments/multi30k.py:smoke', '--experiment.data.raw_dir=/no/such/dir'],
     'set --experiment.data.raw_dir'),
    (['--experiment=experiments/wmt14.py:base', '--experiment.data.data_dir=/no/tfds',
      '--experiment.data.raw_dir=/no/wmt14'],
     'wmt14_translate/de-en is not prepared in /no/tfds and data.raw_dir /no/wmt14 does not '
     'exist: set --experiment.data.raw_dir to the folder holding europarl-v7.de-en.{de,en}'),
    # 128 tokens at bucket length 32 give 4 rows: not divisible over the 8 host devices.
    ([SMOKE, '--experiment.data.tokens_per_batch=128'], 'batch_multiple=8'),
]


@pytest.mark.parametrize('args, expected', BAD_INPUTS)
def test_bad_input_is_one_line_and_leaves_workdir_alone(args, expected, workdir):
  before = snapshot(workdir)
  result = launch(*args, f'--workdir={workdir}', timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and expected in last, last
  assert 'Traceback' not in result.stderr
  assert snapshot(workdir) == before


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_two_step_launch_resumes_and_refuses_another_config(workdir):
  first = launch(SMOKE, f'--workdir={workdir}')
  assert first.returncode == 0, first.stderr[-3000:]
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2']
  second = launch(SMOKE, f'--workdir={workdir}', '--experiment.train.num_steps=4')
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'resumed from checkpoint step 2' in second.stderr
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['2', '4']
  before = snapshot(workdir)
  other = launch(SMOKE, f'--workdir={workdir}', '--experiment.model.model_dim=32')
  assert other.returncode == 2
  assert 'model.model_dim: 16 -> 32' in other.stderr.strip().splitlines()[-1]
  assert snapshot(workdir) == before
  evaluated = launch(SMOKE, f'--workdir={workdir}', '--mode=eval')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  # The smoke experiment's eval.max_batches=1 scores 8 of the 16 sequences, and says so.
  # File names end in a digest of the settings that change the output (modes.output_settings).
  names = lambda: sorted(re.sub(r'_[0-9a-f]{8}\.json$', '.json', p.name)
                         for p in (workdir / 'eval').glob('*.json'))
  assert names() == ['validation_step4_avg1_greedy_partial8of16.json']
  assert 'partial evaluation: 8 of the 16 examples' in evaluated.stderr
  # Other search settings add their own files; the first result stays as it was.
  written = set(snapshot(workdir / 'eval'))
  rescored = launch(SMOKE, f'--workdir={workdir}', '--mode=eval',
                    '--experiment.decode.method=beam', '--experiment.decode.alpha=1')
  assert rescored.returncode == 0, rescored.stderr[-3000:]
  assert names() == ['validation_step4_avg1_beam4_alpha1_partial8of16.json',
                     'validation_step4_avg1_greedy_partial8of16.json']
  assert written < set(snapshot(workdir / 'eval'))
  best = launch(SMOKE, f'--workdir={workdir}', '--mode=eval', '--step=best')
  assert best.returncode == 2, best.stderr[-3000:]
  assert 'was trained without train.keep_best: give --step=N' in best.stderr.splitlines()[-1]
  translated = launch(SMOKE, f'--workdir={workdir}', '--mode=translate', stdin='5 6 7\n9 8\n')
  assert translated.returncode == 0, translated.stderr[-3000:]
  assert len(translated.stdout.strip().splitlines()) == 2


def start_long_training(workdir):
  """A smoke training of 100,000 steps (no checkpoint or eval on the way) in the background."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  args = [sys.executable, 'launch.py', SMOKE, f'--workdir={workdir}',
          '--experiment.train.num_steps=100000', '--experiment.train.checkpoint_every_steps=100000',
          '--experiment.train.eval_every_steps=100000']
  return subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_sigterm_saves_a_checkpoint_then_the_run_resumes_from_it(workdir):
  process = start_long_training(workdir)
  try:
    for line in process.stderr:          # progress lines go to stderr (absl logging)
      if 'step 3/100000' in line:
        process.send_signal(signal.SIGTERM)
        break
    rest = process.communicate(timeout=120)[1]
  finally:
    process.kill()
  assert process.returncode == 0, rest[-2000:]
  saved = [int(s) for s in os.listdir(workdir / 'checkpoints')]
  assert len(saved) == 1 and saved[0] >= 3
  # Saved at once: a preempted job has seconds, not an evaluation's minutes.
  assert '"split": "validation"' not in (workdir / 'metrics.jsonl').read_text()
  resumed = launch(SMOKE, f'--workdir={workdir}', f'--experiment.train.num_steps={saved[0] + 2}')
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert f'resumed from checkpoint step {saved[0]}' in resumed.stderr


def test_a_second_training_into_a_busy_workdir_is_refused(workdir):
  first = start_long_training(workdir)
  try:
    for line in first.stderr:
      if 'step 2/100000' in line:
        break
    before = snapshot(workdir / 'checkpoints')
    second = launch(SMOKE, f'--workdir={workdir}', timeout=120)
    assert second.returncode == 2, second.stderr[-2000:]
    last = second.stderr.strip().splitlines()[-1]
    assert f'is being trained by pid {first.pid} on ' in last, last
    assert snapshot(workdir / 'checkpoints') == before
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
  assert first.returncode == 0
