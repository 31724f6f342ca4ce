"""launch.py's modes that read a trained run, in subprocesses on one shared copy-task smoke run:
--workdir alone is enough (the run's config.json), overrides of eval/decode settings apply
and pinned ones are refused, translate streams from a pipe (a closed stdin is one line, Ctrl-C
while it waits a quiet exit 130), --print_config writes nothing."""
import hashlib
import json
import os
import pathlib
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.run.launch_test import launch
from tests.run.launch_test import REPO
from tests.run.launch_test import SMOKE

# Subprocess runs end to end (minutes on 2 cores): `python -m pytest -m slow`.
pytestmark = pytest.mark.slow


def snapshot(folder: pathlib.Path):
  return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(folder.rglob('*')) if p.is_file()}


def last_line(result) -> str:
  return result.stderr.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A two-step copy-task smoke run that the tests copy (they may add eval/ files)."""
  folder = tmp_path_factory.mktemp('trained') / 'run'
  result = launch(SMOKE, f'--workdir={folder}', timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return folder


def eval_results(workdir: pathlib.Path):
  """{file name: metrics} of every eval JSON, without the keys that measure time."""
  results = {}
  for path in sorted((workdir / 'eval').glob('*.json')):
    metrics = json.loads(path.read_text())
    results[path.name] = {k: v for k, v in metrics.items()
                          if not any(t in k for t in ('minutes', 'seconds', 'time'))}
  return results


def test_eval_with_only_workdir_matches_eval_with_the_experiment(run):
  given = launch(SMOKE, f'--workdir={run}', '--mode=eval')
  assert given.returncode == 0, given.stderr[-3000:]
  expected = eval_results(run)
  shutil.rmtree(run / 'eval')
  alone = launch(f'--workdir={run}', '--mode=eval')
  assert alone.returncode == 0, alone.stderr[-3000:]
  assert eval_results(run) == expected and expected


def test_an_override_of_a_decode_setting_applies_without_the_experiment(run):
  result = launch(f'--workdir={run}', '--mode=eval', '--experiment.decode.method=beam',
                  '--experiment.decode.beam_size=2')
  assert result.returncode == 0, result.stderr[-3000:]
  names = list(eval_results(run))
  assert len(names) == 1 and '_beam2_' in names[0], names


def test_translate_with_only_workdir_matches_translate_with_the_experiment(run):
  lines = '5 6 7\n9 8\n4 4 5 6 7 8\n'
  given = launch(SMOKE, f'--workdir={run}', '--mode=translate', stdin=lines)
  assert given.returncode == 0, given.stderr[-3000:]
  alone = launch(f'--workdir={run}', '--mode=translate', stdin=lines)
  assert alone.returncode == 0, alone.stderr[-3000:]
  assert alone.stdout == given.stdout and len(alone.stdout.splitlines()) == 3


def test_an_override_of_a_pinned_setting_is_refused_in_one_line(run):
  before = snapshot(run)
  result = launch(f'--workdir={run}', '--mode=eval', '--experiment.model.model_dim=32',
                  timeout=120)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  line = last_line(result)
  assert line.startswith('error: --experiment.model.model_dim would change how the run'), line
  assert 'model.model_dim: 16 -> 32' in line and 'resum' not in line
  assert snapshot(run) == before


@pytest.mark.parametrize('mode', ['eval', 'translate', 'sample'])
def test_a_workdir_without_a_run_says_to_train_first(mode, tmp_path):
  workdir = tmp_path / 'empty'
  workdir.mkdir()
  result = launch(f'--workdir={workdir}', f'--mode={mode}', timeout=120, stdin='5 6 7\n')
  assert result.returncode == 2, result.stderr[-2000:]
  line = last_line(result)
  assert line.startswith(f'error: no trained run in {workdir} (no config.json): train one first')
  assert '--workdir of a trained run' in line and 'resum' not in line
  assert os.listdir(workdir) == []


def read_line_within(process, seconds: float) -> str:
  """The next stdout line of `process`, or '' if none comes within `seconds`."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
    if ready:
      return process.stdout.readline()
  return ''


