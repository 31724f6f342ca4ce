"""How a run speaks to whoever started it: the command line (launch.py, `transformer-jax`) or
Python (`modes.train(config, workdir)` without absl's app.run).

The command line sets up absl logging (INFO to stderr) and defines `--experiment`; Python does
neither, so there Python's root logger would drop every INFO line (progress, evaluations) and
a fix worded as `--experiment.eval.max_batches=0` could not be acted on. `show_info` makes our
INFO lines visible to a Python caller, and `setting` words a fix for the caller at hand.
"""
import logging
import os
import shlex
import shutil
import sys

from absl import flags
from absl import logging as absl_logging

from transformer_jax.base import paths


def on_command_line() -> bool:
  """Whether the command line started this run: its `--experiment` flag is defined and parsed
  (only flag state is looked at, never a flag's value)."""
  return 'experiment' in flags.FLAGS and flags.FLAGS.is_parsed()


def setting(key: str, value) -> str:
  """How to set config field `key` ('section.field') to `value`, for the caller at hand:
  `--experiment.eval.max_batches=0` on the command line, `config.eval.max_batches = 0` in Python."""
  if on_command_line():
    return f'--experiment.{key}={value}'
  return f'config.{key} = {value!r}'


class OwnInfoOnly(logging.Filter):
  """Lets INFO records through only from this project; libraries (orbax, tfds) say only
  warnings, and without the tracebacks they attach (orbax logs one per failed write thread
  before the error reaches us, which then says what failed in one line). The command line's
  absl handler and `show_info` both use it."""

  def filter(self, record: logging.LogRecord) -> bool:
    if paths.is_own_source(record.pathname):
      return True
    if record.exc_info or record.exc_text:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= logging.WARNING


_FILTER = OwnInfoOnly()


def show_info() -> None:
  """Makes this project's INFO lines visible when no one has set up logging for them.

  Left alone: the command line (absl's handler, set up by app.run), and a caller whose logging
  already shows INFO (`logging.basicConfig(level=logging.INFO)`,
  `absl.logging.set_verbosity('info')`). Otherwise the absl logger is opened to INFO with
  a filter that keeps libraries' INFO out, and the records reach Python's root handlers
  (absl adds a stderr one on first use if there is none). Calling it again changes nothing.
  """
  logger = absl_logging.get_absl_logger()   # where absl.logging (ours, orbax's, tfds') goes
  if on_command_line() or logger.getEffectiveLevel() <= logging.INFO:
    return
  if _FILTER not in logger.filters:
    logger.addFilter(_FILTER)
  logger.setLevel(logging.INFO)
  if not logging.root.handlers:
    logging.basicConfig()


def command(mode: str, workdir: str, extra: str = '') -> str:
  """The shell command that runs `mode` on `workdir`, in the form this process was started with
  (`python launch.py --mode=eval ...` from launch.py, else `transformer-jax eval ...`, or
  `python -m transformer_jax eval ...` where the command is not installed)."""
  program = sys.argv[0] if sys.argv else ''
  if os.path.basename(program) == 'launch.py':
    head = f'python {shlex.quote(program)} --mode={mode}'
  elif shutil.which('transformer-jax'):
    head = f'transformer-jax {mode}'
  else:
    head = f'python -m transformer_jax {mode}'
  return f'{head} --workdir={shlex.quote(workdir)}' + (f' {extra}' if extra else '')
