"""What installing the package gives: one top-level import name, `transformer_jax`, with the
experiment and sweep files inside it; and, after `pip install .` into a fresh virtualenv, the
package, README's Python example and the `transformer-jax` command working from a directory
outside the checkout, beside a user's own package named `experiments`.

The venv sees this interpreter's site-packages (`--system-site-packages`), so the pinned
dependencies already installed here satisfy pip: the only download is the build backend
(setuptools, as `pip install .` always fetches it into its isolated build environment). Only
the project's own files are copied and installed, so the checkout gets no build/ or *.egg-info.
The whole takes about 45 s on 2 cores (13 s of it `pip install .`), so it runs in the default suite.
"""
import fnmatch
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import setuptools

REPO = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())
SOURCES = ('pyproject.toml', 'requirements.txt', 'README.md', 'transformer_jax')


def package_folders():
  """The dotted names of the folders under transformer_jax/ that hold Python files."""
  return sorted({'.'.join(p.parent.relative_to(REPO).parts)
                 for p in (REPO / 'transformer_jax').rglob('*.py')
                 if '__pycache__' not in p.parts})


def test_the_package_claims_one_import_name_and_ships_every_folder():
  find = PYPROJECT['tool']['setuptools']['packages']['find']
  include, exclude = find.get('include', ['*']), find.get('exclude', [])
  # setuptools matches these patterns with fnmatch against dotted package names.
  for name in ('experiments', 'experiments.ablations', 'benchmarks', 'tests', 'tests.run',
               'transformer_jax_extra'):
    assert not any(fnmatch.fnmatchcase(name, p) for p in include), f'would install {name}'
  found = setuptools.find_namespace_packages(str(REPO), include=include, exclude=exclude)
  assert sorted(found) == package_folders()
  assert {'transformer_jax.experiments', 'transformer_jax.experiments.ablations'} <= set(found)


def test_every_folder_of_the_package_is_a_regular_package():
  # An __init__.py in each: importable as transformer_jax.experiments.ablations, never merged
  # into a namespace package of the same name from elsewhere on sys.path.
  missing = [name for name in package_folders()
             if not (REPO.joinpath(*name.split('.')) / '__init__.py').is_file()]
  assert missing == []


def run(*args, cwd, timeout=600):
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
  result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
  return result


# Where the venv installs, and the top-level names that the installed distribution's files
# take (its command in bin/ aside).
INSTALLED = """
import importlib.metadata, sysconfig
print(sysconfig.get_path('purelib'))
print(*sorted({f.parts[0] for f in importlib.metadata.files('transformer-jax') if f.parts[0] != '..'}))
"""

# README's Python example, run from a directory outside the checkout.
README_EXAMPLE = """
from transformer_jax.experiments import copy_task
from transformer_jax.train import validation
config = copy_task.get_config('smoke')
validation.check_config(config)
from transformer_jax import Transformer, TransformerConfig, load_pretrained
print(TransformerConfig.named('tiny', vocab_size=11).vocab_size)
"""

# A user's own top-level `experiments` package beside the installed transformer_jax.
USERS_OWN = """
import experiments, experiments.mine, transformer_jax, transformer_jax.experiments
from transformer_jax.experiments import copy_task
from transformer_jax.experiments.ablations import table3
assert experiments.mine.WHOSE == 'mine'
for module in (experiments, transformer_jax, transformer_jax.experiments, table3):
  print(module.__file__)
"""


def test_pip_install_into_a_fresh_venv_then_import_and_run_from_elsewhere(tmp_path):
  source = tmp_path / 'source'
  source.mkdir()
  for name in SOURCES:
    copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
    kwargs = {'ignore': shutil.ignore_patterns('__pycache__')} if (REPO / name).is_dir() else {}
    copy(REPO / name, source / name, **kwargs)
  venv = tmp_path / 'venv'
  run(sys.executable, '-m', 'venv', '--system-site-packages', str(venv), cwd=tmp_path)
  python, command = str(venv / 'bin' / 'python'), str(venv / 'bin' / 'transformer-jax')
  run(python, '-m', 'pip', 'install', '-q', str(source), cwd=tmp_path)
  shutil.rmtree(source)                   # the installed copy must stand on its own
  run(python, '-m', 'pip', 'check', cwd=tmp_path)
  installed = run(python, '-c', INSTALLED, cwd=tmp_path).stdout.split()
  site, top_level = pathlib.Path(installed[0]), installed[1:]
  assert top_level == ['transformer_jax',
                       f"transformer_jax-{PYPROJECT['project']['version']}.dist-info"], installed
  assert (site / 'transformer_jax' / 'experiments' / 'ablations' / 'table3.py').is_file()
  elsewhere = tmp_path / 'elsewhere'
  (elsewhere / 'experiments').mkdir(parents=True)
  (elsewhere / 'experiments' / '__init__.py').write_text('')
  (elsewhere / 'experiments' / 'mine.py').write_text("WHOSE = 'mine'\n")

  version = run(python, '-c', 'import transformer_jax; print(transformer_jax.__version__)',
                cwd=elsewhere)
  assert version.stdout.strip() == PYPROJECT['project']['version']
  assert run(python, '-c', README_EXAMPLE, cwd=elsewhere).stdout.split() == ['11']
  users, package, experiments, ablation = run(python, '-c', USERS_OWN, cwd=elsewhere).stdout.split()
  assert users == str(elsewhere / 'experiments' / '__init__.py')
  assert all(path.startswith(str(site)) for path in (package, experiments, ablation))

  printed = run(command, 'train', '--experiment=experiments/copy_task.py:smoke',
                '--print_config', cwd=elsewhere)
  first = printed.stdout.splitlines()[0]
  assert first.startswith(f'# {site}') and first.endswith('experiments/copy_task.py:smoke'), first
  assert 'train.profile_steps = ' in printed.stdout
  helped = run(command, '--help', cwd=elsewhere)
  assert '--workdir' in helped.stdout and '--experiment' in helped.stdout
  assert not (elsewhere / 'runs').exists()
  # `transformer-jax <version> (jax <v>, flax <v>)`
  versioned = run(command, '--version', cwd=elsewhere)
  assert versioned.stdout.startswith(f"transformer-jax {PYPROJECT['project']['version']} "), \
      versioned.stdout
