"""Tests for transformer_jax.train.parallel: both runners equal one device on the global batch.

conftest.py gives this process 8 fake CPU devices; the multi-host test starts two
more processes with 2 devices each (tests/train/multihost_worker.py).
"""
import functools
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from multihost_worker import NUM_STEPS, TinySeq2Seq, make_batch, setup
from transformer_jax.base.errors import UserError
from transformer_jax.nn import losses
from transformer_jax.train import parallel
from transformer_jax.train import steps

LABEL_SMOOTHING = 0.1
TOLERANCE = dict(rtol=1e-5, atol=1e-5)
WORKER = pathlib.Path(__file__).with_name('multihost_worker.py')


@pytest.fixture(scope='module')
def tiny():
  return setup()


@pytest.fixture(scope='module')
def reference(tiny):
  """Metrics and states of NUM_STEPS single-device jit steps on the global batch."""
  model, state, learning_rate_fn, batch = tiny
  train_step = jax.jit(functools.partial(
      steps.train_step, model=model, label_smoothing=LABEL_SMOOTHING,
      learning_rate_fn=learning_rate_fn))
  history = []
  for _ in range(NUM_STEPS):
    state, metrics = train_step(state, batch)
    history.append((jax.device_get(metrics), state))
  return history


@pytest.fixture(scope='module', params=['pmap', 'jit'])
def runner(request, tiny):
  model, _, learning_rate_fn, _ = tiny
  return parallel.make_runner(request.param, model=model,
                              label_smoothing=LABEL_SMOOTHING,
                              learning_rate_fn=learning_rate_fn)


def _assert_trees_close(actual, expected):
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), **TOLERANCE),
      actual, expected)


def test_shard_batch_splits_rows_over_local_devices():
  batch = {'targets': np.arange(16 * 3).reshape(16, 3)}
  sharded = parallel.shard_batch(batch)['targets']
  assert sharded.shape == (8, 2, 3)
  np.testing.assert_array_equal(sharded[1], batch['targets'][2:4])


def test_shard_batch_rows_not_divisible_is_user_error():
  with pytest.raises(UserError, match='12 rows .* 8 local devices.*e.g. 16'):
    parallel.shard_batch({'targets': np.zeros((12, 3), np.int32)})


def test_replicate_then_unreplicate_round_trips(tiny):
  state = tiny[1]
  replicated = parallel.replicate(state.params)
  leaf = jax.tree_util.tree_leaves(replicated)[0]
  assert leaf.shape[0] == 8 and len(leaf.addressable_shards) == 8
  _assert_trees_close(parallel.unreplicate(replicated), state.params)


def test_runner_step_equals_one_device_on_the_global_batch(tiny, reference, runner):
  state, batch = tiny[1], tiny[3]
  device_state, device_batch = runner.put_state(state), runner.put_batch(batch)
  for expected_metrics, expected_state in reference:
    device_state, metrics = runner.train_step(device_state, device_batch)
    _assert_trees_close(jax.device_get(metrics), expected_metrics)
  host_state = runner.get_state(device_state)
  _assert_trees_close(host_state.params, expected_state.params)
  _assert_trees_close(host_state.opt_state, expected_state.opt_state)
  assert host_state.step == NUM_STEPS


def test_train_steps_equal_train_step_in_turn(tiny, runner):
  """K stacked batches in one call: the state and metrics of K calls, bit for bit."""
  state = tiny[1]
  batches = [make_batch(seed=seed) for seed in range(3)]
  device_state, expected = runner.put_state(state), []
  for batch in batches:
    device_state, metrics = runner.train_step(device_state, runner.put_batch(batch))
    expected.append(jax.device_get(metrics))
  expected_state = runner.get_state(device_state)
  device_state, metrics = runner.train_steps(runner.put_state(state),
                                             runner.put_batches(batches))
  got = runner.get_state(device_state)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got.params, expected_state.params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got.opt_state,
                         expected_state.opt_state)
  for name, values in jax.device_get(metrics).items():
    np.testing.assert_array_equal(values, [m[name] for m in expected], err_msg=name)


