"""The training loop: train_and_evaluate(config, workdir). It only sequences the work;
steps, data, checkpoints, evaluation and logging live in their own modules.

Each pass of the loop is one compiled call: `train.steps_per_loop` (K) steps on K stacked
batches of one shape (`steps.train_steps`, a `lax.scan`; the same state and metrics as K
one-step calls). No call passes a log, evaluation, checkpoint, profile-window or last step:
where K steps would, or where the batch shape changes (bucketing), single steps run, so
all of these happen at the steps they do with K=1, whatever K. A thread makes, stacks and
puts the batches on the devices `train.prefetch_depth` calls ahead, each with the data
iterator state after it, which is what a checkpoint records.

Speed and ETA count training alone (metrics_writer.Throughput): the first call of each program
(it compiles), evaluations and saves are timed apart. A run ends with a block naming where its
results are and what to run next; relaunched once finished, it says so and writes nothing.
"""
import contextlib
import glob
import math
import os
import shlex
import signal
import time
from typing import Callable, Dict, Optional

import jax
import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.checkpoints import checkpoint
from transformer_jax.checkpoints import integrity as checkpoint_integrity
from transformer_jax import data
from transformer_jax.data import train_iterator
from transformer_jax.evaluation import console
from transformer_jax.evaluation import evaluators as evaluation
from transformer_jax.evaluation import metric_sums
from transformer_jax.evaluation import word_vectors
from transformer_jax.train import components
from transformer_jax.train import early_stop
from transformer_jax.train import metrics_writer
from transformer_jax.train import profiling
from transformer_jax.train import validation


class StopSignal:
  """Turns the first SIGTERM/SIGINT into a flag the loop polls (save, then stop)."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning('signal %d: saving a checkpoint and stopping', signum)
    self.requested = True
    signal.signal(signum, self._previous[signum])    # a second signal acts as usual

  def __exit__(self, *exc_info):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _restore_or_init(parts, ckpt, train_iter, seed):
  state = components.init_state(parts, seed)
  if ckpt.latest_step() is None:
    return state, 0
  state, data_state, _, step = ckpt.restore(state)
  train_iter.set_state(data_state)
  logging.info('resumed from checkpoint step %d', step)
  return state, step


def train_and_evaluate(config, workdir: str, *,
                       clock: Callable[[], float] = time.monotonic) -> Dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds a run); returns the last eval metrics.

  Every check that needs no data runs before the first write; the workdir is then locked
  against a second training, and a set-up that still fails (on what only the data shows)
  takes back what it wrote. A run already trained to train.num_steps is left as it is ({}).
  Called from Python, the progress lines are shown too (console.show_info). `clock` times
  the training speed (seconds; a fake one in tests).
  """
  console.show_info()
  workdir_lib.check_config(workdir, config)      # read-only: nothing written before the checks
  if _already_trained(config, workdir):
    return {}
  components.preflight(config, workdir)
  _check_checkpoints_folder(workdir)
  stopped = early_stop.read_marker(workdir)
  if stopped is not None:
    logging.info('%s stopped on a validation plateau at step %d (best loss %.4f at step %s): '
                 'nothing to train; evaluate it with %s, or delete %s to train on',
                 workdir, stopped['step'], stopped['best_loss'], stopped['best_step'],
                 console.command('eval', workdir), early_stop.MARKER)
    return {}
  resumes_at = max(workdir_lib.saved_steps(workdir), default=0)
  _check_not_past(config, workdir, resumes_at)
  profiling.window(config.train.get('profile_steps', ''), start_step=resumes_at,
                   num_steps=config.train.num_steps)
  if jax.process_index() != 0:        # process 0 alone locks and tidies the shared workdir
    return _train(config, workdir, _set_up(config, workdir), clock)
  before = workdir_lib.top_level_entries(workdir)
  with workdir_lib.training_lock(workdir):
    with workdir_lib.removed_on_setup_failure(workdir, before):
      run = _set_up(config, workdir)
    return _train(config, workdir, run, clock)


def _already_trained(config, workdir: str) -> bool:
  """Whether the workdir's newest checkpoint is step train.num_steps (then says what to do
  instead: nothing is trained or written)."""
  step = max(workdir_lib.saved_steps(workdir), default=0)
  if not step or step != config.train.num_steps:
    return False
  if jax.process_index() == 0:
    logging.info('%s is already trained to step %d (train.num_steps=%d): nothing to train, '
                 'nothing written. To train on, raise train.num_steps (e.g. %s); to use it: %s',
                 workdir, step, step, console.setting('train.num_steps', 2 * step),
                 ', or '.join(_next_commands(config, workdir)))
  return True


