"""`pip install .` into a fresh virtualenv: the package imports and the `transformer-jax`
command runs from a directory outside the checkout, with the shipped experiments.

The venv sees this interpreter's site-packages (`--system-site-packages`), so the pinned
dependencies already installed here satisfy pip: the only download is the build backend
(setuptools, as `pip install .` always fetches it into its isolated build environment). Only
the project's own files are copied and installed, so the checkout gets no build/ or *.egg-info.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SOURCES = ('pyproject.toml', 'requirements.txt', 'README.md', 'transformer_jax', 'experiments')


def run(*args, cwd, timeout=600, returncode=0):
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
  result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode == returncode, (args, result.stdout[-2000:], result.stderr[-3000:])
  return result


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_then_import_and_run_from_elsewhere(tmp_path):
  source = tmp_path / 'source'
  source.mkdir()
  for name in SOURCES:
    copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
    kwargs = {'ignore': shutil.ignore_patterns('__pycache__')} if (REPO / name).is_dir() else {}
    copy(REPO / name, source / name, **kwargs)
  venv = tmp_path / 'venv'
  run(sys.executable, '-m', 'venv', '--system-site-packages', str(venv), cwd=tmp_path)
  python, command = venv / 'bin' / 'python', venv / 'bin' / 'transformer-jax'
  run(str(python), '-m', 'pip', 'install', '-q', str(source), cwd=tmp_path)
  shutil.rmtree(source)                   # the installed copy must stand on its own
  run(str(python), '-m', 'pip', 'check', cwd=tmp_path)
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  imported = run(str(python), '-c',
                 'import transformer_jax, experiments.base; '
                 'from transformer_jax import TransformerConfig; '
                 'print(transformer_jax.__file__); print(experiments.base.__file__); '
                 "print(TransformerConfig.named('tiny', vocab_size=11).vocab_size)",
                 cwd=elsewhere)
  package_file, experiments_file, vocab = imported.stdout.split()
  site = str(venv / 'lib')
  assert package_file.startswith(site) and experiments_file.startswith(site), imported.stdout
  assert vocab == '11'
  printed = run(str(command), 'train', '--experiment=experiments/copy_task.py:smoke',
                '--print_config', cwd=elsewhere)
  first = printed.stdout.splitlines()[0]
  assert first.startswith(f'# {site}') and first.endswith('experiments/copy_task.py:smoke'), first
  assert 'train.profile_steps = ' in printed.stdout
  helped = run(str(command), '--help', cwd=elsewhere, returncode=1)   # absl's --help exits 1
  assert '--workdir' in helped.stdout and '--experiment' in helped.stdout
  assert not (elsewhere / 'runs').exists()
