"""The training loop's own behaviour (experiments_test.py covers whole runs and resume)."""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import copy_task
from tests import orbax_faults
from transformer_jax import checkpoint
from transformer_jax import components
from transformer_jax import trainer
from transformer_jax.errors import UserError


def test_loop_keeps_at_most_one_step_in_flight(tmp_path, monkeypatch):
  """A stop signal saves after the step in flight, not after a queue of dispatched steps."""
  config = copy_task.get_config('smoke')
  config.train.update(num_steps=8, log_every_steps=100, eval_every_steps=100,
                      checkpoint_every_steps=100)       # no flush or save syncs mid-run
  dispatched, waited_on = [], set()
  real_build, real_block = components.build, jax.block_until_ready

  def spy_block(tree):
    waited_on.add(id(tree))
    return real_block(tree)

  def build(*args):
    parts = real_build(*args)
    step_fn = parts.runner.train_step

    def train_step(state, batch):
      # When step k is dispatched, every step before k-1 must have been waited on.
      unwaited = [k for k, out in enumerate(dispatched[:-1]) if id(out) not in waited_on]
      assert not unwaited, f'step {len(dispatched)} dispatched; steps {unwaited} never waited on'
      state, metrics = step_fn(state, batch)
      dispatched.append(metrics)
      return state, metrics

    parts.runner.train_step = train_step
    return parts

  monkeypatch.setattr(components, 'build', build)
  monkeypatch.setattr(jax, 'block_until_ready', spy_block)
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert len(dispatched) == 8 and np.isfinite(metrics['loss'])
  assert all(id(out) in waited_on for out in dispatched[:-1])


def _build_changing_steps(monkeypatch, change):
  """Makes components.build return parts whose train_step output goes through
  `change(step, state, metrics)`; returns a dict that receives the parts as 'parts'."""
  real_build, built = components.build, {}

  def build(*args):
    parts = real_build(*args)
    step_fn, steps = parts.runner.train_step, []

    def train_step(state, batch):
      steps.append(None)
      return change(len(steps), *step_fn(state, batch))

    parts.runner.train_step = train_step
    built['parts'] = parts
    return parts

  monkeypatch.setattr(components, 'build', build)
  return built


def _smoke_config(**train):
  config = copy_task.get_config('smoke')
  config.train.update(num_steps=6, log_every_steps=1, eval_every_steps=100, **train)
  return config


def test_nan_stop_leaves_the_checkpoint_it_names_on_disk(tmp_path, monkeypatch):
  """The loss goes NaN at step 3 while step 2 is still being written: the stop waits for it."""
  config = _smoke_config(checkpoint_every_steps=2)
  orbax_faults.slow_disk(monkeypatch, 1.0)

  def nan_loss_at_3(step, state, metrics):
    return state, (dict(metrics, loss=metrics['loss'] * jnp.nan) if step == 3 else metrics)

  built = _build_changing_steps(monkeypatch, nan_loss_at_3)
  with pytest.raises(UserError) as info:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert str(info.value).startswith('loss became nan by step 3 (checkpoint step 2 is kept): ')
  assert os.listdir(tmp_path / 'checkpoints') == ['2']      # committed, not a tmp dir
  template = jax.eval_shape(lambda: components.init_state(built['parts'], config.train.seed))
  with checkpoint.Checkpointer(str(tmp_path), read_only=True) as ckpt:
    state, _, _, step = ckpt.restore(template)
  assert step == int(state.step) == 2
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params))


def test_nonfinite_params_are_never_saved(tmp_path, monkeypatch):
  """An update that overflows shows in the params before any loss: the save is refused."""
  config = _smoke_config(checkpoint_every_steps=1)

  def nan_params_at_3(step, state, metrics):
    if step == 3:
      state = state.replace(params=jax.tree_util.tree_map(lambda x: x * jnp.nan, state.params))
    return state, metrics

  _build_changing_steps(monkeypatch, nan_params_at_3)
  with pytest.raises(UserError) as info:
    trainer.train_and_evaluate(config, str(tmp_path))
  message = str(info.value)
  assert re.match(r'params/\S+ became NaN or inf by step 3 \(checkpoint step 2 is kept\): lower ',
                  message), message
  assert '\n' not in message
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['1', '2']
