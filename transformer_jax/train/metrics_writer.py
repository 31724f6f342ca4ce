"""Where a run's numbers go: the console (progress with tokens/s and ETA), TensorBoard
event files (tensorboardX, no TensorFlow) and `metrics.jsonl` in the workdir.

Speed and ETA count training only (`Throughput`): the calls that compile, evaluations and
checkpoint saves are kept out of steps/s, and the ETA adds the evaluations and saves still to
come at the duration of the latest one. TensorBoard also gets the run's config (text tab and
HParams tab) and, at each evaluation, a few translations (evaluation/tensorboard_text.py).

Only process 0 writes; other processes keep quiet.
"""
import contextlib
import dataclasses
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.evaluation import tensorboard_text

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


@dataclasses.dataclass(frozen=True)
class Speed:
  """Training speed at a log step (see `Throughput.report`).

  Attributes:
    steps_per_sec: training steps per second since the last report (or overall, where every
      call since then compiled); None while no step has been timed.
    eta_seconds: the steps left at the overall rate, plus the evaluations and saves left at
      the duration of the latest of each; None while no step has been timed.
    untimed_evals: evaluations left that the ETA leaves out, none having been timed yet.
  """
  steps_per_sec: Optional[float]
  eta_seconds: Optional[float]
  untimed_evals: int = 0


def events_left(step: int, num_steps: int, every: int) -> int:
  """Evaluations (or saves) still to come at a log of `step`: at the multiples of `every` in
  [step, num_steps] (the one at `step` follows its log) and at num_steps itself."""
  count = num_steps // every - (step - 1) // every
  return max(count + (1 if num_steps % every else 0), 0)


class Throughput:
  """Times training alone, on `clock` (seconds; a fake one in tests).

  The loop runs everything that is not training inside `paused(kind)`: the first call of each
  compiled program ('compile', its steps then `trained(..., timed=False)`), evaluations
  ('eval') and checkpoint saves ('checkpoint'). Time before the first pause ends (set-up,
  the first batch) is not counted either.
  """

  def __init__(self, *, num_steps: int, eval_every_steps: int, checkpoint_every_steps: int,
               clock: Callable[[], float] = time.monotonic):
    self.num_steps = num_steps
    self._every = {'eval': eval_every_steps, 'checkpoint': checkpoint_every_steps}
    self._clock = clock
    self._mark = clock()
    self._paused = True            # until the first (compiling) call is done
    self._latest = {}              # kind -> seconds of its latest pause
    self._total = [0, 0.0]         # timed steps, seconds
    self._interval = [0, 0.0]      # the same since the last report

  def _account(self) -> None:
    now = self._clock()
    if not self._paused:
      self._total[1] += now - self._mark
      self._interval[1] += now - self._mark
    self._mark = now

  @contextlib.contextmanager
  def paused(self, kind: str):
    """Keeps the time of the block out of the speed, and times it as a `kind`."""
    self._account()
    self._paused, start = True, self._mark
    try:
      yield
    finally:
      self._account()
      self._paused = False
      self._latest[kind] = self._mark - start

  def trained(self, count: int, timed: bool = True) -> None:
    """`count` more steps trained; `timed=False` for those of a paused (compiling) call."""
    if timed:
      self._total[0] += count
      self._interval[0] += count

  def report(self, step: int) -> Speed:
    """The speed since the last report and the ETA from `step`; starts a new interval."""
    self._account()
    rate = lambda steps, seconds: steps / seconds if steps and seconds > 0 else None
    overall = rate(*self._total)
    interval = rate(*self._interval)
    self._interval = [0, 0.0]
    if overall is None:
      return Speed(None, 0.0 if step >= self.num_steps else None)
    eta, untimed = (self.num_steps - step) / overall, 0
    for kind, every in self._every.items():
      left = events_left(step, self.num_steps, every)
      if kind in self._latest:
        eta += left * self._latest[kind]
      elif kind == 'eval':
        untimed = left
    return Speed(interval or overall, eta, untimed)


def _speed_text(speed: Speed, tokens_per_sec: Optional[float]) -> str:
  """'12.50 steps/s  3200 tok/s  ETA 0:01:20 (+ 2 evaluations)', or 'compiling' before any
  step was timed."""
  if speed.steps_per_sec is None:
    return 'compiling (not timed)'
  text = (f'{speed.steps_per_sec:.2f} steps/s  {tokens_per_sec:.0f} tok/s  '
          f'ETA {format_seconds(speed.eta_seconds)}')
  if speed.untimed_evals:
    text += f' (+ {speed.untimed_evals} evaluation{"s" if speed.untimed_evals > 1 else ""})'
  return text


class MetricsWriter:
  """Console, TensorBoard and JSON-lines output for one run."""

  def __init__(self, workdir: str, *, num_steps: int, start_step: int):
    self.active = jax.process_index() == 0
    self.num_steps = num_steps
    self._start_time = time.time()
    self._last_step = start_step
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

  def train_progress(self, step: int, metrics: Dict[str, float], speed: Speed) -> Dict[str, float]:
    """Adds speed (steps/s, tokens/s: training only, see `Throughput`) and the ETA to the train
    metrics of the steps since the last call, writes and prints them."""
    metrics = dict(metrics)
    if speed.steps_per_sec is not None:
      tokens_per_step = metrics['tokens'] / max(step - self._last_step, 1)
      metrics.update(steps_per_sec=speed.steps_per_sec,
                     tokens_per_sec=tokens_per_step * speed.steps_per_sec,
                     eta_minutes=speed.eta_seconds / 60.0)
    self._last_step = step
    self.write(step, 'train', metrics)
    if self.active:
      logging.info('step %d/%d  loss %.4f  acc %.3f  lr %.2e  %s', step, self.num_steps,
                   metrics.get('loss', float('nan')), metrics.get('accuracy', float('nan')),
                   metrics.get('learning_rate', 0.0),
                   _speed_text(speed, metrics.get('tokens_per_sec')))
    return metrics

  def write_config(self, config, step: int) -> None:
    """The run's config: as text (TensorBoard's text tab) and as hyper-parameters (its HParams
    tab: each run folder is a session, the scalars its metrics)."""
    if not self.active:
      return
    from tensorboardX import summary as tb_summary   # with SummaryWriter: imported lazily
    self._tb.add_text(tensorboard_text.CONFIG_TAG, tensorboard_text.config_markdown(config), step)
    # Only the session's start: without an experiment summary TensorBoard takes the union of
    # the hyper-parameters of every run it shows, and their scalars as the metrics.
    _, session_start, _ = tb_summary.hparams(tensorboard_text.hparams(config), {})
    self._tb.file_writer.add_summary(session_start, step)
    self._tb.flush()

  def write_examples(self, step: int, split: str, sources: Sequence[str],
                     references: Sequence[str], hypotheses: Sequence[str]) -> None:
    """Aligned source / reference / hypothesis examples of an evaluation, as a text table."""
    if self.active and hypotheses:
      self._tb.add_text(f'{split}/{tensorboard_text.EXAMPLES_TAG}',
                        tensorboard_text.examples_markdown(sources, references, hypotheses), step)

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
