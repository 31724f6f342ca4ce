"""A trained run read back for eval, translate, sample, visualize and export: the check that the
workdir holds a run of the config, the choice of step (--step=N, newest, or best), and its
params averaged over the last eval.average_last readable checkpoints."""
from typing import Optional

import jax
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.checkpoints import averaging
from transformer_jax.checkpoints import checkpoint
from transformer_jax.train import components
from transformer_jax.train import validation


def check_run(config, workdir: str) -> None:
  """Refuses, before anything is built or written, a workdir that holds no run of `config`.

  Building trains a tokenizer and prepares data where none is, so eval/translate/sample check
  first that the workdir has a config.json made with these pinned settings and a checkpoint.
  """
  differences = workdir_lib.pinned_differences(workdir_lib.load_config(workdir),
                                               workdir_lib.as_json(config))
  if differences:      # these modes only read the run: the fix is its own config, not a resume
    shown = '; '.join(differences[:4]) + (' ...' if len(differences) > 4 else '')
    raise UserError(f'{workdir} holds a run with another config ({shown}): omit --experiment to '
                    'use the run\'s own config.json, or give the experiment and overrides it '
                    'was trained with')
  if not workdir_lib.saved_steps(workdir):
    raise UserError(f'no checkpoint in {workdir}: train first, or point --workdir at a run')


BEST_STEP = 'best'      # --step=best: the step train.keep_best kept


def resolve_step(config, workdir: str, step):
  """(step, how it was chosen): `step` unchanged unless it is BEST_STEP, which becomes the saved
  step with the best metric that train.keep_best recorded (checkpoint.Checkpointer.best_step).

  The metric is the config's train.keep_best, else the one the run recorded (its config.json).
  The second value is the eval JSON's `checkpoint_choice` ('latest', 'step' or 'best') and,
  for 'best', `best_metric`, `best_mode` ('min': lower is better) and `best_metric_value`.
  """
  if step != BEST_STEP:
    return step, {'checkpoint_choice': 'latest' if step is None else 'step'}
  metric = (config.train.get('keep_best', '')
            or workdir_lib.load_config(workdir).get('train', {}).get('keep_best', ''))
  if not metric:
    raise UserError(f'--step=best needs the metric the run kept its best checkpoint by, but '
                    f'{workdir} was trained without train.keep_best: give --step=N, or train with '
                    '--experiment.train.keep_best=<metric>, e.g. bleu_tok_lc or loss')
  mode = validation.BEST_MODES.get(metric)
  if mode is None:
    raise UserError(f'train.keep_best={metric!r} is not a known metric: set '
                    f'--experiment.train.keep_best to one of {", ".join(validation.BEST_MODES)}')
  with checkpoint.Checkpointer(workdir, read_only=True) as ckpt:
    best = ckpt.best_step(metric, mode)
  if best is None:
    raise UserError(f'no checkpoint in {workdir} recorded a validation {metric} (train.keep_best '
                    f'records it at steps that are evaluated and saved): give --step=N instead')
  logging.info('--step=best: step %d has the best validation %s (%g; %s is better)', best[0],
               metric, best[1], 'lower' if mode == 'min' else 'higher')
  return best[0], {'checkpoint_choice': 'best', 'best_metric': metric, 'best_mode': mode,
                   'best_metric_value': best[1]}


def restore_params(config, workdir: str, parts, step: Optional[int]):
  """Params of checkpoint `step`, averaged over the last `eval.average_last` readable steps.

  Without `step`, the newest readable steps are used: damaged ones are skipped with a warning
  naming them and left in place (these modes only read). A damaged explicit `step` is a
  UserError that suggests another one. Returns (params, the newest step used, steps averaged).
  `step` may be BEST_STEP (see resolve_step). The caller has checked the run (check_run).
  """
  step = resolve_step(config, workdir, step)[0]
  # Shapes are all a restore needs: no random initialisation just to be overwritten.
  template = jax.eval_shape(lambda: components.init_state(parts, config.train.seed))
  with checkpoint.Checkpointer(workdir, read_only=True) as ckpt:
    params, chosen = averaging.average_newest(ckpt, template.params,
                                              max(1, config.eval.average_last), step)
  if len(chosen) > 1:
    logging.info('averaged the params of checkpoints %s', chosen)
  return params, chosen[-1], chosen
