"""One preparation of a TFDS dataset at a time, however many processes ask for it.

Runs sharing a `data.data_dir` (the members of a sweep, several trainings on one machine)
may all find a dataset unprepared at once; TFDS writing the same files from two processes
would corrupt them. `prepare_once` takes an exclusive lock on `<data_dir>/.<name>.lock`
(an flock: released by the kernel when its process ends, so a killed run never leaves it
held); the others wait, then find the dataset prepared and only read it.

TFDS also talks about our builders in ways that only confuse here: a warning for every builder
made with a config of ours ("Using custom data configuration"), one for every look at a dataset
not yet prepared ("Variant folder ... has no dataset_info.json"), and "Downloading and preparing
dataset Unknown size" for data made on the fly. `quiet_builder` and `is_prepared` drop the two
warnings; builders of generated data say what they make with `GeneratedData`.
"""
import contextlib
import fcntl
import logging
import os
import tempfile
from typing import Callable, Iterator

import tensorflow_datasets as tfds
from absl import logging as absl_logging


@contextlib.contextmanager
def _locked(data_dir: str, name: str) -> Iterator[None]:
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f'.{name}.lock'), 'a') as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    yield


# The starts of TFDS warnings about a builder of ours that say nothing to act on.
_TFDS_CHATTER = ('Using custom data configuration', 'Variant folder ')


class _DropTfdsChatter(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return not (isinstance(record.msg, str) and record.msg.startswith(_TFDS_CHATTER))


@contextlib.contextmanager
def _without_tfds_chatter() -> Iterator[None]:
  """Drops _TFDS_CHATTER from absl's logger (where TFDS logs) while TFDS handles a builder of
  ours (nothing else logs those words)."""
  logger, chatter = absl_logging.get_absl_logger(), _DropTfdsChatter()
  logger.addFilter(chatter)
  try:
    yield
  finally:
    logger.removeFilter(chatter)


def quiet_builder(make_builder: Callable):
  """`make_builder()`, without TFDS's chatter about it and the empty folder TFDS leaves in the
  temporary directory.

  A TFDS builder made for a dataset not yet prepared looks for its metadata on GCS
  (`DatasetInfo.initialize_from_bucket`), which first makes a `/tmp/tmp*tfds` folder and,
  with GCS off, leaves it there empty: one per builder, thousands over a test suite. Made
  here, the builder puts it in a folder of ours that is removed at once.
  """
  with tempfile.TemporaryDirectory(prefix='transformer_jax_builder_') as scratch, \
       _without_tfds_chatter():
    previous, tempfile.tempdir = tempfile.tempdir, scratch
    try:
      return make_builder()
    finally:
      tempfile.tempdir = previous


def is_prepared(builder) -> bool:
  """`builder.is_prepared()`, without TFDS's warning that an unprepared one has no metadata."""
  with _without_tfds_chatter():
    return builder.is_prepared()


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
  """TFDS's progress bars off for the block, then as they were (the command line has them off;
  a Python caller may have them on)."""
  from tensorflow_datasets.core.utils import tqdm_utils   # pylint: disable=import-outside-toplevel
  before = getattr(tqdm_utils, '_active', True)
  tfds.disable_progress_bar()
  try:
    yield
  finally:
    tfds.display_progress_bar(before)


class GeneratedData:
  """Mixin for a TFDS builder whose data are made on the fly, not downloaded: preparing it says
  in one line of ours what is generated where, instead of TFDS's "Downloading and preparing
  dataset Unknown size ..." and progress bars, and nothing when done."""

  def _log_download_bytes(self) -> None:
    absl_logging.info('generating %s (%s) into %s', self.name, self.builder_config.name,
                      self.data_dir)

  def _log_download_done(self) -> None:
    pass

  def download_and_prepare(self, *args, **kwargs):
    with _no_progress_bars():
      return super().download_and_prepare(*args, **kwargs)


def prepare_once(data_dir: str, name: str, make_builder: Callable, prepare: Callable,
                 check: Callable[[], None] = lambda: None):
  """A prepared builder: `make_builder()` as is when prepared, else prepared by `prepare(builder)`
  under the lock (the builder is made again there, to see what another process wrote).
  `check()` runs first, before the lock file is written: it refuses bad raw files."""
  builder = quiet_builder(make_builder)
  if is_prepared(builder):
    return builder
  check()
  with _locked(data_dir, name.replace('/', '_')):
    builder = quiet_builder(make_builder)
    if not is_prepared(builder):
      with _without_tfds_chatter():
        prepare(builder)
  return builder
