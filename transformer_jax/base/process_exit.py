"""Ending the process after an error, within seconds.

Python's normal exit waits for every non-daemon thread. After a failed checkpoint write, orbax
leaves such threads blocked (e.g. in `blocking_key_value_get`), and a process that had printed
its one-line error never ended. `exit_within` gives the other threads a short grace period to
finish (a save in flight that can still complete), then ends the process with the exit code
whatever they are doing: stdout and stderr are flushed first, so nothing printed is lost.
"""
import os
import sys
import threading
import time

GRACE_S = 5.0


def _others():
  return [t for t in threading.enumerate()
          if t is not threading.current_thread() and not t.daemon and t.is_alive()]


def exit_within(code: int, grace_s: float = GRACE_S) -> None:
  """Exits with `code`: normally when no other non-daemon thread is alive after at most
  `grace_s` seconds, else at once without waiting for them (os._exit)."""
  deadline = time.monotonic() + grace_s
  for thread in _others():
    thread.join(max(0.0, deadline - time.monotonic()))
  if not _others():
    sys.exit(code)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)  # pylint: disable=protected-access  (threads that would never end)
