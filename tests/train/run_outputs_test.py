"""What a training run tells its user and leaves behind: where its results are and what to run
next, a relaunch of a finished run that writes nothing, progress lines when called from Python,
and its config, hyper-parameters and example translations in TensorBoard."""
import contextlib
import hashlib
import logging
import os
import pathlib
import subprocess
import sys

import pytest
from absl import logging as absl_logging
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from transformer_jax.base.errors import UserError
from transformer_jax.evaluation import console
from transformer_jax.experiments import copy_task
from transformer_jax.train import trainer
from transformer_jax.train import validation

REPO = pathlib.Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def absl_messages():
  """The messages logged through absl (ours, at INFO and above) while the block runs."""
  messages = []

  class Keep(logging.Handler):

    def emit(self, record):
      messages.append(record.getMessage())

  logger, handler = absl_logging.get_absl_logger(), Keep(logging.INFO)
  logger.addHandler(handler)
  try:
    yield messages
  finally:
    logger.removeHandler(handler)


def snapshot(folder: pathlib.Path):
  """Every path under `folder` with its content hash and modification time."""
  return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(
      p.read_bytes()).hexdigest() if p.is_file() else 'dir') for p in sorted(folder.rglob('*'))}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished copy-task smoke run (2 steps, evaluated at 2) and what it logged."""
  workdir = tmp_path_factory.mktemp('run')
  with absl_messages() as messages:
    metrics = trainer.train_and_evaluate(copy_task.get_config('smoke'), str(workdir))
  assert metrics['loss'] > 0
  return workdir, messages


def test_a_finished_run_ends_by_saying_where_its_results_are_and_what_to_run_next(trained):
  workdir, messages = trained
  [block] = [m.splitlines() for m in messages if m.startswith('training done')]
  assert block[0].startswith('training done at step 2 of 2 (validation at step 2: loss ')
  assert f'  run folder    {workdir}' in block
  assert f'  metrics       {workdir}/metrics.jsonl' in block
  assert f'  TensorBoard   {workdir}/tensorboard' in block
  commands = block[block.index('next:') + 1:]
  assert [c.split(' --workdir')[0].split()[-1] for c in commands[:2]] == ['eval', 'translate']
  assert all(f'--workdir={workdir}' in c for c in commands[:2])
  assert commands[2] == f'  tensorboard --logdir {workdir}/tensorboard'


def test_relaunching_a_finished_run_says_so_and_writes_nothing(trained):
  workdir, _ = trained
  before = snapshot(workdir)
  with absl_messages() as messages:
    assert trainer.train_and_evaluate(copy_task.get_config('smoke'), str(workdir)) == {}
  assert snapshot(workdir) == before
  said = [m for m in messages if 'already trained' in m]
  assert len(said) == 1, messages
  assert said[0].startswith(f'{workdir} is already trained to step 2 (train.num_steps=2): ')
  # Worded for the caller: `config.train.num_steps = 4` from Python (see the test below).
  assert console.setting('train.num_steps', 4) in said[0]
  assert f'eval --workdir={workdir}' in said[0] and f'translate --workdir={workdir}' in said[0]
  assert not [m for m in messages if 'training copy from step' in m]


def launch(*args):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  result = subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  return result.returncode, result.stderr


def test_the_command_line_relaunch_of_a_finished_run_exits_0_and_names_the_flag(trained):
  workdir, _ = trained
  before = snapshot(workdir)
  returncode, stderr = launch('--experiment=experiments/copy_task.py:smoke', f'--workdir={workdir}')
  assert returncode == 0, stderr[-3000:]
  assert snapshot(workdir) == before
  assert 'is already trained to step 2' in stderr
  assert '--experiment.train.num_steps=4' in stderr and '--mode=eval' in stderr
  assert 'training from step' not in stderr and 'from step 2 to 2' not in stderr


PYTHON_TRAINING = '''
import sys
from transformer_jax.experiments import copy_task
from transformer_jax.run import modes
modes.train(copy_task.get_config('smoke'), sys.argv[1])
'''


def test_training_from_python_shows_progress_and_words_fixes_for_python(tmp_path):
  """No absl app.run: INFO used to be dropped, and a warning named a command-line flag."""
  env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1')
  result = subprocess.run([sys.executable, '-c', PYTHON_TRAINING, str(tmp_path / 'run')],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert any('step 1/2  loss' in line for line in lines), result.stderr[-3000:]
  assert any('step 2/2  loss' in line and 'steps/s' in line for line in lines)
  assert any('training done at step 2 of 2' in line for line in lines)
  warnings = [line for line in lines if line.startswith('WARNING')]
  assert any('set config.eval.max_batches = 0 for all' in w for w in warnings), warnings
  assert not [w for w in warnings if '--' in w], warnings


def read_events(workdir):
  accumulator = event_accumulator.EventAccumulator(
      str(workdir / 'tensorboard'), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def text_of(accumulator, tag):
  """{step: text} of a text summary written with tensorboardX's add_text."""
  return {event.step: event.tensor_proto.string_val[0].decode('utf-8')
          for event in accumulator.Tensors(f'{tag}/text_summary')}


def test_tensorboard_holds_the_config_the_hparams_and_example_translations(trained):
  workdir, _ = trained
  events = read_events(workdir)
  config_text = text_of(events, 'config')
  assert list(config_text) == [0]
  assert '"num_steps": 2' in config_text[0] and '"dataset": "copy"' in config_text[0]
  content = events.PluginTagToContent('hparams')['_hparams_/session_start_info']
  hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
  assert hparams['train.num_steps'].number_value == 2
  assert hparams['data.dataset'].string_value == 'copy'
  assert hparams['decode.method'].string_value == 'greedy'
  examples = text_of(events, 'validation/examples')
  assert list(examples) == [2]
  rows = examples[2].splitlines()
  assert rows[0] == '| # | source | reference | hypothesis |'
  assert len(rows) == 2 + 3                           # eval.tensorboard_examples=3
  for row in rows[2:]:
    number, source, reference, hypothesis = [cell.strip() for cell in row.strip('|').split('|')]
    assert source == reference                       # the copy task's target is its input
    assert hypothesis and number in ('1', '2', '3')


@pytest.mark.parametrize('value', [-1, 101, 2.5])
def test_tensorboard_examples_is_range_checked(value):
  config = copy_task.get_config('smoke')
  config.eval.tensorboard_examples = 3
  validation.check_config(config)
  config = config.to_dict()
  config['eval']['tensorboard_examples'] = value
  with pytest.raises(UserError, match=r'eval.tensorboard_examples=.* is out of range .*: set '
                     r'--experiment.eval.tensorboard_examples to an integer in \[0, 100\]'):
    validation.check_config(config)
