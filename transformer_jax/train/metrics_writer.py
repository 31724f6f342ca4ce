"""Where a run's numbers go: the console (progress with tokens/s and ETA), TensorBoard
event files (tensorboardX, no TensorFlow) and `metrics.jsonl` in the workdir.

Only process 0 writes; other processes keep quiet.
"""
import json
import math
import os
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib

# `<workdir>/tensorboard`: the event files, and the jax.profiler traces of train.profile_steps.
TENSORBOARD_DIR = workdir_lib.TENSORBOARD_DIR


def _diverged(what: str, step: int, last_checkpoint: Optional[int]) -> UserError:
  """The one-line stop for a run whose numbers went NaN/inf, naming the step and what is kept."""
  kept = f'checkpoint step {last_checkpoint} is kept' if last_checkpoint else 'no checkpoint was written'
  return UserError(f'{what} by step {step} ({kept}): lower '
                   '--experiment.optim.learning_rate, set --experiment.optim.grad_clip_norm=1.0, '
                   'or raise optim.warmup_steps, then resume or use a new --workdir')


def check_finite(step: int, metrics: Dict[str, float], last_checkpoint: Optional[int]) -> None:
  """Stops the run on a NaN/inf loss, naming the step and what is kept."""
  bad = [k for k in ('loss', 'grad_norm') if k in metrics and not math.isfinite(metrics[k])]
  if bad:
    raise _diverged(f'{bad[0]} became {metrics[bad[0]]}', step, last_checkpoint)


@jax.jit
def _finite_leaves(tree) -> jax.Array:
  """One bool per floating leaf: all its values are finite (reduced on the device)."""
  leaves = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves) if leaves else jnp.ones((0,), bool)


