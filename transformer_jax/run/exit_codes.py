"""The command's exit statuses, in one place, and how its process ends with one.

  0    done (also after --help or --version)
  2    a mistake in what was given: one `error:` line names it and the fix (a UserError)
  130  stopped by Ctrl-C (128 + SIGINT, as shells report it)

A traceback (exit 1) is a bug. Nothing here imports jax.
"""
import sys

from transformer_jax.base import process_exit

DONE = 0
USER_ERROR = 2
INTERRUPTED = 130


def of_system_exit(code) -> int:
  """The status `sys.exit(code)` ends a process with: None is 0, and a message is printed to
  stderr and is 1."""
  if code is None or isinstance(code, int):
    return code or DONE
  print(code, file=sys.stderr)
  return 1


def ready_to_exit(code: int) -> int:
  """`code`, once the process can end with it (`sys.exit(ready_to_exit(code))`).

  After a mistake, a thread left blocked (orbax's, after a failed write) must not keep the
  process alive after its error line: other threads get process_exit.GRACE_S seconds, and
  a process with one still there ends at once, with `code`.
  """
  if code == USER_ERROR:
    try:
      process_exit.exit_within(code)    # ends the process itself only if a thread is stuck,
    except SystemExit:                  # else raises this: the caller's sys.exit ends it
      pass
  return code
