"""transformer_jax/cli.py: the `transformer-jax <mode>` command maps its first word to --mode,
and pyproject.toml installs it."""
import pathlib
import tomllib

import pytest

from transformer_jax import cli
from transformer_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


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
