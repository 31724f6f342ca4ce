"""transformer_jax/cli.py: the `transformer-jax <mode>` command maps its first word to --mode,
and pyproject.toml installs it; the checks on flags alone (a flag the mode does not use, a
closed stdin, an unknown flag) and on what this machine can run (cuDNN attention)."""
import io
import os
import pathlib
import re
import sys
import tomllib

from absl.testing import flagsaver
import ml_collections
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax import cli
from transformer_jax.run import overrides as cli_config

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('mode', ['train', 'eval', 'translate', 'sample', 'visualize', 'report'])
def test_first_word_becomes_the_mode(mode):
  argv = ['transformer-jax', mode, '--workdir=runs/x', '--experiment.decode.beam_size=2']
  assert cli.subcommand_argv(argv) == ['transformer-jax', f'--mode={mode}', '--workdir=runs/x',
                                       '--experiment.decode.beam_size=2']


def test_every_mode_is_a_command_word():
  assert set(cli.mode_words()) == set(cli.flags.FLAGS['mode'].parser.enum_values)


def test_without_a_word_the_flags_are_kept_as_launch_py_takes_them():
  for argv in (['transformer-jax'], ['transformer-jax', '--mode=eval', '--workdir=w'],
               ['transformer-jax', '--help']):
    assert cli.subcommand_argv(argv) == argv


def test_the_same_mode_twice_is_allowed():
  assert cli.subcommand_argv(['p', 'eval', '--mode=eval']) == ['p', '--mode=eval', '--mode=eval']


@pytest.mark.parametrize('argv, expected', [
    (['p', 'trian'], "unknown command 'trian': give one of train, eval"),
    (['p', 'eval', '--mode=train'], "the command 'eval' and a --mode flag both name the mode"),
    (['p', 'eval', '--mode', 'train'], 'drop --mode'),
])
def test_a_wrong_word_is_one_line_with_the_fix(argv, expected):
  with pytest.raises(UserError, match=expected):
    cli.subcommand_argv(argv)


def test_pyproject_installs_the_command_and_reads_the_pins_from_requirements_txt():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())
  module, _, function = project['project']['scripts']['transformer-jax'].partition(':')
  assert (module, function) == ('transformer_jax.cli', 'console_main')
  assert callable(getattr(cli, function))
  # One source of truth for the pins: requirements.txt, read dynamically.
  assert 'dependencies' not in project['project']
  assert project['project']['dynamic'] == ['dependencies']
  assert project['tool']['setuptools']['dynamic']['dependencies'] == {'file': ['requirements.txt']}
  pins = [line for line in (REPO / 'requirements.txt').read_text().splitlines()
          if line.strip() and not line.startswith('#')]
  assert all('==' in line for line in pins) and any(p.startswith('tensorboard==') for p in pins)
  assert set(project['tool']['setuptools']['packages']['find']['include']) == {
      'transformer_jax*', 'experiments*'}


def test_every_flag_of_the_mode_table_is_defined_and_every_mode_is_one():
  for name, users in cli.FLAG_MODES.items():
    assert name in cli.flags.FLAGS, name
    assert set(users) <= set(cli.mode_words()) - {'report', 'archive'}, (name, users)


@pytest.fixture
def parsed():
  """The flags marked parsed, as main() leaves them (defaults but what a test gives)."""
  was_parsed = cli.flags.FLAGS.is_parsed()
  cli.flags.FLAGS.mark_as_parsed()
  yield
  if not was_parsed:
    cli.flags.FLAGS.unparse_flags()


@pytest.mark.parametrize('given, mode, expected', [
    ({'step': '2'}, 'train', '--step does not apply to --mode=train: it is for --mode=eval|'),
    ({'input': 'in.txt'}, 'train', '--input does not apply to --mode=train'),
    ({'input': 'in.txt'}, 'eval', '--input does not apply to --mode=eval'),
    ({'export_dir': 'out'}, 'eval', '--export_dir does not apply to --mode=eval'),
    ({'buffer_lines': '4'}, 'sample', '--buffer_lines does not apply to --mode=sample'),
    ({'multihost': 'true'}, 'translate', '--multihost does not apply to --mode=translate'),
    ({'buffer_lines': '4', 'input': 'in.txt'}, 'translate',
     '--buffer_lines applies to standard input only: --input=in.txt is a file'),
    ({'process_id': '1'}, 'train', '--process_id only applies to --multihost'),
])
def test_a_flag_the_mode_does_not_use_is_one_line_with_the_fix(given, mode, expected, parsed):
  with flagsaver.as_parsed(mode=mode, **given):
    with pytest.raises(UserError, match=re.escape(expected)):
      cli.check_mode_flags(mode)


