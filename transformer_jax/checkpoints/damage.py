"""Damaged checkpoint steps: moved out of orbax's sight, never deleted, and named in errors.

A damaged newest step (a crash mid-copy, bit rot) is skipped by a restore with a warning and the
previous step restored. A writable Checkpointer (training) then moves each skipped step to
`<workdir>/checkpoints/damaged/<step>` (`<step>-1`, ... if taken), so the resumed run can save
its own steps of those numbers; they stay inside checkpoints/, where neither orbax's rotation
(which only lists numbered dirs) nor a failed set-up's clean-up of new workdir entries touches
them. A read-only Checkpointer (evaluation) only skips them. Nothing is ever deleted.
"""
import os
from typing import Sequence

from absl import logging
import jax
from jax.experimental import multihost_utils

from transformer_jax.base.errors import UserError

DAMAGED_SUBDIR = 'damaged'          # <checkpoints>/damaged/<step>


def set_aside(directory: str, steps: Sequence[int], read_only: bool) -> bool:
  """Moves damaged `steps` of the checkpoint `directory` aside unless read-only; True if moved.

  Left in place, the newest of them would stay the run's latest step, and every later save of
  a step up to it would be refused: the resumed run could never save its progress. One process
  moves; the others wait for it. The caller reloads its orbax manager after a move.
  """
  if not steps:
    return False
  if read_only:
    logging.warning('damaged checkpoint step(s) %s left in %s (read-only: nothing is moved)',
                    list(steps), directory)
    return False
  if jax.process_index() == 0:
    for step in steps:
      move_aside(directory, step)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('checkpoint: damaged steps moved aside')
  return True


def move_aside(directory: str, step: int) -> None:
  """Renames `<step>` to `damaged/<step>` (or `damaged/<step>-N` if taken); deletes nothing."""
  source = os.path.join(directory, str(step))
  aside = os.path.join(directory, DAMAGED_SUBDIR)
  target, n = os.path.join(aside, str(step)), 0
  while os.path.exists(target):
    n += 1
    target = os.path.join(aside, f'{step}-{n}')
  try:
    os.makedirs(aside, exist_ok=True)
    os.rename(source, target)
  except OSError as e:
    raise UserError(f'damaged checkpoint step {step} could not be moved aside ({e.strerror}): '
                    f'move {source} out of {directory} by hand, then resume') from e
  logging.warning('moved damaged checkpoint step %d to %s (kept for inspection), so that this '
                  'run can save a new step %d', step, target, step)


def step_error(directory: str, saved_steps: Sequence[int], step: int,
               reason: Exception) -> UserError:
  """The one-line error for an explicitly requested step that is damaged; it suggests the
  nearest older saved step (or any other) for --step."""
  others = [s for s in saved_steps if s != step]
  if others:
    suggestion = max([s for s in others if s < step] or others)
    fix = (f'pick another step, e.g. --step={suggestion}, or omit --step to use the newest '
           'readable one')
  else:
    fix = 'restore it from a backup, or train again'
  return UserError(f'checkpoint step {step} in {directory} is damaged ({reason}): {fix}')
