"""The training loop's own behaviour (experiments_test.py covers whole runs and resume)."""
import jax
import numpy as np

from experiments import copy_task
from transformer_jax import components
from transformer_jax import trainer


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
