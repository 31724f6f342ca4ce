"""Which checkpoint steps orbax keeps, and the ranking by an evaluation metric.

Keeping the best step (`train.keep_best`): besides the newest `max_to_keep` steps, the step with
the best value of one evaluation metric is kept, through orbax's own retention rules
(`AnyPreservationPolicy` of `LatestN(max_to_keep)` and `BestN(n=1)`; orbax's plain
`best_fn` + `max_to_keep` would keep the best K instead of the newest K). `save(metrics=...)`
records the metric with the step (orbax's `metrics` item, so the ranking survives a restart).
The trainer passes the metrics of an evaluation of that very step only: a save at a step with no
evaluation (checkpoint_every_steps not a multiple of eval_every_steps, a stop signal) carries no
metric, is never "best", and is kept only while it is among the newest. A NaN/inf value counts
as no metric. `best_step` finds the kept one for `--mode=eval --step=best`.
"""
import math
from typing import Any, Optional, Sequence

from absl import logging
import numpy as np
import orbax.checkpoint as ocp

from transformer_jax.checkpoints import diagnosis as checkpoint_errors


def metric_score(metric: str, mode: str):
  """score(saved metrics) -> float, higher is better; -inf when `metric` is absent or not finite.

  mode is 'max' (a higher value is better) or 'min' (lower is better).
  """
  def score(saved) -> float:
    value = (saved or {}).get(metric) if isinstance(saved, dict) else None
    if (not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool)
        or not math.isfinite(value)):
      return -math.inf
    return float(value) if mode == 'max' else -float(value)
  return score


def options(max_to_keep: Optional[int], best_metric: str, best_mode: str) -> dict:
  """The retention fields of orbax's CheckpointManagerOptions.

  Without `best_metric`: the newest `max_to_keep` steps (None keeps all). With it: those plus
  the best one. best_fn makes orbax record the metrics; the score is already oriented (higher is
  better), hence best_mode 'max' for both.
  """
  if not best_metric:
    return {'max_to_keep': max_to_keep}
  score, policies = metric_score(best_metric, best_mode), ocp.checkpoint_managers
  return {'preservation_policy': policies.AnyPreservationPolicy([
      policies.LatestN(max_to_keep),
      policies.BestN(get_metric_fn=score, n=1, keep_checkpoints_without_metrics=False)]),
          'best_fn': score, 'best_mode': 'max'}


def recorded_metrics(best_metric: str, metrics: Optional[dict]) -> dict:
  """What a save records for ranking: {metric: value} when finite, else {} (not None: orbax warns
  at every save without metrics)."""
  if metric_score(best_metric, 'max')(metrics) == -math.inf:
    return {}
  return {best_metric: float(metrics[best_metric])}


def best_step(manager: ocp.CheckpointManager, steps: Sequence[int], metric: str,
              mode: str) -> Optional[tuple[int, float]]:
  """(step, value) of the step in `steps` whose recorded `metric` is best, or None if none has it.

  A tie goes to the newer step, as in orbax's ranking.
  """
  score, best = metric_score(metric, mode), None
  for step in steps:
    saved = manager.metrics(step)
    if score(saved) != -math.inf and (best is None or score(saved) >= best[0]):
      best = (score(saved), step, float(saved[metric]))
  return None if best is None else best[1:]


class TolerantManager(ocp.CheckpointManager):
  """orbax's manager, except that a step whose metrics file cannot be read (damaged) counts as
  having no metric, with a warning, instead of failing every open and reload of the directory
  (orbax reads every step's metrics there). The state itself is checked when it is read."""

  def _get_metrics(self, step: int) -> Any:
    try:
      return super()._get_metrics(step)
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a storage error)
      if not checkpoint_errors.is_storage_error(e):
        raise
      logging.warning('checkpoint step %d: its saved metrics cannot be read (%s); it counts as '
                      'having none', step, checkpoint_errors.short(e))
      return None
