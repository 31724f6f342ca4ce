"""transformer_jax/cli.py: the `transformer-jax <mode>` command maps its first word to --mode,
and pyproject.toml installs it; the checks on flags alone (a flag the mode does not use, a
closed stdin, an unknown flag or value: run/preflight.py, run/overrides.py) and on what this
machine can run (cuDNN attention). The entry points themselves: cli_entry_points_test.py."""
import ast
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
from transformer_jax.run import preflight

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
    (['p', 'trian'], "unknown command 'trian': did you mean train? (give one of train, eval"),
    (['p', 'nothing'], "unknown command 'nothing': give one of train, eval"),
    (['p', 'eval', '--mode=train'], "the command 'eval' and a --mode flag both name the mode"),
    (['p', 'eval', '--mode', 'train'], 'drop --mode'),
])
def test_a_wrong_word_is_one_line_with_the_fix(argv, expected):
  with pytest.raises(UserError, match=re.escape(expected)):
    cli.subcommand_argv(argv)


def test_pyproject_installs_the_command():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())
  module, _, function = project['project']['scripts']['transformer-jax'].partition(':')
  assert (module, function) == ('transformer_jax.cli', 'console_main')
  assert callable(getattr(cli, function))


def test_every_flag_of_the_preflight_tables_is_defined_and_every_mode_is_one():
  for name, users in preflight.FLAG_MODES.items():
    assert name in cli.flags.FLAGS, name
    assert set(users) <= set(cli.mode_words()) - {'report', 'archive'}, (name, users)
  for name in (*preflight.MULTIHOST_FLAGS, *preflight.RUN_ONLY_FLAGS,
               *preflight.SWEEP_ONLY_FLAGS, 'sweep'):
    assert name in cli.flags.FLAGS, name


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
  assert preflight.stdin_is_closed()
  with flagsaver.as_parsed(mode=mode, **given):
    with pytest.raises(UserError, match=f'--mode={mode} reads standard input, but it is closed: '
                       'give --input=FILE, or pipe the lines in'):
      cli.check_mode_flags(mode)
  with flagsaver.as_parsed(mode='sample'):
    cli.check_mode_flags('sample')              # sample without --input reads nothing


def test_an_empty_stdin_is_not_a_closed_one(monkeypatch):
  with open(os.devnull) as devnull:
    monkeypatch.setattr(sys, 'stdin', devnull)
    assert not preflight.stdin_is_closed()
  monkeypatch.setattr(sys, 'stdin', io.StringIO(''))
  assert not preflight.stdin_is_closed()


def test_cudnn_attention_needs_a_gpu_and_a_half_precision_dtype():
  config = ml_collections.ConfigDict({'model': {'attention_impl': 'cudnn', 'dtype': 'float32'}})
  with pytest.raises(UserError, match=r"needs a GPU .* JAX runs on cpu here: set "
                     r'--experiment.model.attention_impl=auto'):
    preflight.check_attention_impl(config, 'train', 'cpu')
  with pytest.raises(UserError, match=r'run it on a machine with a GPU'):
    preflight.check_attention_impl(config, 'eval', 'cpu')
  with pytest.raises(UserError, match=r'needs model.dtype=bfloat16'):
    preflight.check_attention_impl(config, 'train', 'gpu')
  config.model.dtype = 'bfloat16'
  preflight.check_attention_impl(config, 'train', 'gpu')
  for impl in ('auto', 'xla', 'explicit'):
    config.model.attention_impl = impl
    preflight.check_attention_impl(config, 'train', 'cpu')


@pytest.mark.parametrize('name, expected', [
    ('workdirr', 'unknown flag --workdirr: did you mean --workdir? (--help lists the flags'),
    ('export_dri', 'unknown flag --export_dri: did you mean --export_dir?'),
    ('Workdir', 'did you mean --workdir?'),
    ('config', 'unknown flag --config: did you mean --experiment?'),    # others' name for it
    ('confg', 'did you mean --experiment?'),
    ('print_confg', 'did you mean --print_config?'),
    ('model_dir', 'did you mean --workdir?'),
    ('config.model.num_layers', 'did you mean --experiment.model.num_layers?'),
    ('experimnt.train.num_steps', 'did you mean --experiment.train.num_steps?'),
    ('versoin', 'did you mean --version?'),
    ('nosuchflag', 'unknown flag --nosuchflag: fix its spelling (--help lists the flags'),
])
def test_an_unknown_flag_names_the_nearest_one(name, expected):
  error = cli.flags.UnrecognizedFlagError(name, '1')
  assert expected in cli_config.describe_flag_error(error, ['launch.py', f'--{name}=1'])


def enum_error(name: str, value: str) -> Exception:
  """The error absl raises for `--name=value` (its parser's message, as absl wraps it)."""
  try:
    cli.flags.FLAGS[name].parser.parse(value)
  except ValueError as e:
    return cli.flags.IllegalFlagValueError(f'flag --{name}={value}: {e}')
  raise AssertionError(f'{value!r} parsed')


@pytest.mark.parametrize('value, expected', [
    ('translat', 'bad value --mode=translat: did you mean translate? (--mode takes one of '
                 'train, eval, translate, sample, visualize, report, archive, export)'),
    ('Eval', 'bad value --mode=Eval: did you mean eval?'),
    ('xyz', 'bad value --mode=xyz: give one of train, eval, translate, sample, visualize, '
            'report, archive, export'),
])
def test_a_bad_enum_value_names_the_nearest_allowed_one(value, expected):
  error = enum_error('mode', value)
  assert expected in cli_config.describe_flag_error(error, ['launch.py', f'--mode={value}'])


def test_the_command_line_is_small_and_its_helpers_read_no_flags():
  lines = (REPO / 'transformer_jax' / 'cli.py').read_text().splitlines()
  assert len(lines) < 400
  for name in ('preflight', 'arguments', 'multihost', 'exit_codes'):   # only cli.py reads flags
    tree = ast.parse((REPO / 'transformer_jax' / 'run' / f'{name}.py').read_text())
    imported = {alias.name for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {'flags', 'absl.flags', 'jax.config'}, (name, imported)


def test_library_warnings_pass_without_their_tracebacks():
  import logging as std_logging
  import sys as std_sys
  from transformer_jax.evaluation import console   # the filter of the CLI's absl handler
  try:
    raise OSError(28, 'No space left on device')
  except OSError:
    exc_info = std_sys.exc_info()
  record = std_logging.LogRecord('orbax', std_logging.ERROR, '/site-packages/orbax/x.py', 1,
                                 'write failed', None, exc_info)
  assert console.OwnInfoOnly().filter(record)          # the message still shows ...
  assert record.exc_info is None and record.exc_text is None   # ... its traceback does not
  info = std_logging.LogRecord('orbax', std_logging.INFO, '/site-packages/orbax/x.py', 1,
                               'chatter', None, None)
  assert not console.OwnInfoOnly().filter(info)
