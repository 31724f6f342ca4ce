"""`train.profile_steps`: a jax.profiler trace of a few training steps, for TensorBoard.

  ''       off (the default)
  'N'      the N steps after this process's first one (which compiles), e.g. '5'
  'A:B'    steps A+1 .. B of the run, as the log counts them, e.g. '10:15' traces five steps

The trace lands in `<workdir>/tensorboard/plugins/profile/<time>/`, written by process 0 at
the end of the window; TensorBoard's Profile tab shows it when the `profile` extra is
installed (`pip install -e .[profile]`). A window that a resumed run has already passed is
skipped with a warning. The text is checked before anything is built; only the tracer
imports jax.
"""
import re
from typing import Optional, Tuple

from absl import logging

from transformer_jax.base.errors import UserError

_FORMAT = re.compile(r'^\s*(\d+)\s*(?::\s*(\d+)\s*)?$')
_HOW = ("set --experiment.train.profile_steps to '' (off), a count N (the N steps after the "
        "first) or START:STOP (steps START+1 .. STOP)")


def parse(text: str) -> Tuple[Optional[int], Optional[int], Optional[int]]:
  """(count, start, stop) of a profile_steps text: (None, None, None) when off, (N, None,
  None) for 'N', (None, A, B) for 'A:B'. Raises UserError for anything else."""
  if not isinstance(text, str):
    raise UserError(f'train.profile_steps={text!r} is not text: {_HOW}')
  if not text.strip():
    return None, None, None
  match = _FORMAT.match(text)
  if not match:
    raise UserError(f'train.profile_steps={text!r} is not a step window: {_HOW}')
  first, second = int(match.group(1)), match.group(2)
  if second is None:
    if first < 1:
      raise UserError(f'train.profile_steps={text!r} traces no step: {_HOW}')
    return first, None, None
  if int(second) <= first:
    raise UserError(f'train.profile_steps={text!r} is an empty window (STOP must be above '
                    f'START): {_HOW}')
  return None, first, int(second)


def window(text: str, *, start_step: int, num_steps: int) -> Optional[Tuple[int, int]]:
  """(A, B): trace the steps after step A up to and including step B, for a run that goes
  from `start_step` to `num_steps`; None when off. UserError when the window ends after
  `num_steps` (it would be cut short)."""
  count, start, stop = parse(text)
  if count is None and start is None:
    return None
  if count is not None:
    start, stop = start_step + 1, start_step + 1 + count
  if stop > num_steps:
    steps = (f'{count} steps after the first (to step {stop})' if count is not None
             else f'to step {stop}')
    raise UserError(f'train.profile_steps={text!r} traces {steps}, past '
                    f'train.num_steps={num_steps}: {_HOW} ending at step {num_steps} or before')
  return start, stop


class StepTracer:
  """Starts a jax.profiler trace before the window's first step and stops it after its last.

  Use as a context manager around the loop (a trace still open when the loop ends, say on a
  stop signal, is stopped and written), calling `before(step)` with the number of steps done
  and `after(step, state)` once the step is dispatched.
  """

  def __init__(self, window_steps: Optional[Tuple[int, int]], log_dir: str, *, start_step: int,
               active: bool):
    self._log_dir = log_dir
    self._tracing = False
    self._window = window_steps if active else None
    if self._window and start_step >= self._window[0]:
      if start_step >= self._window[1]:
        logging.warning('train.profile_steps: the run resumes at step %d, after the traced '
                        'steps %d..%d: no trace this time', start_step, self._window[0] + 1,
                        self._window[1])
        self._window = None
      else:
        logging.warning('train.profile_steps: the run resumes at step %d: tracing steps %d..%d '
                        'only', start_step, start_step + 1, self._window[1])
        self._window = (start_step, self._window[1])

  def __enter__(self):
    return self

  def before(self, step: int) -> None:
    if self._window and step == self._window[0] and not self._tracing:
      import jax
      jax.profiler.start_trace(self._log_dir)
      self._tracing = True
      logging.info('train.profile_steps: tracing steps %d..%d into %s', step + 1,
                   self._window[1], self._log_dir)

  def after(self, step: int, state) -> None:
    if self._tracing and step >= self._window[1]:
      self._stop(state)

  def _stop(self, state=None) -> None:
    import jax
    if state is not None:
      jax.block_until_ready(state)       # the traced steps' device work belongs in the trace
    jax.profiler.stop_trace()
    self._tracing = False
    logging.info('train.profile_steps: trace written under %s/plugins/profile', self._log_dir)

  def __exit__(self, *exc_info):
    if self._tracing:
      self._stop()
