"""Test set-up: 8 fake host devices so pmap/sharding code runs on CPU (as in flax's CI), and
one persistent compilation cache for the whole session.

Most of the suite's time is XLA compiling the same few small programs again (every training
test builds the copy-task smoke model). JAX's persistent cache, in a folder made for this
session and removed after it, lets every later compile of an identical program, in this
process and in the launch.py subprocesses that inherit the environment, load the executable
instead. A user's own JAX_COMPILATION_CACHE_DIR is respected. Under pytest-xdist
(pytest.ini runs one worker per core) the controller sets the folder before it starts the
workers, which inherit it, so they share it too; an entry a worker reads while another is
still writing it fails to load and is compiled instead (JAX warns, the numbers are the same).
"""
import atexit
import os
import pathlib
import shutil
import tempfile

# Must happen before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE_DIR = tempfile.mkdtemp(prefix='transformer_jax_tests_xla_cache_')
  atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE_DIR
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data():
  """`../shared/data` beside the checkout; tests that need it are skipped elsewhere."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f'no shared data folder at {SHARED_DATA}')
  return SHARED_DATA


def pytest_xdist_auto_num_workers(config):
  """`-n auto` (pytest.ini): one worker per core this process may run on (`taskset` and
  container CPU sets respected), where xdist would count the host's physical cores."""
  del config
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


@pytest.fixture
def run(trained, tmp_path):
  """A copy of the module's `trained` run (a module-scoped fixture of the test file) that a test
  may change: damage, extra eval files, a resumed training."""
  copy = tmp_path / 'run'
  shutil.copytree(trained, copy)
  return copy
