"""Stopping on a validation plateau: `train.early_stop_patience` evaluations without a lower
validation loss end training early, with `train.num_steps` as the cap.

The rule, stated once: an evaluation improves when its loss is below the best so far by more
than `train.early_stop_min_delta`; training stops at the evaluation that is the `patience`-th
in a row not to improve. The trainer then saves that step and writes `early_stop.json`
({'step', 'best_step', 'best_loss', 'patience', 'min_delta'}) in the workdir, which marks the
run as finished: launching it again trains nothing, and a sweep counts it as done.

A resumed run rebuilds the count from the validation records of metrics.jsonl up to the step
it resumes from (records a killed run wrote after its last checkpoint are ignored), so the
stop comes at the same step whether or not the run was interrupted.
"""
import dataclasses
import json
import math
import os
from typing import Any, Dict, Iterable, Optional

from transformer_jax.base.errors import UserError

MARKER = 'early_stop.json'


@dataclasses.dataclass
class Plateau:
  """The running state of the rule.

  Attributes:
    patience: evaluations without improvement that stop training (0: never stop).
    min_delta: how much lower than the best a loss must be to count as an improvement.
    best_loss: the lowest validation loss so far (inf before the first evaluation).
    best_step: the step of `best_loss`.
    since_best: evaluations since the best one.
  """
  patience: int
  min_delta: float = 0.0
  best_loss: float = math.inf
  best_step: Optional[int] = None
  since_best: int = 0

  def update(self, step: int, loss: float) -> bool:
    """Records the validation loss at `step`; True when training should stop here."""
    if loss < self.best_loss - self.min_delta:
      self.best_loss, self.best_step, self.since_best = float(loss), step, 0
    else:
      self.since_best += 1
    return bool(self.patience) and self.since_best >= self.patience

  def record(self, step: int) -> Dict[str, Any]:
    return {'step': step, 'best_step': self.best_step, 'best_loss': self.best_loss,
            'patience': self.patience, 'min_delta': self.min_delta}


def from_records(records: Iterable[Dict[str, Any]], *, patience: int, min_delta: float,
                 split: str, up_to: int) -> Plateau:
  """The rule's state after the `split` evaluations logged at steps <= `up_to` (the last
  record of a step wins: a resumed run logs the steps after its checkpoint again)."""
  losses = {}
  for record in records:
    step = record.get('step')
    if record.get('split') == split and isinstance(step, int) and step <= up_to and \
        isinstance(record.get('loss'), (int, float)):
      losses[step] = record['loss']
  plateau = Plateau(patience, min_delta)
  for step in sorted(losses):
    plateau.update(step, losses[step])
  return plateau


def read_marker(workdir: str) -> Optional[Dict[str, Any]]:
  """The run's early_stop.json, or None if it did not stop early."""
  path = os.path.join(workdir, MARKER)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      marker = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f'{path} is unreadable ({type(e).__name__}): delete it to train on from '
                    'the last checkpoint, or give a new --workdir') from None
  if not isinstance(marker, dict) or not isinstance(marker.get('step'), int):
    raise UserError(f'{path} is not an early-stop record: delete it to train on from the last '
                    'checkpoint, or give a new --workdir')
  return marker


def write_marker(workdir: str, marker: Dict[str, Any]) -> None:
  path = os.path.join(workdir, MARKER)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(marker, f, indent=2)
  os.replace(path + '.tmp', path)


def finished_step(workdir: str, num_steps: int) -> Optional[int]:
  """The step a run in `workdir` finished at: num_steps if that was saved, the early stop's
  step if it stopped on a plateau, else None (not finished)."""
  marker = read_marker(workdir)
  if marker is not None:
    return marker['step']
  folder = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(folder) and str(num_steps) in os.listdir(folder):
    return num_steps
  return None