def _next_commands(config, workdir: str):
  """The commands that use a trained run: evaluate it, and translate or sample with it."""
  family = components.family_of(config)
  commands = [console.command('eval', workdir)]
  if family.samples:
    commands.append(console.command('sample', workdir))
  elif family.decodes:
    commands.append(console.command('translate', workdir, '< sources.txt'))
  return commands


def _check_checkpoints_folder(workdir: str) -> None:
  """Refuses a checkpoints path that is not a folder, or a folder new steps cannot be written
  to, before anything is written (a resume would otherwise train from step 0 over the run, or
  fail at its first save)."""
  folder = os.path.join(workdir, checkpoint.CHECKPOINT_SUBDIR)
  if os.path.lexists(folder) and not os.path.isdir(folder):
    raise UserError(f'{folder} is not a folder: move it aside (a run keeps its checkpoints '
                    'there), or give a new --workdir')
  if not os.path.isdir(folder):
    return
  probe = os.path.join(folder, f'.write-test-{os.getpid()}')
  try:
    with open(probe, 'w'):
      pass
    os.remove(probe)
  except OSError as e:
    raise UserError(f'{folder} cannot be written ({e.strerror}): make it writable (chattr -i, '
                    'permissions, a read-only mount) to resume, or give a new --workdir') from None


def _check_not_past(config, workdir: str, step: int) -> None:
  """Refuses to 'resume' a run that is already past train.num_steps (it would do nothing)."""
  if step > config.train.num_steps:
    raise UserError(f'train.num_steps={config.train.num_steps} is below step {step} that '
                    f'{workdir} has reached: set --experiment.train.num_steps above {step} to '
                    'train on, or use --mode=eval')


def _set_up(config, workdir: str):
  """Tokenizer, data, evaluator and the restored (or fresh) state: everything before step 1."""
  parts = components.build(config, workdir)
  train_iter = data.make_train_iterator(
      config.data, parts.tokenizer, workdir=workdir, batch_multiple=jax.device_count(),
      process_index=jax.process_index(), process_count=jax.process_count())
  if jax.process_index() == 0:
    workdir_lib.record_config(workdir, config)
  evaluator = evaluation.Evaluator(config, workdir, parts)
  ckpt = _open_checkpointer(config, workdir)
  host_state, start = _restore_or_init(parts, ckpt, train_iter, config.train.seed)
  _check_not_past(config, workdir, start)
  if start == 0 and config.train.get('init_embeddings'):
    host_state = word_vectors.init_embeddings(host_state, parts.tokenizer,
                                              config.train.init_embeddings, parts.model_config)
  return parts, train_iter, evaluator, ckpt, host_state, start


def _open_checkpointer(config, workdir: str) -> checkpoint.Checkpointer:
  """The newest train.keep_checkpoints steps, plus the best by train.keep_best if it is set."""
  cfg, metric = config.train, config.train.get('keep_best', '')
  if not metric:
    return checkpoint.Checkpointer(workdir, max_to_keep=cfg.keep_checkpoints)
  both = math.lcm(cfg.eval_every_steps, cfg.checkpoint_every_steps)
  if both > cfg.num_steps and jax.process_index() == 0:
    logging.warning('train.keep_best=%r: only a checkpoint saved at an evaluation step carries '
                    'the metric, and before the last step none is (eval_every_steps=%d, '
                    'checkpoint_every_steps=%d, first common step %d): make '
                    'checkpoint_every_steps a multiple of eval_every_steps', metric,
                    cfg.eval_every_steps, cfg.checkpoint_every_steps, both)
  mode = validation.BEST_MODES[metric]
  logging.info('keeping the last %d checkpoints and the best by validation %s (%s is better)',
               cfg.keep_checkpoints, metric, 'lower' if mode == 'min' else 'higher')
  return checkpoint.Checkpointer(workdir, max_to_keep=cfg.keep_checkpoints, best_metric=metric,
                                 best_mode=mode)


