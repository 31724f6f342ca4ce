"""Every bad input of the catalogue ends in one `error:` line (exit code 2) that names the
problem and the fix, with no traceback, and leaves the workdir byte-identical."""
import os
import subprocess

import pytest

from tests.reliability import catalogue
from tests.reliability import runner


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  return runner.train_smoke_run(tmp_path_factory.mktemp('catalogue') / 'smoke_run')


@pytest.fixture
def release_holds():
  yield
  while catalogue.HELD_LOCKS:
    os.close(catalogue.HELD_LOCKS.pop())
  while catalogue.IMMUTABLE:
    subprocess.run(['chattr', '-i', str(catalogue.IMMUTABLE.pop())], check=False)


def test_the_catalogue_is_large_and_named_uniquely():
  names = [case.name for case in catalogue.CASES]
  assert len(names) >= 80
  assert len(set(names)) == len(names)


@pytest.mark.parametrize('case', catalogue.CASES, ids=lambda case: case.name)
def test_bad_input_gives_one_clean_error(case, tmp_path, smoke_run, release_holds):
  if case.needs_shared_data and not runner.SHARED_DATA.is_dir():
    pytest.skip('needs ../shared/data')
  workdir = runner.lay_out(case.workdir, tmp_path, smoke_run if case.workdir == 'run' else None)
  try:
    outcome = runner.run_case(case, tmp_path, workdir)
  except NotImplementedError as e:        # e.g. no chattr on this file system
    pytest.skip(str(e))
  assert outcome.kind == 'clean', (outcome.kind, outcome.returncode, outcome.stderr_tail)
  assert case.expect in outcome.error_lines[0], outcome.error_lines[0]
  assert outcome.stderr_tail.rstrip().splitlines()[-1] == outcome.error_lines[0]