def test_translate_answers_each_line_before_stdin_is_closed(run, tmp_path):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  with open(tmp_path / 'stderr.txt', 'w') as stderr:
    process = subprocess.Popen([sys.executable, 'launch.py', f'--workdir={run}',
                                '--mode=translate'], cwd=REPO, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
    try:
      process.stdin.write('5 6 7\n')
      process.stdin.flush()
      first = read_line_within(process, 180)       # build, restore and compile come first
      assert first.strip(), (tmp_path / 'stderr.txt').read_text()[-3000:]
      process.stdin.write('9 8\n')
      process.stdin.flush()
      second = read_line_within(process, 60)       # same bucket: no new compilation
      assert second.strip(), (tmp_path / 'stderr.txt').read_text()[-3000:]
      assert process.poll() is None                # still waiting for more input
      process.stdin.close()
      assert process.wait(timeout=60) == 0
    finally:
      process.kill()
  piped = launch(f'--workdir={run}', '--mode=translate', stdin='5 6 7\n9 8\n')
  assert piped.stdout == first + second


def test_translate_with_stdin_closed_is_one_line(run):
  before = snapshot(run)
  command = (f'{shlex.quote(sys.executable)} launch.py --workdir={shlex.quote(str(run))} '
             '--mode=translate <&-')                 # fd 0 closed: Python's sys.stdin is None
  result = subprocess.run(['bash', '-c', command], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONUNBUFFERED='1'), timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert last_line(result) == ('error: --mode=translate reads standard input, but it is closed: '
                               'give --input=FILE, or pipe the lines in (e.g. `< lines.txt` or '
                               '`cat lines.txt |`)')
  assert snapshot(run) == before


def wait_for_text(path: pathlib.Path, text: str, process, seconds: float) -> bool:
  """Whether `text` shows up in the file `path` within `seconds`, while `process` runs."""
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline and process.poll() is None:
    if text in path.read_text():
      return True
    time.sleep(0.2)
  return text in path.read_text()


@pytest.mark.parametrize('translate_first', [False, True],
                         ids=['before_any_line', 'after_a_translation'])
def test_ctrl_c_while_translate_waits_for_input_exits_130_quietly(run, tmp_path, translate_first):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  log = tmp_path / 'stderr.txt'
  with open(log, 'w') as stderr:
    process = subprocess.Popen([sys.executable, 'launch.py', f'--workdir={run}',
                                '--mode=translate'], cwd=REPO, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
    try:
      # Printed just before translate first waits for stdin (after jax has loaded).
      assert wait_for_text(log, 'reading source sentences from stdin', process, 180), (
          log.read_text()[-3000:])
      if translate_first:          # the model is built and restored: waiting for line two
        process.stdin.write('5 6 7\n')
        process.stdin.flush()
        assert read_line_within(process, 180).strip(), log.read_text()[-3000:]
      time.sleep(0.5)
      process.send_signal(signal.SIGINT)
      assert process.wait(timeout=60) == 130, log.read_text()[-3000:]
    finally:
      process.kill()
      process.wait()
  text = log.read_text()
  assert 'Traceback' not in text and 'KeyboardInterrupt' not in text, text[-3000:]
  assert not [line for line in text.splitlines() if line.startswith('error:')], text[-3000:]


def test_print_config_of_a_run_lists_every_field_and_writes_nothing(run):
  before = snapshot(run)
  result = launch(f'--workdir={run}', '--print_config', '--experiment.decode.beam_size=3',
                  timeout=60)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  for expected in ('train.num_steps = 2  # int', 'decode.beam_size = 3  # int',
                   'model.model_dim = 16  # int', "data.dataset = 'copy'  # str",
                   'data.bucket_lengths = ()  # tuple', 'model.head_dim = None  # int or None',
                   'optim.learning_rate = 0.002  # float', 'data.pack = False  # bool'):
    assert expected in lines, (expected, result.stdout)
  assert snapshot(run) == before


def test_print_config_of_an_experiment_applies_overrides_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'never'
  result = launch(SMOKE, '--experiment.train.num_steps=7', f'--workdir={workdir}',
                  '--print_config', timeout=60)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'train.num_steps = 7  # int' in result.stdout.splitlines()
  assert not workdir.exists()


def test_a_wrong_type_points_to_print_config():
  result = launch(SMOKE, '--experiment.train.num_steps=two', timeout=60)
  assert result.returncode == 2
  line = last_line(result)
  assert "invalid literal for int()" in line and '--print_config' in line, line
  assert '--helpfull' not in line
