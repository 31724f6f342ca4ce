"""How far each member trained and whether it had stopped learning: its curves from
metrics.jsonl, the budget it used (steps, target tokens, training FLOPs), the "still improving"
rule and the learning-curve figure of a report.

Still improving (the rule, stated once): over the last 20% of a member's steps, its
validation loss fell by more than 1% of its value at the start of that window. A member with
fewer than 3 validation evaluations is judged on its training loss instead (the mini budgets
evaluate once, at the end), which the report says. A row is still improving when most of its
members are.

Training FLOPs are 6 x parameters x target tokens (the forward and backward matmuls, attention
scores not counted), from the logged target-token counts and the evaluation's `num_params`.
"""
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from transformer_jax.train import metrics_writer

WINDOW = 0.2          # the last 20% of the steps
MIN_DROP = 0.01       # a relative fall of more than 1% is "still improving"
RULE = ('the loss fell by more than 1% over the last 20% of the steps (validation loss; the '
        'training loss for members evaluated fewer than 3 times)')


def _by_step(records, split: str, key: str) -> List[Tuple[int, float]]:
  """(step, value) of `split` records, the last record of a step winning (resumed runs log
  the steps after their checkpoint again)."""
  values = {}
  for record in records:
    if record.get('split') == split and isinstance(record.get(key), (int, float)):
      values[record['step']] = float(record[key])
  return sorted(values.items())


def read_log(folder: str) -> Dict[str, Any]:
  """A member's curves and budget from its metrics.jsonl."""
  records = metrics_writer.read_records(os.path.join(folder, 'metrics.jsonl'))
  train = _by_step(records, 'train', 'loss')
  tokens = dict(_by_step(records, 'train', 'tokens'))
  minutes = [r['minutes'] for r in records if isinstance(r.get('minutes'), (int, float))]
  norms = _by_step(records, 'train', 'grad_norm')
  return {'validation_curve': _by_step(records, 'validation', 'loss'), 'train_curve': train,
          'steps': train[-1][0] if train else None,
          'tokens': sum(tokens.values()) if tokens else None,
          'minutes': minutes[-1] if minutes else None,
          'grad_norm_start': norms[0][1] if norms else None,
          'grad_norm_end': norms[-1][1] if norms else None}


def _value_at(curve: Sequence[Tuple[int, float]], step: float) -> float:
  """The curve's value at the last logged step at or before `step` (its first value before)."""
  before = [v for s, v in curve if s <= step]
  return before[-1] if before else curve[0][1]


def still_improving(log: Dict[str, Any]) -> Tuple[Optional[bool], str]:
  """(whether the member was still improving at its last step, the curve judged:
  'validation' or 'training'); (None, '') without a curve."""
  curve, which = log['validation_curve'], 'validation'
  if len(curve) < 3:
    curve, which = log['train_curve'], 'training'
  if len(curve) < 2:
    return None, ''
  last_step, last = curve[-1]
  start = _value_at(curve, last_step * (1 - WINDOW))
  return bool(start - last > MIN_DROP * abs(start)), which


def flops(params: Optional[float], tokens: Optional[float]) -> Optional[float]:
  return 6.0 * params * tokens if params and tokens else None


def _mean_band(curves: Sequence[Sequence[Tuple[int, float]]]):
  """Steps every curve has, with the mean and standard error over the curves there (a
  member that stopped early ends the band)."""
  common = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
  means, errors = [], []
  for step in common:
    values = [dict(c)[step] for c in curves]
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    means.append(mean)
    errors.append(sd / math.sqrt(len(values)))
  return common, means, errors


def plot(logs_by_row: Dict[str, List[Dict[str, Any]]], path: str, title: str,
         improving: Dict[str, Optional[bool]]) -> bool:
  """Validation (or, without it, training) loss against steps per row: mean ± s.e. band
  over seeds; rows still improving are marked in the legend. False if nothing to draw."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  drawn = False
  for row, logs in logs_by_row.items():
    curves = [l['validation_curve'] for l in logs if len(l['validation_curve']) >= 3]
    which = 'validation'
    if not curves:
      curves, which = [l['train_curve'] for l in logs if len(l['train_curve']) >= 2], 'training'
    if not curves:
      continue
    steps, means, errors = _mean_band(curves)
    if not steps:
      continue
    mark = ' (still improving)' if improving.get(row) else ''
    line, = ax.plot(steps, means, label=f'{row}{mark}' + ('' if which == 'validation' else ' [train]'))
    ax.fill_between(steps, [m - e for m, e in zip(means, errors)],
                    [m + e for m, e in zip(means, errors)], color=line.get_color(), alpha=0.2)
    drawn = True
  if not drawn:
    plt.close(fig)
    return False
  ax.set_xlabel('step')
  ax.set_ylabel('loss (mean ± s.e. over seeds)')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return True
