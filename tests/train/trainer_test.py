"""The training loop's own behaviour (experiments_test.py covers whole runs and resume)."""
import os
import re
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.experiments import copy_task
from tests.checkpoints import orbax_faults
from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import checkpoint
from transformer_jax import data
from transformer_jax.data import train_iterator
from transformer_jax.train import components
from transformer_jax.train import metrics_writer
from transformer_jax.train import trainer


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


# --- train.steps_per_loop and the prefetching feed ---------------------------------------

_TIMING = ('time', 'minutes', 'steps_per_sec', 'tokens_per_sec', 'eta_minutes')


@pytest.fixture(scope='module')
def copy_data(tmp_path_factory):
  """One prepared copy-task dataset for the runs below."""
  return str(tmp_path_factory.mktemp('tfds'))


def _feed_config(data_dir, **train):
  """Fixed-shape batches (one bucket) so K steps stack; periods K=4 does not divide (5, 6),
  and gradient accumulation on, so every path of the loop's call sizes is exercised."""
  config = copy_task.get_config('smoke')
  config.data.update(bucket_lengths=(config.data.max_len,), data_dir=data_dir)
  config.optim.grad_accum_steps = 2
  config.eval.bleu = False
  config.train.update(num_steps=12, log_every_steps=5, checkpoint_every_steps=6,
                      eval_every_steps=100, **train)
  return config


def _no_feed_thread_left():
  return not [t for t in threading.enumerate() if t.name == 'Prefetcher']


def _train_counting_calls(config, workdir, monkeypatch, stop_after_call=None):
  """Trains; returns the call sizes the loop made. `stop_after_call=n` sends this process
  SIGTERM from within the n-th call, as a preemption would."""
  real_build, sizes = components.build, []

  def build(*args):
    parts = real_build(*args)
    runner = parts.runner
    one, many = runner.train_step, runner.train_steps

    def counted(fn, size_of):
      def call(state, batch):
        sizes.append(size_of(batch))
        if len(sizes) == stop_after_call:
          os.kill(os.getpid(), signal.SIGTERM)      # StopSignal turns it into a flag
        return fn(state, batch)
      return call

    runner.train_step = counted(one, lambda batch: 1)
    runner.train_steps = counted(many, lambda batch: batch['targets'].shape[1])   # [dev, K, ..]
    return parts

  with monkeypatch.context() as patch:
    patch.setattr(components, 'build', build)
    trainer.train_and_evaluate(config, str(workdir))
  assert _no_feed_thread_left()
  return sizes


def _final_params(workdir, config):
  template = jax.eval_shape(lambda: components.init_state(
      components.build(config, str(workdir)), config.train.seed))
  with checkpoint.Checkpointer(str(workdir), read_only=True) as ckpt:
    state, _, _, step = ckpt.restore(template)
  return step, state.params


def _train_records(workdir):
  records = metrics_writer.read_records(str(workdir / 'metrics.jsonl'))
  return {r['step']: {k: v for k, v in r.items() if k not in _TIMING}
          for r in records if r.get('split') == 'train'}


@pytest.fixture(scope='module')
def one_step_per_call(tmp_path_factory, copy_data):
  """The reference: train.steps_per_loop=1, no interruption."""
  workdir = tmp_path_factory.mktemp('k1')
  with pytest.MonkeyPatch.context() as patch:
    sizes = _train_counting_calls(_feed_config(copy_data, steps_per_loop=1), workdir, patch)
  assert sizes == [1] * 12
  return workdir


def test_steps_per_loop_gives_the_same_params_and_metrics(one_step_per_call, copy_data,
                                                          tmp_path, monkeypatch):
  config = _feed_config(copy_data, steps_per_loop=4)
  sizes = _train_counting_calls(config, tmp_path, monkeypatch)
  # Calls end exactly on the log (5, 10), checkpoint (6) and last (12) steps.
  assert sizes == [4, 1, 1, 4, 1, 1]
  step, params = _final_params(tmp_path, config)
  expected_step, expected = _final_params(one_step_per_call, config)
  assert step == expected_step == 12
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, expected)
  records = _train_records(tmp_path)
  assert sorted(records) == [5, 6, 10, 12]
  assert records == _train_records(one_step_per_call)


@pytest.mark.slow        # three trainings: ~1.5 min on 2 cores
def test_stop_and_resume_with_steps_per_loop_is_exact(one_step_per_call, copy_data, tmp_path,
                                                      monkeypatch):
  """SIGTERM in the call 6->10 while the feed is calls ahead: the checkpoint at 10 records the
  data position of step 10, and the resumed run ends where the uninterrupted one does."""
  config = _feed_config(copy_data, steps_per_loop=4)
  first = _train_counting_calls(config, tmp_path, monkeypatch, stop_after_call=4)
  assert first == [4, 1, 1, 4]
  assert _final_params(tmp_path, config)[0] == 10
  second = _train_counting_calls(config, tmp_path, monkeypatch)
  assert second == [1, 1]
  step, params = _final_params(tmp_path, config)
  assert step == 12
  jax.tree_util.tree_map(np.testing.assert_array_equal, params,
                         _final_params(one_step_per_call, config)[1])
  assert _train_records(tmp_path) == _train_records(one_step_per_call)


