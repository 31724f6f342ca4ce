"""transformer_jax/run/arguments.py: what the command line reads from argv before absl does
(help and version flags, -h, the nearest spelling, the version line)."""
import importlib.metadata

import pytest

from transformer_jax.run import arguments


@pytest.mark.parametrize('argv, asked', [
    (['p', '--help'], True), (['p', '-help'], True), (['p', '-h'], True), (['p', '-?'], True),
    (['p', '--helpshort'], True), (['p', '--helpfull'], True),
    (['p', '--workdir=w', '--help'], True),
    (['p'], False), (['p', '--workdir=help'], False), (['p', '--', '--help'], False),
    (['--help'], False),                      # the program's own name is no flag
])
def test_help_is_asked_by_any_of_absls_spellings_and_h(argv, asked):
  assert arguments.asks(argv, arguments.HELP_FLAGS) == asked


def test_h_becomes_absls_help_flag_only_among_the_flags():
  assert arguments.long_help(['p', '-h', '--workdir=w']) == ['p', '--help', '--workdir=w']
  assert arguments.long_help(['p', '--', '-h']) == ['p', '--', '-h']


@pytest.mark.parametrize('word, expected', [
    ('translat', 'translate'), ('TRAIN', 'train'), ('evl', 'eval'), ('xyz', None),
])
def test_nearest_is_the_closest_spelling_or_none(word, expected):
  modes = ('train', 'eval', 'translate', 'sample', 'visualize', 'report', 'archive', 'export')
  assert arguments.nearest(word, modes) == expected


def test_an_alias_counts_when_it_is_the_closer_spelling():
  known = ('experiment', 'print_config', 'workdir')
  aliases = {'config': 'experiment'}
  assert arguments.nearest('config', known, aliases) == 'experiment'
  assert arguments.nearest('print_confg', known, aliases) == 'print_config'
  assert arguments.nearest('config', known) == 'print_config'


def test_the_version_line_comes_from_metadata():
  line = arguments.version_line('transformer-jax', '1.2.3')
  assert line == (f"transformer-jax 1.2.3 (jax {importlib.metadata.version('jax')}, "
                  f"flax {importlib.metadata.version('flax')})")
