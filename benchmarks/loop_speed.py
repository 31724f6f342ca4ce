"""The real training loop's speed against the bare compiled step, printed as JSON (issue #16).

  python benchmarks/loop_speed.py                                  # Multi30k smoke model
  python benchmarks/loop_speed.py --steps=400 --steps_per_loop=4 --noprefetch
  python benchmarks/loop_speed.py --experiment=experiments/multi30k.py \\
      --experiment.data.tokens_per_batch=2048 --steps=240

Runs `trainer.train_and_evaluate` on Multi30k (real data from data.raw_dir, by default
../shared/data/multi30k) for --steps steps in a fresh workdir, with real (async orbax)
checkpoints every --checkpoint_every_steps and evaluation off, then times the bare compiled
call on batches of the first batch's shape (use packed data, as experiments/multi30k.py
has: bucketed batches change shape). Timers wrap the loop's pieces; nothing in the loop
changes. Reported:

  loop_steps_per_s   steps after --warmup_steps over the wall time from there (the device
                     idle, all earlier steps done) to the last step's checkpoint; the
                     checkpoints on the way are included, the last one's save is not, nor
                     the first call of a program first met after the warm-up, which
                     compiles it (compile_s_left_out: with K=8 and logs every 100 steps,
                     the single steps at step 97)
  bare_steps_per_s   back-to-back calls of the same compiled program (K steps each with
                     --steps_per_loop=K) on one device batch: no data, logging or saves;
                     the mean of --bare_steps timed before and after the loop (both in
                     bare_before_after: on a shared machine they show the noise)
  ratio              loop / bare (target >= 0.9)
  host_ms_per_step   the loop thread's own time per step: waiting for the next call's
                     batch (all of its making and transfer without prefetch) plus dispatch
  host_fraction      host_ms_per_step over the bare step's time (target <= 0.05 on CPU);
                     wait_batch_ms_per_step + dispatch_ms_per_step = host_ms_per_step
  make_ms_per_step, transfer_ms_per_step: batch assembly (TrainIterator) and stacking plus
                     device_put, on the feed thread when prefetching
  checkpoint_save_ms the loop's wait in each checkpoint save(); final_save_s: the last
                     save plus the wait for it to reach the disk
  cpu_ratio          bare over loop process CPU time per step (all threads): the loop's extra
                     work, less sensitive than `ratio` to other jobs on a shared machine
"""
import contextlib
import json
import shutil
import tempfile
import time

import jax
from absl import app
from absl import flags
from ml_collections import config_flags

from transformer_jax.checkpoints import checkpoint
from transformer_jax import data
from transformer_jax.evaluation import evaluators as evaluation
from transformer_jax.train import components
from transformer_jax.train import trainer

_EXPERIMENT = config_flags.DEFINE_config_file(
    'experiment', 'experiments/multi30k.py:smoke', 'experiment file[:variant]; override fields '
    'with --experiment.<section>.<field>=<value>', lock_config=True)
_STEPS = flags.DEFINE_integer('steps', 300, 'training steps of the loop')
_STEPS_PER_LOOP = flags.DEFINE_integer('steps_per_loop', 1, 'train.steps_per_loop (K)')
_PREFETCH = flags.DEFINE_bool('prefetch', True, 'train.prefetch_depth=2 (else 0)')
_WARMUP = flags.DEFINE_integer('warmup_steps', 20, 'untimed steps (compilation) of the loop')
_BARE_STEPS = flags.DEFINE_integer('bare_steps', 100, 'timed steps of the bare call')
_LOG_EVERY = flags.DEFINE_integer('log_every_steps', 100, 'train.log_every_steps')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every_steps', 200,
                                         'train.checkpoint_every_steps')
_WORKDIR = flags.DEFINE_string('workdir', '', 'run folder (removed after); default a temp dir')


class _Timers:
  """Wall-clock totals of the loop's pieces, filled by the wrappers below."""

  def __init__(self):
    self.make = self.transfer = self.wait_batch = self.dispatch = 0.0
    self.last_wait = 0.0            # the loop thread's wait for the latest call's batch
    self.calls = {}                 # steps per call -> number of calls
    self.saves = []                 # (entry time, seconds) of each checkpoint save()
    self.timed_from = None          # (time, process CPU time, step) where timing starts
    self.compiled = set()           # (program, steps per call) already called once
    self.compile_s = self.compile_cpu_s = 0.0   # first calls inside the timed window


def _timed(fn, total_name, timers):
  def call(*args, **kwargs):
    start = time.perf_counter()
    try:
      return fn(*args, **kwargs)
    finally:
      setattr(timers, total_name, getattr(timers, total_name) + time.perf_counter() - start)
  return call


