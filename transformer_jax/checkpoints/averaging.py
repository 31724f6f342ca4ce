"""Checkpoint averaging for evaluation (Vaswani et al. 2017, §6.1: the base model averages its
last 5 checkpoints, the big model its last 20).

`average_params` averages given steps, each of which must be readable; `average_newest` takes the
newest readable steps, skipping damaged ones with a warning (and leaving them where they are:
evaluation only reads). Both read through `checkpoint.Checkpointer.read_params`, so every step's
params are shape-checked and checksum-verified.
"""
from typing import Any, Iterable, Optional, Sequence, Union

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import checkpoint

PyTree = Any


def average_params(checkpointer_or_dir: Union[checkpoint.Checkpointer, str],
                   steps: Iterable[int], template: PyTree) -> PyTree:
  """The element-wise mean of the params saved at `steps`.

  Sums in float32 and casts each mean back to the template leaf's dtype, so bfloat16 params do not
  lose precision in the sum.

  Args:
    checkpointer_or_dir: an open Checkpointer, or a workdir holding `checkpoints/`.
    steps: the steps to average, e.g. `checkpointer.last_k_steps(5)`.
    template: the params the config builds (concrete or abstract), not the whole TrainState.

  Returns:
    Params with the template's structure and dtypes.

  Raises:
    UserError: no steps, or a step is missing, damaged or does not fit the template.
  """
  steps = list(steps)
  if not steps:
    raise UserError('average_params got no checkpoint steps: save checkpoints first or ask for '
                    'fewer to average')
  if isinstance(checkpointer_or_dir, checkpoint.Checkpointer):
    return _average_steps(checkpointer_or_dir, steps, template)
  with checkpoint.Checkpointer(checkpointer_or_dir, read_only=True) as checkpointer:
    return _average_steps(checkpointer, steps, template)


def _average_steps(checkpointer, steps: Sequence[int], template: PyTree) -> PyTree:
  for step in steps:
    checkpointer.require_step(step)
  return _average(checkpointer, steps, template, len(steps), required=steps)[0]


def average_newest(checkpointer: checkpoint.Checkpointer, template: PyTree, count: int,
                   step: Optional[int] = None) -> tuple[PyTree, list[int]]:
  """The mean params of the newest `count` readable steps up to `step`.

  Damaged steps are skipped with a warning that names them, and older steps are taken instead.
  An explicitly chosen `step` must itself be readable.

  Args:
    checkpointer: an open Checkpointer (read-only for evaluation).
    template: the params the config builds (concrete or abstract), not the whole TrainState.
    count: how many steps to average; 1 gives one step's params.
    step: the newest step to use; None means the newest saved one.

  Returns:
    (params with the template's structure and dtypes, the steps averaged, oldest first).

  Raises:
    UserError: no checkpoint, `step` is missing or damaged, no step is readable, or the params
      do not fit the template.
  """
  steps = checkpointer.all_steps()
  if not steps:
    raise UserError(f'no checkpoint in {checkpointer.directory}: train first, or point --workdir '
                    'at a run')
  if step is not None:
    checkpointer.require_step(step)
  newest_first = [s for s in reversed(steps) if step is None or s <= step]
  _check_enough(checkpointer, newest_first, count)
  return _average(checkpointer, newest_first, template, count,
                  required=() if step is None else (step,))


def _average(checkpointer, candidates: Sequence[int], template: PyTree, count: int,
             required: Sequence[int]) -> tuple[PyTree, list[int]]:
  """Averages the first `count` readable `candidates`, skipping damaged ones not `required`.

  Accumulates one step's params at a time, so memory stays at two copies of the params.
  """
  abstract = checkpoint.abstract_state(template)
  # Read float leaves as float32 whatever the template's dtype, so nothing is rounded before the
  # sum (orbax casts to the requested dtype while reading).
  as_f32 = jax.tree_util.tree_map(
      lambda t: t.update(dtype=jnp.float32) if _is_float(t) else t, abstract)
  total, chosen = None, []
  for step in candidates:
    if len(chosen) == count:
      break
    try:
      params = checkpointer.read_params(as_f32, step)
    except checkpoint.DamagedStepError as e:
      if step in required:
        raise checkpointer.damaged_step_error(step, e) from e
      logging.warning('checkpoint step %d in %s is damaged (%s): skipping it (left in place)',
                      step, checkpointer.directory, e)
      continue
    params = jax.tree_util.tree_map(np.asarray, params)
    total = params if total is None else jax.tree_util.tree_map(_add_floats, total, params)
    chosen.append(step)
  if not chosen:
    raise UserError(f'no readable checkpoint in {checkpointer.directory}: steps '
                    f'{sorted(candidates)} are all damaged (see the warnings above); restore a '
                    'backup or train again')
  _check_enough(checkpointer, chosen, count, readable=True)
  mean = jax.tree_util.tree_map(
      lambda s, t: jnp.asarray(s / np.float32(len(chosen)) if _is_float(s) else s, dtype=t.dtype),
      total, abstract)
  return mean, sorted(chosen)


def _check_enough(checkpointer, steps: Sequence[int], count: int, readable: bool = False) -> None:
  """Refuses to average fewer checkpoints than asked for: a quietly smaller average would be
  reported as the average of `count`."""
  if len(steps) < count:
    kind = 'readable ' if readable else ''
    raise UserError(f'eval.average_last={count} but {checkpointer.directory} has only '
                    f'{len(steps)} {kind}checkpoint(s) up to the chosen step ({sorted(steps)}): set '
                    f'--experiment.eval.average_last={max(len(steps), 1)} or fewer')


def _is_float(x) -> bool:
  return jnp.issubdtype(x.dtype, jnp.floating)


def _add_floats(total: np.ndarray, x: np.ndarray) -> np.ndarray:
  """Sums float leaves; any other leaf (a counter) is not averaged but kept from the newest step."""
  return total + x if _is_float(total) else total
