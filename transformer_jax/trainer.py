"""The training loop: train_and_evaluate(config, workdir). It only sequences the work;
steps, data, checkpoints, evaluation and logging live in their own modules.
"""
import signal
from typing import Dict

import jax
from absl import logging

from transformer_jax import checkpoint
from transformer_jax import components
from transformer_jax import data
from transformer_jax import evaluation
from transformer_jax import metrics_writer
from transformer_jax import word_vectors
from transformer_jax import workdir as workdir_lib


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


def train_and_evaluate(config, workdir: str) -> Dict[str, float]:
  """Trains `config` in `workdir` (resuming if it holds a run); returns the last eval metrics."""
  workdir_lib.check_config(workdir, config)      # read-only: nothing written before the checks
  components.preflight(config, workdir)
  parts = components.build(config, workdir)
  train_iter = data.make_train_iterator(
      config.data, parts.tokenizer, workdir=workdir, batch_multiple=jax.device_count(),
      process_index=jax.process_index(), process_count=jax.process_count())
  if jax.process_index() == 0:
    workdir_lib.record_config(workdir, config)
  evaluator = evaluation.Evaluator(config, workdir, parts)
  ckpt = checkpoint.Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
  host_state, start = _restore_or_init(parts, ckpt, train_iter, config.train.seed)
  if start == 0 and config.train.get('init_embeddings'):
    host_state = word_vectors.init_embeddings(host_state, parts.tokenizer,
                                              config.train.init_embeddings, parts.model_config)
  state = parts.runner.put_state(host_state)
  del host_state
  cfg = config.train
  writer = metrics_writer.MetricsWriter(workdir, num_steps=cfg.num_steps, start_step=start)
  logging.info('training %s from step %d to %d on %d devices',
               config.data.dataset, start, cfg.num_steps, jax.device_count())
  pending, last_saved, eval_metrics = [], ckpt.latest_step(), {}

  def flush(step):
    nonlocal pending
    if pending:
      metrics = metrics_writer.reduce_sums(metrics_writer.sum_device_metrics(pending))
      metrics_writer.check_finite(step, metrics, last_saved)
      writer.train_progress(step, metrics)
      pending = []

  with StopSignal() as stop:
    step, last = start, start >= cfg.num_steps
    while not last:
      batch = parts.runner.put_batch(next(train_iter))
      state, metrics = parts.runner.train_step(state, batch)
      pending.append(metrics)
      if len(pending) > 1:
        # Async dispatch would let this loop queue up to log_every_steps steps ahead of the
        # device, and a stop signal would then wait for all of them before its save. Waiting
        # on the previous step keeps one step in flight: the device never idles, and a
        # preempted run saves within a step or two.
        jax.block_until_ready(pending[-2])
      step += 1
      # Sampled once per step: a signal arriving later is seen at the next step, whose
      # iteration then saves before the loop ends.
      last = step == cfg.num_steps or stop.requested
      if step % cfg.log_every_steps == 0 or last:
        flush(step)
      # A stop signal saves at once (preemption leaves seconds); the end of training evaluates.
      if step % cfg.eval_every_steps == 0 or (last and not stop.requested):
        flush(step)
        eval_metrics = evaluator.evaluate(state.params, step, writer)
      if step % cfg.checkpoint_every_steps == 0 or last:
        flush(step)       # never checkpoint a state whose loss went NaN
        ckpt.save(step, parts.runner.get_state(state), train_iter.get_state(),
                  meta={'vocab_size': parts.model_config.vocab_size})
        last_saved = step
  ckpt.close()
  writer.close()
  return eval_metrics
