"""The package's architecture as checked rules: imports run down the layers (pyproject.toml's
import-linter contract), the top level holds only entry points, and no folder or file outgrows
what a reader takes in at once."""
import pathlib
import shutil
import subprocess
import sys

import pytest

import transformer_jax

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = pathlib.Path(transformer_jax.__file__).resolve().parent
LINT_IMPORTS = shutil.which('lint-imports') or str(pathlib.Path(sys.executable).with_name('lint-imports'))
# What the top level may hold besides the layer folders: the package's face (__init__), the
# `python -m` entry (__main__), the command line that sits above every layer (cli), and the one
# deprecated path kept for experiment files written for 0.1 (config).
TOP_LEVEL = {'__init__.py', '__main__.py', 'cli.py', 'config.py'}
MAX_MODULES = 10          # per folder, __init__.py not counted
MAX_LINES = 430           # "about 400"


def lint(root: pathlib.Path) -> subprocess.CompletedProcess:
  """lint-imports with the repository's contract, on the package found under `root`."""
  return subprocess.run([LINT_IMPORTS, '--config', str(REPO / 'pyproject.toml'), '--no-cache'],
                        cwd=root, capture_output=True, text=True, check=False,
                        env={'PYTHONPATH': str(root), 'PATH': '/usr/bin:/bin'})


def test_imports_run_down_the_layers():
  result = lint(PACKAGE.parent)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert '1 kept, 0 broken' in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
  copy = tmp_path / 'transformer_jax'
  shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns('__pycache__'))
  # The error type importing the command-line modes: the base layer reaching up to run.
  errors = copy / 'base' / 'errors.py'
  errors.write_text(errors.read_text() + '\nfrom transformer_jax.run import modes  # upward\n')
  result = lint(tmp_path)
  assert result.returncode != 0
  assert 'transformer_jax.base is not allowed to import transformer_jax.run' in result.stdout
  assert 'transformer_jax.base.errors -> transformer_jax.run.modes' in result.stdout


def test_the_top_level_holds_only_entry_points():
  modules = {p.name for p in PACKAGE.glob('*.py')}
  assert modules <= TOP_LEVEL, f'move {sorted(modules - TOP_LEVEL)} into the layer it belongs to'
  layers = {p.name for p in PACKAGE.iterdir() if (p / '__init__.py').is_file()}
  assert layers == set(transformer_jax.SUBPACKAGES) - {'cli'}


@pytest.mark.parametrize('folder', sorted(
    str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob('__init__.py')), ids=str)
def test_no_folder_holds_more_than_about_ten_modules(folder):
  modules = [p.name for p in (PACKAGE / folder).parent.glob('*.py') if p.name != '__init__.py']
  assert len(modules) <= MAX_MODULES, f'{folder}: {len(modules)} modules: split it along a seam'


def test_no_file_is_much_over_400_lines():
  long = {str(p.relative_to(REPO)): n for p in [*PACKAGE.rglob('*.py'), *(REPO / 'tests').rglob('*.py')]
          if (n := len(p.read_text(encoding='utf-8').splitlines())) > MAX_LINES}
  assert not long, f'split these along a seam: {long}'


def test_dir_lists_the_public_api_and_the_version_is_the_installed_one():
  import importlib.metadata
  names = dir(transformer_jax)
  assert set(transformer_jax.__all__) <= set(names)
  assert 'load_pretrained' in names and 'nn' in names
  assert transformer_jax.__version__ == importlib.metadata.version('transformer-jax')
  for name in transformer_jax.__all__:
    assert getattr(transformer_jax, name) is not None


@pytest.mark.parametrize('old, new', [('modes', 'transformer_jax.run.modes'),
                                      ('validation', 'transformer_jax.train.validation')])
def test_the_old_documented_paths_still_work_and_warn(old, new):
  with pytest.warns(DeprecationWarning, match=new):
    module = getattr(transformer_jax, old)
  assert module.__name__ == new


def test_the_old_config_module_still_works_and_warns():
  code = ('import warnings; warnings.simplefilter("error", DeprecationWarning)\n'
          'try:\n  from transformer_jax.config import TransformerConfig\n'
          'except DeprecationWarning as e:\n  print(e)\n')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert 'transformer_jax.nn.config' in out.stdout
  from transformer_jax.nn import config
  with pytest.warns(DeprecationWarning):
    sys.modules.pop('transformer_jax.config', None)
    from transformer_jax.config import TransformerConfig   # pylint: disable=import-outside-toplevel
  assert TransformerConfig is config.TransformerConfig
