"""How checkpoint.py tells a damaged or unwritable step from a bug, and words it in one line.

Orbax and tensorstore report storage problems with many exception types (see
`is_storage_error`); reading a damaged step turns them into `DamagedStepError`, writing one
into a short reason (`write_reason`). `verify` compares arrays with their saved CRC-32s.
"""
import contextlib
import gc
import os
import re
import sys
from typing import Any, Optional

from transformer_jax.base import checksums

PyTree = Any


class DamagedStepError(Exception):
  """A step directory exists but cannot be read back, or its bytes fail their checksums.

  The message says why in one line; public methods turn it into a UserError or a fallback.
  """


def short(error: BaseException) -> str:
  """The first line of an error, for one-line log messages (tensorstore errors run long)."""
  if type(error) is Exception and error.__cause__ is not None:
    error = error.__cause__     # orbax's bare Exception only wraps tensorstore's real message
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:300] if text else ""}'


def is_storage_error(error: BaseException) -> bool:
  """Whether `error` is how orbax/tensorstore report a storage problem rather than a bug.

  On write, a full disk gives OSError or ValueError (RESOURCE_EXHAUSTED). On read, truncated
  files give ValueError (DATA_LOSS), zero-length files JSONDecodeError (a ValueError), an emptied
  dir KeyError, a vanished dir FileNotFoundError (TOOLCHAIN.md §3), and a truncated or deleted
  array data file a bare `Exception` ("Encountered error while reading array index").
  """
  return isinstance(error, (ValueError, KeyError, OSError)) or type(error) is Exception


@contextlib.contextmanager
def reading_step():
  """Turns the errors of reading a damaged step into DamagedStepError."""
  quiet_abandoned_reads()
  try:
    yield
  except DamagedStepError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (re-raised unless a storage error)
    if not is_storage_error(e):
      raise
    # A failed read abandons orbax's other read coroutines, whose finalizers raise again ("Exception
    # ignored in <coroutine ...>"). Collected here rather than at a random later moment: a
    # collection inside Python 3.11's ast.parse (e.g. while rendering a traceback) then corrupts
    # the parser ("SystemError: AST constructor recursion depth mismatch").
    gc.collect()
    raise DamagedStepError(short(e)) from e


def drop_abandoned_read(unraisable, _next=sys.unraisablehook) -> None:
  """An unraisable-exception hook that drops tensorstore's reports on reads orbax abandoned.

  When one array of a step fails to read, orbax's `asyncio.run` ends and closes its event loop
  while tensorstore still completes the step's other reads on its own threads. Each completion
  then calls `loop.call_soon_threadsafe` on the closed loop, and tensorstore reports the
  `RuntimeError('Event loop is closed')` as unraisable, a bare traceback on stderr, at any moment
  in the next milliseconds. Those reads belong to a step already reported as damaged; every
  other unraisable exception reaches the hook that was there before.
  """
  error = unraisable.exc_value
  if (unraisable.object is None and isinstance(error, RuntimeError)
      and str(error) == 'Event loop is closed'):
    return
  _next(unraisable)


def quiet_abandoned_reads() -> None:
  """Installs `drop_abandoned_read` once per process (before the first read of a step)."""
  if sys.unraisablehook is not drop_abandoned_read:
    drop_abandoned_read.__defaults__ = (sys.unraisablehook,)
    sys.unraisablehook = drop_abandoned_read


def write_reason(error: BaseException) -> str:
  """Why a save failed, in a few words: the OS error ('No space left on device') if there is one.

  Tensorstore reports a full disk as `ValueError: RESOURCE_EXHAUSTED: Error writing ... No space
  left on device [os_error_code='28']`, a message too long to keep whole.
  """
  while error is not None:
    if isinstance(error, OSError) and error.strerror:
      return error.strerror
    code = re.search(r"os_error_code='(\d+)'", str(error))
    if code:
      return os.strerror(int(code.group(1)))
    if error.__cause__ is None:
      break
    error = error.__cause__
  return short(error)


def verify(tree: PyTree, sums: Optional[dict], prefix: str = '') -> None:
  """Raises DamagedStepError when an array's bytes differ from its saved checksum."""
  if sums is not None:
    changed = checksums.first_mismatch(tree, sums, prefix)
    if changed:
      raise DamagedStepError(f'{changed} differs from the checksum saved with it')