class _TimedBatches:
  """A TrainIterator whose next() is timed (batch assembly)."""

  def __init__(self, inner, timers):
    self._inner, self._timers = inner, timers

  def __next__(self):
    start = time.perf_counter()
    batch = next(self._inner)
    self._timers.make += time.perf_counter() - start
    return batch

  def get_state(self):
    return self._inner.get_state()

  def set_state(self, state):
    self._inner.set_state(state)


class _TimedFeed:
  """The loop's feed, with the loop thread's wait for each call's batch timed."""

  def __init__(self, inner, timers):
    self._inner, self._timers = inner, timers

  def __enter__(self):
    self._calls = self._inner.__enter__()
    return self

  def __exit__(self, *exc_info):
    return self._inner.__exit__(*exc_info)

  def __next__(self):
    start = time.perf_counter()
    item = next(self._calls)
    self._timers.last_wait = time.perf_counter() - start
    return item


def _instrument_runner(runner, timers, warmup_steps):
  """Times put_batch(es) and the dispatch of each call; marks where loop timing starts."""
  runner.put_batch = _timed(runner.put_batch, 'transfer', timers)
  runner.put_batches = _timed(runner.put_batches, 'transfer', timers)
  done = {'steps': 0}

  def dispatching(fn, steps_of):
    def call(state, batch):
      count = steps_of(batch)
      if timers.timed_from is None and done['steps'] >= warmup_steps:
        jax.block_until_ready(state)           # every earlier step done: start the clock
        timers.timed_from = (time.perf_counter(), time.process_time(), done['steps'])
      first = (fn, count) not in timers.compiled
      timers.compiled.add((fn, count))
      start, cpu = time.perf_counter(), time.process_time()
      out = fn(state, batch)
      if timers.timed_from is not None:
        if first:
          # A program's first call compiles it (a K that does not divide the log or checkpoint
          # period first runs single steps after the warm-up): a one-time cost, left out.
          timers.compile_s += time.perf_counter() - start
          timers.compile_cpu_s += time.process_time() - cpu
        else:
          timers.dispatch += time.perf_counter() - start
        timers.wait_batch += timers.last_wait
        timers.calls[count] = timers.calls.get(count, 0) + 1
      done['steps'] += count
      return out
    return call

  stacked = runner.__class__.__name__ == 'PmapRunner'     # [devices, K, ...] vs [K, ...]
  runner.train_step = dispatching(runner.train_step, lambda batch: 1)
  runner.train_steps = dispatching(
      runner.train_steps, lambda batch: next(iter(batch.values())).shape[1 if stacked else 0])


def _patches(timers, warmup_steps):
  """(owner, attribute, replacement): the loop's pieces wrapped in timers, evaluation off."""
  real_build, real_iter = components.build, data.make_train_iterator
  real_feed, real_save = getattr(trainer, '_open_feed'), checkpoint.Checkpointer.save

  def build(*args):
    parts = real_build(*args)
    _instrument_runner(parts.runner, timers, warmup_steps)
    return parts

  def save(self, step, *args, **kwargs):
    start, cpu = time.perf_counter(), time.process_time()
    try:
      return real_save(self, step, *args, **kwargs)
    finally:
      timers.saves.append((start, cpu, time.perf_counter() - start))

  return [(components, 'build', build),
          (data, 'make_train_iterator', lambda *a, **k: _TimedBatches(real_iter(*a, **k), timers)),
          (trainer, '_open_feed', lambda *a, **k: _TimedFeed(real_feed(*a, **k), timers)),
          (checkpoint.Checkpointer, 'save', save),
          (evaluation.Evaluator, 'evaluate', lambda self, params, step, writer=None, **k: {})]


@contextlib.contextmanager
def _patched(patches):
  originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
  for owner, name, value in patches:
    setattr(owner, name, value)
  try:
    yield
  finally:
    for owner, name, value in originals:
      setattr(owner, name, value)


def _loop_config():
  config = _EXPERIMENT.value
  config.train.update(num_steps=_STEPS.value, steps_per_loop=_STEPS_PER_LOOP.value,
                      prefetch_depth=2 if _PREFETCH.value else 0,
                      log_every_steps=_LOG_EVERY.value, eval_every_steps=_STEPS.value,
                      checkpoint_every_steps=_CHECKPOINT_EVERY.value, keep_best='',
                      profile_steps='')
  return config