@pytest.mark.parametrize('given, mode', [
    ({'step': '2'}, 'eval'), ({'step': 'best', 'export_dir': 'out'}, 'export'),
    ({'input': 'in.txt', 'step': '2'}, 'visualize'), ({'buffer_lines': '4'}, 'translate'),
    ({'multihost': 'true', 'process_id': '0'}, 'eval'), ({'multihost': 'false'}, 'sample'),
    ({}, 'train'),
])
def test_the_flags_a_mode_uses_pass(given, mode, monkeypatch, parsed):
  monkeypatch.setattr(sys, 'stdin', io.StringIO('5 6 7\n'))
  with flagsaver.as_parsed(mode=mode, **given):
    cli.check_mode_flags(mode)


@pytest.mark.parametrize('mode, given', [('translate', {}), ('sample', {'input': '-'})])
def test_reading_a_closed_stdin_is_refused_before_anything_loads(mode, given, monkeypatch,
                                                                 parsed):
  monkeypatch.setattr(sys, 'stdin', None)       # what Python makes of a closed fd 0 (`<&-`)
  assert cli.stdin_is_closed()
  with flagsaver.as_parsed(mode=mode, **given):
    with pytest.raises(UserError, match=f'--mode={mode} reads standard input, but it is closed: '
                       'give --input=FILE, or pipe the lines in'):
      cli.check_mode_flags(mode)
  with flagsaver.as_parsed(mode='sample'):
    cli.check_mode_flags('sample')              # sample without --input reads nothing


def test_an_empty_stdin_is_not_a_closed_one(monkeypatch):
  with open(os.devnull) as devnull:
    monkeypatch.setattr(sys, 'stdin', devnull)
    assert not cli.stdin_is_closed()
  monkeypatch.setattr(sys, 'stdin', io.StringIO(''))
  assert not cli.stdin_is_closed()


def test_cudnn_attention_needs_a_gpu_and_a_half_precision_dtype():
  config = ml_collections.ConfigDict({'model': {'attention_impl': 'cudnn', 'dtype': 'float32'}})
  with pytest.raises(UserError, match=r"needs a GPU .* JAX runs on cpu here: set "
                     r'--experiment.model.attention_impl=auto'):
    cli.check_attention_impl(config, 'train', 'cpu')
  with pytest.raises(UserError, match=r'run it on a machine with a GPU'):
    cli.check_attention_impl(config, 'eval', 'cpu')
  with pytest.raises(UserError, match=r'needs model.dtype=bfloat16'):
    cli.check_attention_impl(config, 'train', 'gpu')
  config.model.dtype = 'bfloat16'
  cli.check_attention_impl(config, 'train', 'gpu')
  for impl in ('auto', 'xla', 'explicit'):
    config.model.attention_impl = impl
    cli.check_attention_impl(config, 'train', 'cpu')


@pytest.mark.parametrize('name, expected', [
    ('workdirr', 'unknown flag --workdirr (did you mean --workdir?): fix its spelling'),
    ('export_dri', 'did you mean --export_dir?'),
    ('nosuchflag', 'unknown flag --nosuchflag: fix its spelling'),
])
def test_an_unknown_flag_names_the_nearest_one(name, expected):
  error = cli.flags.UnrecognizedFlagError(name, '1')
  assert expected in cli_config.describe_flag_error(error, ['launch.py', f'--{name}=1'])


def test_library_warnings_pass_without_their_tracebacks():
  import logging as std_logging
  import sys as std_sys
  from transformer_jax import cli as cli_module
  try:
    raise OSError(28, 'No space left on device')
  except OSError:
    exc_info = std_sys.exc_info()
  record = std_logging.LogRecord('orbax', std_logging.ERROR, '/site-packages/orbax/x.py', 1,
                                 'write failed', None, exc_info)
  assert cli_module._OwnInfoOnly().filter(record)          # the message still shows ...
  assert record.exc_info is None and record.exc_text is None   # ... its traceback does not
  info = std_logging.LogRecord('orbax', std_logging.INFO, '/site-packages/orbax/x.py', 1,
                               'chatter', None, None)
  assert not cli_module._OwnInfoOnly().filter(info)
