"""One preparation of a TFDS dataset at a time, however many processes ask for it.

Runs sharing a `data.data_dir` (the members of a sweep, several trainings on one machine)
may all find a dataset unprepared at once; TFDS writing the same files from two processes
would corrupt them. `prepare_once` takes an exclusive lock on `<data_dir>/.<name>.lock`
(an flock: released by the kernel when its process ends, so a killed run never leaves it
held); the others wait, then find the dataset prepared and only read it.
"""
import contextlib
import fcntl
import os
import tempfile
from typing import Callable, Iterator


@contextlib.contextmanager
def _locked(data_dir: str, name: str) -> Iterator[None]:
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f'.{name}.lock'), 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


def quiet_builder(make_builder: Callable):
  """`make_builder()`, minus the empty folder TFDS leaves in the temporary directory.

  A TFDS builder made for a dataset not yet prepared looks for its metadata on GCS
  (`DatasetInfo.initialize_from_bucket`), which first makes a `/tmp/tmp*tfds` folder and,
  with GCS off, leaves it there empty: one per builder, thousands over a test suite. Made
  here, the builder puts it in a folder of ours that is removed at once.
  """
  with tempfile.TemporaryDirectory(prefix='transformer_jax_builder_') as scratch:
    previous, tempfile.tempdir = tempfile.tempdir, scratch
    try:
      return make_builder()
    finally:
      tempfile.tempdir = previous


def prepare_once(data_dir: str, name: str, make_builder: Callable, prepare: Callable,
                 check: Callable[[], None] = lambda: None):
  """A prepared builder: `make_builder()` as is when prepared, else prepared by `prepare(builder)`
  under the lock (the builder is made again there, to see what another process wrote).
  `check()` runs first, before the lock file is written: it refuses bad raw files."""
  builder = quiet_builder(make_builder)
  if builder.is_prepared():
    return builder
  check()
  with _locked(data_dir, name.replace('/', '_')):
    builder = quiet_builder(make_builder)
    if not builder.is_prepared():
      prepare(builder)
  return builder
