"""The three things launch.py can do with an experiment: train, evaluate, translate."""
import json
import os
from typing import Optional

from absl import logging

from transformer_jax import checkpoint
from transformer_jax import components
from transformer_jax import evaluation
from transformer_jax import trainer
from transformer_jax import workdir as workdir_lib
from transformer_jax.errors import UserError


def train(config, workdir: str):
  return trainer.train_and_evaluate(config, workdir)


def restore_params(config, workdir: str, parts, step: Optional[int]):
  """Params of checkpoint `step` (latest if None), averaged over the last `eval.average_last`."""
  differences = workdir_lib.pinned_differences(workdir_lib.load_config(workdir),
                                               workdir_lib._as_json(config))
  if differences:
    raise UserError(f'the experiment differs from the run in {workdir} ({"; ".join(differences[:3])}): '
                    'pass the same experiment and overrides as for training')
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=None, async_save=False)
  available = ckpt.all_steps()
  if not available:
    raise UserError(f'no checkpoint in {workdir}: train first, or point --workdir at a run')
  step = step if step is not None else available[-1]
  template = components.init_state(parts, config.train.seed)
  k = max(1, config.eval.average_last)
  chosen = [s for s in available if s <= step][-k:]
  if len(chosen) > 1:
    logging.info('averaging the params of checkpoints %s', chosen)
    params = checkpoint.average_params(ckpt, chosen, template.params)
  else:
    params = ckpt.restore(template, step)[0].params
  ckpt.close()
  return params, step, chosen


def evaluate(config, workdir: str, step: Optional[int] = None):
  parts = components.build(config, workdir)
  params, step, chosen = restore_params(config, workdir, parts, step)
  evaluator = evaluation.Evaluator(config, workdir, parts)
  metrics = evaluator.evaluate(parts.runner.put_state(params), step)
  metrics['checkpoints'] = chosen
  out_dir = os.path.join(workdir, 'eval')
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f'{evaluator.split}_step{step}_avg{len(chosen)}.json')
  with open(path, 'w') as f:
    json.dump(metrics, f, indent=2)
  logging.info('wrote %s', path)
  return metrics


def translate(config, workdir: str, step: Optional[int] = None, input_path: str = '-'):
  raise UserError('--mode=translate needs the decoding module (issue 4); use --mode=eval for now')