def test_put_batches_refuses_batches_of_different_shapes(runner):
  with pytest.raises(ValueError, match='same keys and shapes'):
    runner.put_batches([make_batch(length=6), make_batch(length=8)])


def test_host_state_survives_donation(tiny, runner):
  state, batch = tiny[1], tiny[3]
  before = jax.device_get(state.params)
  runner.train_step(runner.put_state(state), runner.put_batch(batch))
  _assert_trees_close(jax.device_get(state.params), before)  # not deleted or changed


def test_eval_step_equals_one_device(tiny, runner):
  model, state, _, batch = tiny
  device_state = runner.put_state(state)
  metrics = runner.eval_step(device_state.params, runner.put_batch(batch))
  expected = steps.eval_step(state.params, batch, model=model,
                             label_smoothing=LABEL_SMOOTHING)
  _assert_trees_close(jax.device_get(metrics), expected)


def _argmax_tokens(params, batch, *, model):
  return model.apply({'params': params}, **batch).argmax(-1)


def test_run_replicated_returns_rows_in_order(tiny, runner):
  model, state, _, batch = tiny
  predict = functools.partial(_argmax_tokens, model=model)
  device_state = runner.put_state(state)
  tokens = runner.run_replicated(predict, device_state.params, runner.put_batch(batch))
  assert isinstance(tokens, np.ndarray) and tokens.shape == batch['targets'].shape
  np.testing.assert_array_equal(tokens, predict(state.params, batch))


def test_pmap_dropout_keys_differ_across_devices():
  # Every device gets the same 2 rows: with one shared key the 8 losses would be equal.
  model = TinySeq2Seq(dropout_rate=0.5)
  _, state, _, _ = setup(model=model)
  rows = make_batch(rows=2)
  batch = {k: np.tile(v, (8, 1)) for k, v in rows.items()}
  runner = parallel.PmapRunner(model=model, label_smoothing=0.0)
  _, metrics = runner.train_step(runner.put_state(state), runner.put_batch(batch))

  @jax.jit
  @jax.vmap
  def device_losses(device):
    key = jax.random.fold_in(jax.random.fold_in(state.rng, 0), device)
    logits = model.apply({'params': state.params}, **rows, deterministic=False,
                         rngs={'dropout': key})
    return losses.cross_entropy(logits, rows['targets'])[0]

  per_device = np.asarray(device_losses(np.arange(8)))
  assert len(set(np.round(per_device, 4))) == 8
  np.testing.assert_allclose(metrics['loss'], per_device.sum(), rtol=1e-5)


def test_make_runner_unknown_name_is_user_error(tiny):
  with pytest.raises(UserError, match="'pjit'.*'jit', 'pmap'"):
    parallel.make_runner('pjit', model=tiny[0], label_smoothing=0.0)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_workers(tmp_path, num_processes=2, timeout_s=240):
  """Starts the worker processes and waits; returns their saved results."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             PYTHONPATH=str(WORKER.parents[2]))
  outs = [tmp_path / f'process{i}.npz' for i in range(num_processes)]
  procs = [subprocess.Popen(
      [sys.executable, str(WORKER), f'--process_id={i}',
       f'--num_processes={num_processes}', f'--port={port}', f'--out={outs[i]}'],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  try:
    logs = [proc.communicate(timeout=timeout_s)[0] for proc in procs]
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for proc, log in zip(procs, logs):
    assert proc.returncode == 0, log[-3000:]
  return [dict(np.load(out)) for out in outs]


def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path, reference):
  expected_params = jax.tree_util.tree_leaves(reference[-1][1].params)
  for results in _run_workers(tmp_path):
    assert results['process_count'] == 2 and results['device_count'] == 4
    for parallelism in ('pmap', 'jit'):
      for step, (expected, _) in enumerate(reference):
        for name in ('loss', 'nll', 'weight', 'grad_norm', 'param_norm'):
          np.testing.assert_allclose(
              results[f'{parallelism}/step{step}/{name}'], expected[name],
              **TOLERANCE, err_msg=f'{parallelism} step {step} {name}')
      for i, leaf in enumerate(expected_params):
        np.testing.assert_allclose(results[f'{parallelism}/param{i}'], leaf,
                                   **TOLERANCE, err_msg=f'{parallelism} param {i}')