def _call_sizes(cfg, window):
  """step -> the steps the loop trains in its call from `step`: train.steps_per_loop (K), or 1
  where K steps would pass a log, evaluation, checkpoint, profile-window or last step.

  So every such step ends a call and is handled exactly as with K=1, whether or not K
  divides the periods; the single steps use the one-step program (one more compile), not a
  shorter scan.
  """
  k = cfg.get('steps_per_loop', 1)
  periods = (cfg.log_every_steps, cfg.eval_every_steps, cfg.checkpoint_every_steps)
  edges = tuple(window or ()) + (cfg.num_steps,)

  def size(step):
    ahead = [(step // p + 1) * p for p in periods] + [e for e in edges if e > step]
    return k if step + k <= min(ahead) else 1

  return size


def _feed(train_iter, runner, size_fn, start, num_steps):
  """(device batch, steps in it, data state after it) per call of the loop (see
  train_iterator.group_batches); the device batch is `[K, ...]` when it holds K > 1 steps."""
  for batches, data_state in train_iterator.group_batches(train_iter, size_fn, start, num_steps):
    if len(batches) == 1:
      yield runner.put_batch(batches[0]), 1, data_state
    else:
      yield runner.put_batches(batches), len(batches), data_state


def _open_feed(cfg, runner, train_iter, start, window):
  """The loop's calls from `start` (see `_feed`), made train.prefetch_depth calls ahead on a
  thread (0: in this one when asked for); a context manager that stops the thread on exit.

  The feed draws batches ahead of the loop, so a checkpoint must record the data state that
  came with the last call trained, never train_iter's own.
  """
  feed = _feed(train_iter, runner, _call_sizes(cfg, window), start, cfg.num_steps)
  depth = cfg.get('prefetch_depth', 2)
  return train_iterator.Prefetcher(feed, depth) if depth else contextlib.closing(feed)


def _per_step(call_metrics):
  """Host metric dicts per step from those per call (a K-step call holds `[K]` arrays)."""
  out = []
  for metrics in call_metrics:
    shape = np.shape(next(iter(metrics.values())))
    out += [metrics] if not shape else [{k: v[i] for k, v in metrics.items()}
                                        for i in range(shape[0])]
  return out


def _program(count: int, batch) -> tuple:
  """What a call compiles for: its number of steps and its batch's shapes."""
  return count, tuple(np.shape(x) for x in jax.tree_util.tree_leaves(batch))


def _train(config, workdir: str, run, clock) -> Dict[str, float]:
  """The loop: steps, logging, evaluation and checkpoints until train.num_steps or a stop signal."""
  parts, train_iter, evaluator, ckpt, host_state, start = run
  state = parts.runner.put_state(host_state)
  del host_state
  cfg = config.train
  writer = metrics_writer.MetricsWriter(workdir, num_steps=cfg.num_steps, start_step=start)
  writer.write_config(config, start)
  meter = metrics_writer.Throughput(num_steps=cfg.num_steps, eval_every_steps=cfg.eval_every_steps,
                                    checkpoint_every_steps=cfg.checkpoint_every_steps, clock=clock)
  compiled = set()
  logging.info('training %s from step %d to %d on %d devices, %d steps per call',
               config.data.dataset, start, cfg.num_steps, jax.device_count(),
               cfg.get('steps_per_loop', 1))
  pending, last_saved, eval_metrics, evaluated_at = [], ckpt.latest_step(), {}, None
  plateau = _plateau(cfg, workdir, evaluator.split, start)
  if plateau.patience and plateau.since_best >= plateau.patience:
    # Killed after saving its stop step but before marking it: the rule already stopped here.
    if jax.process_index() == 0:
      early_stop.write_marker(workdir, plateau.record(start))
    return {}

  def flush(step):
    nonlocal pending
    if pending:
      per_step = _per_step(jax.device_get(pending))
      metrics = metric_sums.reduce_sums(metric_sums.sum_device_metrics(per_step))
      metrics_writer.check_finite(step, metrics, last_saved)
      writer.train_progress(step, metrics, meter.report(step))
      pending = []

  window = profiling.window(cfg.get('profile_steps', ''), start_step=start,
                            num_steps=cfg.num_steps)
  tracer = profiling.StepTracer(window, os.path.join(workdir, metrics_writer.TENSORBOARD_DIR),
                                start_step=start, active=jax.process_index() == 0)
  # However the loop ends (a NaN stop, a failed save), the feed's thread is stopped and the
  # checkpointer waits for the async save in flight, so the step that an error message says
  # is kept is on disk, not a tmp dir; an open trace is written too.
  stopped_at = None
  with ckpt, contextlib.closing(writer), StopSignal() as stop, tracer, \
       _open_feed(cfg, parts.runner, train_iter, start, window) as calls:
    step, last = start, start >= cfg.num_steps
    while not last:
      tracer.before(step)
      batch, count, data_state = next(calls)
      step_fn = parts.runner.train_step if count == 1 else parts.runner.train_steps
      program = _program(count, batch)
      if program in compiled:
        state, metrics = step_fn(state, batch)
      else:       # it compiles: timed apart, with the call before it done first
        jax.block_until_ready(pending[-1:])
        with meter.paused('compile'):
          state, metrics = step_fn(state, batch)
          jax.block_until_ready(metrics)
      meter.trained(count, timed=program in compiled)
      compiled.add(program)
      step += count
      tracer.after(step, state)
      pending.append(metrics)
      if len(pending) > 1:
        # Async dispatch would let this loop queue up to log_every_steps steps ahead of the
        # device, and a stop signal would then wait for all of them before its save. Waiting
        # on the previous call keeps one call in flight: the device never idles (its next
        # batch is already there), and a preempted run saves within a call or two.
        jax.block_until_ready(pending[-2])
      # Sampled once per call: a signal arriving later is seen at the next call, whose
      # iteration then saves before the loop ends.
      last = step == cfg.num_steps or stop.requested
      if step % cfg.log_every_steps == 0 or last:
        flush(step)
      # A stop signal saves at once (preemption leaves seconds); the end of training evaluates.
      if step % cfg.eval_every_steps == 0 or (last and not stop.requested):
        flush(step)
        with meter.paused('eval'):
          eval_metrics, evaluated_at = evaluator.evaluate(state.params, step, writer), step
        if plateau.update(step, eval_metrics.get('loss', math.inf)) and not last:
          logging.info('validation loss has not improved for %d evaluations (best %.4f at step '
                       '%d): stopping at step %d', plateau.patience, plateau.best_loss,
                       plateau.best_step, step)
          last, stopped_at = True, step
      if step % cfg.checkpoint_every_steps == 0 or last:
        flush(step)       # never checkpoint a state whose loss went NaN ...
        with meter.paused('checkpoint'):
          metrics_writer.check_finite_params(   # ... or whose params did (this process's copy)
              step, parts.runner.get_state(state.params), last_saved)
          # Only an evaluation of this very state ranks it for train.keep_best (checkpoint.py).
          ckpt.save(step, parts.runner.get_state(state), data_state,
                    meta={'vocab_size': parts.model_config.vocab_size,
                          checkpoint_integrity.MODEL_CONFIG:
                              checkpoint_integrity.model_config_dict(parts.model_config)},
                    metrics=eval_metrics if evaluated_at == step else None)
        last_saved = step
  if jax.process_index() == 0:
    if stopped_at is not None:      # its checkpoint is on disk now
      early_stop.write_marker(workdir, plateau.record(stopped_at))
    _say_where_results_are(config, workdir, step, evaluator.split, eval_metrics, evaluated_at,
                           stop.requested)
  return eval_metrics


_SHOWN_METRICS = ('loss', 'accuracy', 'sacrebleu', 'bleu_tok_lc', 'exact_match')


def _say_where_results_are(config, workdir: str, step: int, split: str, eval_metrics,
                           evaluated_at: Optional[int], signalled: bool) -> None:
  """The closing lines: how training ended, where its results are, what to run next."""
  if signalled and step < config.train.num_steps:
    logging.info('stopped by a signal at step %d (checkpoint saved): the same command resumes '
                 'the run', step)
    return
  how = 'done' if step == config.train.num_steps else 'stopped early (validation plateau)'
  scores = '  '.join(f'{k} {eval_metrics[k]:.4g}' for k in _SHOWN_METRICS if k in eval_metrics)
  last_eval = f' ({split} at step {evaluated_at}: {scores})' if evaluated_at and scores else ''
  tensorboard = os.path.join(workdir, metrics_writer.TENSORBOARD_DIR)
  lines = [f'training {how} at step {step} of {config.train.num_steps}{last_eval}',
           f'  run folder    {workdir}',
           f'  metrics       {os.path.join(workdir, workdir_lib.METRICS_FILE)}',
           f'  TensorBoard   {tensorboard}']
  lines += [f'  evaluation    {path}' for path in
            sorted(glob.glob(os.path.join(glob.escape(workdir), 'eval', f'*_step{step}_*.json')))]
  lines += ['next:'] + [f'  {command}' for command in _next_commands(config, workdir)]
  lines.append(f'  tensorboard --logdir {shlex.quote(tensorboard)}')
  logging.info('%s', '\n'.join(lines))


def _plateau(cfg, workdir: str, split: str, start: int) -> early_stop.Plateau:
  """The early-stopping rule's state at `start` (early_stop.py); patience 0 never stops."""
  records = metrics_writer.read_records(os.path.join(workdir, 'metrics.jsonl')) if start else []
  return early_stop.from_records(records, patience=cfg.get('early_stop_patience', 0),
                                 min_delta=cfg.get('early_stop_min_delta', 0.0), split=split,
                                 up_to=start)
