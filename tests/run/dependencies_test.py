"""The dependencies: compatible ranges in pyproject.toml, the exact tested pins in
requirements.txt, one consistent with the other; the test tools in the `test` extra; the set-up
command that README gives and .ci/run runs; the GPU install line resolving (slow)."""
import json
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = pathlib.Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
TEST_TOOLS = ('pytest', 'pytest-xdist', 'import-linter')
# README's test set-up, run verbatim by .ci/run: the exact pins, the package with its test extra.
TEST_COMMAND = "pip install -q -r requirements.txt -e '.[test]' && python -m pytest -q"
# Extras that requirements.txt leaves out on purpose (see their comments in pyproject.toml).
UNPINNED_EXTRAS = ('profile',)


def requirement_lines(path):
  """The lines of a requirements file that are not blank or comments."""
  lines = (line.split('#', 1)[0].strip() for line in path.read_text().splitlines())
  return [line for line in lines if line]


def pins():
  """{canonical name: exact version} from requirements.txt."""
  found = {}
  for line in requirement_lines(REPO / 'requirements.txt'):
    requirement = Requirement(line)
    name = canonicalize_name(requirement.name)
    assert name not in found, f'{name} is pinned twice'
    found[name] = requirement
  return found


def declared(*extras):
  """{canonical name: Requirement} of the dependencies and the given extras of pyproject.toml."""
  lines = list(PROJECT.get('dependencies', []))
  for extra in extras:
    lines += PROJECT.get('optional-dependencies', {}).get(extra, [])
  return {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines}


def pinned_version(requirement):
  (specifier,) = requirement.specifier
  return specifier.version


def test_requirements_txt_pins_each_package_exactly():
  for name, requirement in pins().items():
    specifiers = list(requirement.specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == '==', (
        f'requirements.txt: {requirement} is not one exact pin (name==version)')
    assert '*' not in specifiers[0].version and not requirement.marker, requirement


def test_pyproject_declares_ranges_not_pins_or_a_file():
  assert 'dependencies' not in PROJECT.get('dynamic', []), (
      'pyproject.toml must list its dependencies (ranges), not read requirements.txt')
  assert PROJECT.get('dependencies'), 'pyproject.toml declares no dependencies'
  for extra in ['', *PROJECT.get('optional-dependencies', {})]:
    for name, requirement in declared(*([extra] if extra else [])).items():
      operators = {s.operator for s in requirement.specifier}
      assert '>=' in operators and not operators & {'==', '==='}, (
          f'pyproject.toml: {requirement} should be a range from the tested version (>=x,<y)')


def test_every_pin_lies_in_its_range_and_every_dependency_is_pinned():
  ranges, pinned = declared('test'), pins()
  assert sorted(set(ranges) - set(pinned)) == [], 'in pyproject.toml but not pinned'
  assert sorted(set(pinned) - set(ranges)) == [], 'pinned but not a dependency in pyproject.toml'
  outside = [f'{pinned[name]} is outside {ranges[name]}' for name in ranges
             if not ranges[name].specifier.contains(pinned_version(pinned[name]))]
  assert outside == []


def test_test_tools_are_the_test_extra_and_grain_is_gone():
  runtime, test = declared(), declared('test')
  for tool in TEST_TOOLS:
    assert tool in test and tool not in runtime, tool
  assert 'safetensors' in runtime
  assert 'grain' not in declared(*PROJECT.get('optional-dependencies', {})) and 'grain' not in pins()
  imports = re.compile(r'^\s*(import grain\b|from grain\b)', re.MULTILINE)
  sources = [*REPO.glob('transformer_jax/**/*.py'), *REPO.glob('tests/**/*.py'),
             *REPO.glob('benchmarks/**/*.py'), REPO / 'launch.py']
  assert [str(p) for p in sources if imports.search(p.read_text())] == []


def test_extras_left_out_of_requirements_txt_are_named():
  extras = set(PROJECT.get('optional-dependencies', {}))
  assert extras == {'test', *UNPINNED_EXTRAS}, 'a new extra: pin it or add it to UNPINNED_EXTRAS'


def test_ci_runs_the_test_command_with_the_pins_and_the_test_extra():
  ci = [line.strip() for line in (REPO / '.ci' / 'run').read_text().splitlines()]
  commands = [line for line in ci if line and not line.startswith('#')]
  assert commands[-1] == TEST_COMMAND, commands
  words = shlex.split(TEST_COMMAND)
  assert words[words.index('-r') + 1] == 'requirements.txt' and '.[test]' in words


def test_readme_gives_the_test_command_that_ci_runs():
  readme = [line.strip() for line in (REPO / 'README.md').read_text().splitlines()]
  assert TEST_COMMAND in readme, f'README.md should give the test set-up as: {TEST_COMMAND}'


# pip's messages when it cannot reach an index (as opposed to a requirement that cannot be met).
UNREACHABLE = re.compile(
    r'NewConnectionError|Failed to establish a new connection|Temporary failure in name '
    r'resolution|Name or service not known|Network is unreachable|Connection refused|'
    r'ConnectTimeoutError|ProxyError|Read timed out|connection broken by|Could not fetch URL')


def gpu_requirement():
  """The GPU install line's extra requirement: jax with the CUDA 12 plugin, at the pinned jax."""
  return f"jax[cuda12]=={pinned_version(pins()['jax'])}"


@pytest.mark.slow
def test_gpu_install_line_resolves(tmp_path):
  """`pip install -r requirements.txt "jax[cuda12]==<jax pin>"` resolves (a dry run: nothing
  is installed), with the CUDA plugin at jax's version and every pin kept. The plugin is not on
  a local index, so this needs the package index; skipped when it cannot be reached."""
  report = tmp_path / 'report.json'
  command = [sys.executable, '-m', 'pip', 'install', '--dry-run', '--ignore-installed',
             '--no-cache-dir', '--retries', '1', '--timeout', '30', '--report', str(report),
             '-r', 'requirements.txt', gpu_requirement()]
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200)
  output = result.stdout + result.stderr
  unreachable = [line.strip() for line in output.splitlines() if UNREACHABLE.search(line)]
  if result.returncode != 0 and unreachable:
    pytest.skip(f'package index unreachable: {unreachable[0][:300]}')
  assert result.returncode == 0, output[-3000:]
  chosen = {canonicalize_name(item['metadata']['name']): item['metadata']['version']
            for item in json.loads(report.read_text())['install']}
  jax_version = pinned_version(pins()['jax'])
  assert chosen.get('jax-cuda12-plugin') == jax_version, sorted(chosen)
  assert chosen.get('jax-cuda12-pjrt') == jax_version, sorted(chosen)
  moved = {name: (pinned_version(pin), chosen.get(name)) for name, pin in pins().items()
           if chosen.get(name) != pinned_version(pin)}
  assert moved == {}