class _FailingBatches:
  """A TrainIterator whose `fail_at`-th batch cannot be made."""

  def __init__(self, inner, fail_at):
    self._inner, self._fail_at, self._drawn = inner, fail_at, 0

  def __next__(self):
    self._drawn += 1
    if self._drawn == self._fail_at:
      raise RuntimeError(f'unreadable batch {self._drawn}')
    return next(self._inner)

  def get_state(self):
    return self._inner.get_state()

  def set_state(self, state):
    self._inner.set_state(state)


def test_an_error_making_batches_surfaces_in_the_loop(copy_data, tmp_path, monkeypatch):
  real_make = data.make_train_iterator
  monkeypatch.setattr(data, 'make_train_iterator',
                      lambda *a, **k: _FailingBatches(real_make(*a, **k), fail_at=3))
  with pytest.raises(RuntimeError, match='unreadable batch 3'):
    trainer.train_and_evaluate(_feed_config(copy_data, steps_per_loop=1), str(tmp_path))
  assert _no_feed_thread_left()
  assert not os.listdir(tmp_path / 'checkpoints')     # the error came before step 6


def test_call_sizes_end_calls_on_every_log_eval_checkpoint_profile_and_last_step():
  config = copy_task.get_config('smoke')
  config.train.update(steps_per_loop=4, num_steps=30, log_every_steps=5, checkpoint_every_steps=6,
                      eval_every_steps=8)
  size = trainer._call_sizes(config.train, window=(13, 15))  # pylint: disable=protected-access
  step, ends = 0, []
  while step < 30:
    step += size(step)
    ends.append(step)
  # Single steps up to each of: log 5, 10, ..; checkpoint 6, 12, ..; eval 8, 16, ..; the
  # profile window's edges 13 and 15; the last step 30. Calls of K=4 where none is passed.
  assert ends == [4] + list(range(5, 21)) + [24, 25, 29, 30]


class _Batches:
  """A stand-in TrainIterator: batches of the given lengths, state = batches drawn."""

  def __init__(self, lengths):
    self._lengths, self.drawn = lengths, 0

  def __next__(self):
    length = self._lengths[self.drawn]
    self.drawn += 1
    return {'targets': np.full((2, length), self.drawn)}

  def get_state(self):
    return {'index': self.drawn}


def test_group_batches_stacks_only_batches_of_one_shape():
  batches = _Batches([8, 8, 8, 8, 8, 16, 8, 8, 8, 8, 8])
  units = list(train_iterator.group_batches(batches, lambda step: 4, 0, 10))
  sizes = [len(unit) for unit, _ in units]
  assert sizes == [4, 1, 1, 4]                 # batch 6 is longer: 5 and 6 go alone
  assert [state['index'] for _, state in units] == [4, 5, 6, 10]
  assert [b['targets'][0, 0] for unit, _ in units for b in unit] == list(range(1, 11))
  assert batches.drawn == 10                  # nothing past num_steps


def test_group_batches_follows_size_fn_and_start():
  batches = _Batches([8] * 20)
  sizes = lambda step: 4 if step % 5 + 4 <= 5 else 1
  units = list(train_iterator.group_batches(batches, sizes, 3, 13))
  assert [len(unit) for unit, _ in units] == [1, 1, 4, 1, 1, 1, 1]


def test_prefetcher_keeps_order_then_raises_the_producers_error():
  def items():
    yield from range(5)
    raise ValueError('bad item')

  with train_iterator.Prefetcher(items(), depth=2) as ahead:
    assert [next(ahead) for _ in range(5)] == list(range(5))
    with pytest.raises(ValueError, match='bad item'):
      next(ahead)
    with pytest.raises(ValueError, match='bad item'):   # and again, not a hang
      next(ahead)
  assert _no_feed_thread_left()


def test_prefetcher_stays_depth_ahead_and_close_stops_an_endless_producer():
  made, finished = [], []

  def endless():
    try:
      while True:
        made.append(None)
        yield len(made)
    finally:
      finished.append(True)

  with train_iterator.Prefetcher(endless(), depth=2) as ahead:
    assert next(ahead) == 1
    time.sleep(0.3)
    assert len(made) <= 4        # 2 queued, 1 waiting to be queued, 1 taken
  assert finished == [True] and _no_feed_thread_left()
  with train_iterator.Prefetcher(iter([1]), depth=2) as ahead:
    assert list(ahead) == [1]