def _time_loop(config, workdir):
  """train_and_evaluate with timers; returns the timers and the loop's end time."""
  timers = _Timers()
  with _patched(_patches(timers, _WARMUP.value)):
    trainer.train_and_evaluate(config, workdir)
    ended = time.perf_counter()
  return timers, ended


class _BareStep:
  """The compiled call alone, back to back on one device batch of the loop's first shape."""

  def __init__(self, config, workdir):
    parts = components.build(config, workdir)      # makes the workdir's tokenizer and data
    self._runner, self._k = parts.runner, config.train.steps_per_loop
    train_iter = data.make_train_iterator(config.data, parts.tokenizer, workdir=workdir,
                                          batch_multiple=jax.device_count())
    first = next(train_iter)
    self.shape = list(first['targets'].shape)          # [rows, length]
    if self._k == 1:
      self._batch, self._call = self._runner.put_batch(first), self._runner.train_step
    else:
      self._batch = self._runner.put_batches([first] * self._k)
      self._call = self._runner.train_steps
    self._state = self._runner.put_state(components.init_state(parts, config.train.seed))
    self.steps_per_s(3 * self._k)                   # compile, then settle

  def steps_per_s(self, steps):
    """(steps/s, process CPU seconds per step) of `steps` steps."""
    calls = max(steps // self._k, 1)
    jax.block_until_ready(self._state)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
      self._state, metrics = self._call(self._state, self._batch)
    jax.block_until_ready((self._state, metrics))
    done = calls * self._k
    return done / (time.perf_counter() - start), (time.process_time() - cpu) / done


def _report(config, timers, ended, bare, shape):
  start, start_cpu, from_step = timers.timed_from
  last_save_entry, last_save_cpu, last_save_s = timers.saves[-1]
  steps = config.train.num_steps - from_step
  loop = steps / (last_save_entry - start - timers.compile_s)
  loop_cpu_ms = 1e3 * (last_save_cpu - start_cpu - timers.compile_cpu_s) / steps
  host_ms = 1e3 * (timers.wait_batch + timers.dispatch) / steps
  bare_steps_per_s = sum(rate for rate, _ in bare) / len(bare)
  bare_cpu_ms = 1e3 * sum(cpu for _, cpu in bare) / len(bare)
  per_step_ms = lambda seconds: round(1e3 * seconds / config.train.num_steps, 3)
  return {
      'platform': jax.devices()[0].platform, 'devices': jax.device_count(),
      'parallelism': config.train.parallelism, 'model_dim': config.model.get('model_dim'),
      'num_layers': config.model.get('num_layers'), 'targets_shape': shape,
      'steps': config.train.num_steps, 'timed_steps': steps,
      'steps_per_loop': config.train.steps_per_loop,
      'prefetch_depth': config.train.prefetch_depth,
      'calls_by_steps': {str(k): v for k, v in sorted(timers.calls.items())},
      'compile_s_left_out': round(timers.compile_s, 3),
      'loop_steps_per_s': round(loop, 2), 'bare_steps_per_s': round(bare_steps_per_s, 2),
      'bare_before_after': [round(rate, 2) for rate, _ in bare],
      'ratio': round(loop / bare_steps_per_s, 3),
      'loop_cpu_ms_per_step': round(loop_cpu_ms, 3), 'bare_cpu_ms_per_step': round(bare_cpu_ms, 3),
      'cpu_ratio': round(bare_cpu_ms / loop_cpu_ms, 3),
      'bare_step_ms': round(1e3 / bare_steps_per_s, 3), 'host_ms_per_step': round(host_ms, 3),
      'wait_batch_ms_per_step': round(1e3 * timers.wait_batch / steps, 3),
      'dispatch_ms_per_step': round(1e3 * timers.dispatch / steps, 3),
      'host_fraction': round(host_ms * bare_steps_per_s / 1e3, 4),
      'make_ms_per_step': per_step_ms(timers.make),
      'transfer_ms_per_step': per_step_ms(timers.transfer),
      'checkpoint_save_ms': [round(1e3 * s, 1) for _, _, s in timers.saves[:-1]],
      'final_save_s': round(ended - last_save_entry, 3),
      'final_save_call_ms': round(1e3 * last_save_s, 1),
  }


def main(argv):
  del argv
  config = _loop_config()
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='loop_speed_')
  try:
    bare = _BareStep(config, workdir)
    before = bare.steps_per_s(_BARE_STEPS.value)
    timers, ended = _time_loop(config, workdir)
    after = bare.steps_per_s(_BARE_STEPS.value)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  print(json.dumps(_report(config, timers, ended, (before, after), bare.shape)))


if __name__ == '__main__':
  app.run(main)
