"""Test set-up: 8 fake host devices so pmap/sharding code runs on CPU (as in flax's CI)."""
import os
import pathlib

# Must happen before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / 'shared' / 'data'


@pytest.fixture(scope='session')
def shared_data():
  """`../shared/data` beside the checkout; tests that need it are skipped elsewhere."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f'no shared data folder at {SHARED_DATA}')
  return SHARED_DATA
