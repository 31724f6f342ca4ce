"""Test helpers: a slow or failing disk under orbax's background checkpoint writes.

Orbax finishes an async save in a background thread that waits on the "commit futures" of each
item; one extra future on the state item stands in for the disk, without a real full disk.
"""
import errno
import time

import orbax.checkpoint as ocp


class _Commit:
  """A commit future whose result() runs `fn` (in orbax's background thread)."""

  def __init__(self, fn):
    self._fn = fn

  def result(self, timeout=None):
    del timeout
    return self._fn()


def add_commit(monkeypatch, fn) -> None:
  """Every later state write also waits on `fn()` before its step is committed."""
  original = ocp.StandardCheckpointHandler.async_save

  async def async_save(self, *args, **kwargs):
    return list(await original(self, *args, **kwargs) or []) + [_Commit(fn)]

  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'async_save', async_save)


def slow_disk(monkeypatch, seconds: float) -> None:
  """Each async write takes at least `seconds` to reach the disk."""
  add_commit(monkeypatch, lambda: time.sleep(seconds))


def full_disk(monkeypatch) -> None:
  """Each write fails in the background as a full disk does (ENOSPC)."""
  def fail():
    raise OSError(errno.ENOSPC, 'No space left on device')
  add_commit(monkeypatch, fail)