def check_finite_params(step: int, params, last_checkpoint: Optional[int]) -> None:
  """Stops the run before a save of params holding NaN/inf, naming the first such parameter.

  The loss of a step is computed before its update, so an update that overflows shows only in
  the params; checking them before each save keeps a non-finite state off the disk. The cost is
  one on-device reduction and a transfer of one bool per parameter.
  """
  finite = np.asarray(_finite_leaves(params))
  if not finite.all():
    floats = [path for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    name = jax.tree_util.keystr(floats[int(np.argmin(finite))], simple=True, separator='/')
    raise _diverged(f'params/{name} became NaN or inf', step, last_checkpoint)


def strict_json_tree(tree: Any) -> Any:
  """A copy of `tree` (dicts, lists, numbers, strings) that strict JSON can hold.

  A NaN or infinite number becomes null, and the dict holding it gains `<key>_null_reason`
  ('not finite (nan)', 'not finite (inf)', ...) so that a reader sees why it is missing
  (json.dumps would write the bare `NaN`/`Infinity` most parsers refuse). A list entry has no
  sibling key: it becomes null alone. NumPy scalars become Python numbers.
  """
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out[key] = strict_json_tree(value)
      if out[key] is None and _is_number(value):
        out.setdefault(f'{key}_null_reason', f'not finite ({float(value)})')
    return out
  if isinstance(tree, (list, tuple)):
    return [strict_json_tree(value) for value in tree]
  if isinstance(tree, (bool, np.bool_)):
    return bool(tree)
  if isinstance(tree, np.integer):
    return int(tree)
  if _is_number(tree):
    return float(tree) if math.isfinite(tree) else None
  return tree


def _is_number(value: Any) -> bool:
  return isinstance(value, (float, np.floating)) and not isinstance(value, bool)


def read_records(path: str) -> List[Dict[str, Any]]:
  """The records of a metrics.jsonl file ([] if absent, or not a file).

  A line that holds no record is skipped: one cut short by a kill, bytes that are not UTF-8
  (e.g. garbage a crash or a full disk left at the end), or JSON that is not an object.
  """
  records = []
  if os.path.isfile(path):
    with open(path, 'rb') as f:
      for line in f:
        try:
          record = json.loads(line.decode('utf-8'))
        except ValueError:       # JSONDecodeError and UnicodeDecodeError are ValueErrors
          continue
        if isinstance(record, dict):
          records.append(record)
  return records


def logged_minutes(path: str, step: int) -> float:
  """`minutes` of the last record at or before `step` in metrics.jsonl (0 if none).

  A resumed run continues its clock from there, so `minutes` in every record counts the
  training time spent on the way to that step; time lost after the last record before a
  preemption (at most one logging interval) is not counted.
  """
  earlier = [r['minutes'] for r in read_records(path) if _is_finite_number(r.get('step'))
             and r['step'] <= step and _is_finite_number(r.get('minutes'))]
  return earlier[-1] if earlier else 0.0


def _is_finite_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _ends_with_newline(path: str) -> bool:
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b'\n'


class MetricsWriter:
  """Console, TensorBoard and JSON-lines output for one run."""

  def __init__(self, workdir: str, *, num_steps: int, start_step: int):
    self.active = jax.process_index() == 0
    self.num_steps = num_steps
    self._start_time = time.time()
    self._last_time, self._last_step = self._start_time, start_step
    self._minutes_before = 0.0
    self._tb = None
    self._jsonl = None
    self._workdir = workdir
    if self.active:
      path = os.path.join(workdir, workdir_lib.METRICS_FILE)
      self._minutes_before = logged_minutes(path, start_step)
      try:      # workdir.check_training_files checked it before the run was set up
        self._jsonl = open(path, 'a', encoding='utf-8')
      except OSError as e:
        raise UserError(f'metrics could not be written to {path} ({e.strerror}): fix the cause '
                        '(it must be a writable file), then resume') from None
      if self._jsonl.tell() and not _ends_with_newline(path):
        self._jsonl.write('\n')                  # after a line cut short by a kill
      from tensorboardX import SummaryWriter   # imported lazily: 1-2 s
      self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))

  def write(self, step: int, split: str, metrics: Dict[str, float]) -> None:
    """Records `metrics` of `split` ('train', 'validation', ...) at `step`."""
    if not self.active:
      return
    for name, value in metrics.items():
      if isinstance(value, (int, float)):
        self._tb.add_scalar(f'{split}/{name}', value, step)
    record = {'step': step, 'split': split, 'time': time.time(),
              'minutes': self.elapsed_minutes(), **metrics}
    try:
      # Strict JSON: a NaN metric is written as null with a `<name>_null_reason` beside it.
      self._jsonl.write(json.dumps(strict_json_tree(record), allow_nan=False) + '\n')
      self._jsonl.flush()
    except OSError as e:       # a full disk: the checkpoints cannot be written either
      raise UserError(f'metrics could not be written to {self._jsonl.name} ({e.strerror}): '
                      'free disk space or fix the cause, then resume') from e

  def train_progress(self, step: int, metrics: Dict[str, float]) -> Dict[str, float]:
    """Adds speed (steps/s, tokens/s) and ETA to train metrics, writes and prints them."""
    now = time.time()
    elapsed = max(now - self._last_time, 1e-9)
    steps_per_sec = (step - self._last_step) / elapsed
    metrics = dict(metrics, steps_per_sec=steps_per_sec, tokens_per_sec=metrics['tokens'] / elapsed)
    self._last_time, self._last_step = now, step
    self.write(step, 'train', metrics)
    if self.active:
      eta = (self.num_steps - step) / max(steps_per_sec, 1e-9)
      logging.info('step %d/%d  loss %.4f  acc %.3f  lr %.2e  %.2f steps/s  %.0f tok/s  ETA %s',
                   step, self.num_steps, metrics.get('loss', float('nan')),
                   metrics.get('accuracy', float('nan')), metrics.get('learning_rate', 0.0),
                   steps_per_sec, metrics['tokens_per_sec'], format_seconds(eta))
    return metrics

  def elapsed_minutes(self) -> float:
    """Wall-clock minutes of training so far, resumed runs included (see `logged_minutes`)."""
    return self._minutes_before + (time.time() - self._start_time) / 60.0

  def close(self) -> None:
    """Flushes and closes the files. A failure (a full disk) only warns: close runs on the way
    out of a failed run too, whose own error (e.g. a checkpoint that could not be written) says
    more than this one."""
    if self.active:
      try:
        self._tb.close()
        self._jsonl.close()
      except OSError as e:
        logging.warning('the last metrics may be missing from %s: %s', self._workdir, e)


def format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
