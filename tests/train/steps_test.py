"""Tests for transformer_jax.train.steps on one device (the jit path, axis_name=None)."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multihost_worker import TinySeq2Seq, make_batch, optim_config, setup
from transformer_jax.nn import losses
from transformer_jax.train import steps

LABEL_SMOOTHING = 0.1


@pytest.fixture(scope='module')
def tiny():
  """(model, state, learning_rate_fn, batch) with Adam at a constant 0.01."""
  return setup()


@pytest.fixture(scope='module')
def train_step(tiny):
  """The jitted step for `tiny`, compiled once for the module."""
  model, _, learning_rate_fn, _ = tiny
  return _jit_train_step(model, learning_rate_fn)


def _jit_train_step(model, learning_rate_fn=None):
  return jax.jit(functools.partial(
      steps.train_step, model=model, label_smoothing=LABEL_SMOOTHING,
      learning_rate_fn=learning_rate_fn))


@functools.partial(jax.jit, static_argnums=0)
def _reference(model, params, batch):
  """Metric sums and the gradient of the token-mean loss, computed directly."""
  def mean_loss(params):
    logits = model.apply({'params': params}, **batch)
    metrics = losses.compute_metrics(logits, batch['targets'], LABEL_SMOOTHING)
    return metrics['loss'] / metrics['weight'], metrics
  grads, metrics = jax.grad(mean_loss, has_aux=True)(params)
  return metrics, grads


def test_init_train_state(tiny):
  model, state, _, batch = tiny
  assert state.step == 0
  assert state.rng.shape == (2,) and state.rng.dtype == jnp.uint32
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(state.params)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  # Shapes alone are enough.
  structs = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  again = steps.init_train_state(model, jax.random.PRNGKey(0), structs, state.tx)
  jax.tree_util.tree_map(np.testing.assert_array_equal, again.params, state.params)


def test_train_step_metrics_and_update(tiny, train_step):
  model, state, _, batch = tiny
  new_state, metrics = train_step(state, batch)
  expected, grads = _reference(model, state.params, batch)
  for name in ('loss', 'nll', 'accuracy', 'weight'):
    np.testing.assert_allclose(metrics[name], expected[name], rtol=1e-6, err_msg=name)
  assert metrics['weight'] == (batch['targets'] > 0).sum()
  np.testing.assert_allclose(metrics['grad_norm'], optax.tree.norm(grads), rtol=1e-5)
  np.testing.assert_allclose(metrics['param_norm'], optax.tree.norm(new_state.params),
                             rtol=1e-6)
  np.testing.assert_allclose(metrics['learning_rate'], 0.01)
  assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
  assert new_state.step == 1
  np.testing.assert_array_equal(new_state.rng, state.rng)  # base key is kept


def test_train_steps_reduce_the_loss(tiny, train_step):
  _, state, _, batch = tiny
  first = None
  for _ in range(5):
    state, metrics = train_step(state, batch)
    first = metrics['loss'] if first is None else first
  assert metrics['loss'] < first


def test_all_padding_batch_gives_finite_zero_gradient(tiny, train_step):
  _, state, _, batch = tiny
  padding = jax.tree_util.tree_map(np.zeros_like, batch)
  _, metrics = train_step(state, padding)
  assert metrics['weight'] == 0
  assert np.isfinite(metrics['loss']) and metrics['grad_norm'] == 0


def test_eval_step_matches_losses(tiny):
  model, state, _, batch = tiny
  metrics = jax.jit(functools.partial(
      steps.eval_step, model=model, label_smoothing=LABEL_SMOOTHING))(state.params, batch)
  expected, _ = _reference(model, state.params, batch)
  assert set(metrics) == {'loss', 'nll', 'accuracy', 'weight'}
  for name, value in expected.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-6, err_msg=name)


def test_step_rng_differs_across_devices_and_steps():
  rng = jax.random.PRNGKey(3)
  # vmap with an axis name stands in for pmap's axis_index.
  per_device = jax.vmap(lambda _, step: steps.step_rng(rng, step, 'batch'),
                        in_axes=(0, None), axis_name='batch')
  keys = np.concatenate([per_device(jnp.arange(8), step) for step in (0, 1)])
  assert len({tuple(k) for k in keys}) == 16
  np.testing.assert_array_equal(keys[8 + 2], jax.random.fold_in(
      jax.random.fold_in(rng, 1), 2))
  np.testing.assert_array_equal(steps.step_rng(rng, 5, None),
                                jax.random.fold_in(rng, 5))


def test_dropout_key_is_folded_with_the_step():
  model = TinySeq2Seq(dropout_rate=0.5)
  _, state0, _, batch = setup(model=model)
  train_step = _jit_train_step(model)
  state1, first = train_step(state0, batch)
  _, second = train_step(state1, batch)

  @jax.jit
  def dropout_loss(params, rng):
    logits = model.apply({'params': params}, **batch, deterministic=False,
                         rngs={'dropout': rng})
    return losses.cross_entropy(logits, batch['targets'], LABEL_SMOOTHING)[0]

  for state, metrics in ((state0, first), (state1, second)):
    key = jax.random.fold_in(state.rng, state.step)
    np.testing.assert_allclose(metrics['loss'], dropout_loss(state.params, key),
                               rtol=1e-6)
  # The second step really drew a new mask.
  stale = dropout_loss(state1.params, jax.random.fold_in(state0.rng, 0))
  assert not np.isclose(stale, second['loss'])


class _BFloat16Logits(nn.Module):
  """The stand-in model computing in bfloat16, as config.dtype would."""

  @nn.compact
  def __call__(self, inputs, targets, deterministic=True):
    return TinySeq2Seq()(inputs, targets, deterministic=deterministic).astype(jnp.bfloat16)


def test_bfloat16_model_gives_float32_metrics_and_params():
  model = _BFloat16Logits()
  _, state, _, batch = setup(model=model, batch=make_batch(rows=4))
  new_state, metrics = _jit_train_step(model)(state, batch)
  assert {v.dtype for v in metrics.values()} == {jnp.dtype(jnp.float32)}
  assert {x.dtype for x in jax.tree_util.tree_leaves(new_state.params)} == {
      jnp.dtype(jnp.float32)}


def test_accumulated_steps_move_params_every_k():
  model, state, learning_rate_fn, batch = setup(
      tx_config=optim_config(grad_accum_steps=2))
  train_step = _jit_train_step(model, learning_rate_fn)
  params = [state.params]
  for _ in range(4):
    state, _ = train_step(state, batch)
    params.append(state.params)
  moved = [not np.array_equal(jax.tree_util.tree_leaves(a)[-1],
                              jax.tree_util.tree_leaves(b)[-1])
           for a, b in zip(params, params[1:])]
  assert moved == [False, True, False, True]


def _assert_trees_equal(actual, expected):
  jax.tree_util.tree_map(np.testing.assert_array_equal, actual, expected)


# accum_steps=2 runs the same scan with accumulation inside; 1 is its slow twin.
@pytest.mark.parametrize('accum_steps', [pytest.param(1, marks=pytest.mark.slow), 2])
def test_train_steps_equal_train_step_in_turn(accum_steps):
  """One scanned call of K steps gives the state and per-step metrics of K calls, bit for bit."""
  model, state, learning_rate_fn, _ = setup(tx_config=optim_config(grad_accum_steps=accum_steps))
  batches = [make_batch(seed=seed) for seed in range(3)]
  expected, expected_metrics = state, []
  train_step = _jit_train_step(model, learning_rate_fn)
  for batch in batches:
    expected, metrics = train_step(expected, batch)
    expected_metrics.append(metrics)
  train_steps = jax.jit(functools.partial(
      steps.train_steps, model=model, label_smoothing=LABEL_SMOOTHING,
      learning_rate_fn=learning_rate_fn))
  stacked = {k: np.stack([b[k] for b in batches]) for k in batches[0]}   # [3, rows, length]
  got, metrics = train_steps(state, stacked)
  _assert_trees_equal(got.params, expected.params)
  _assert_trees_equal(got.opt_state, expected.opt_state)
  assert got.step == 3
  for name, values in metrics.items():
    assert values.shape == (3,), name
    np.testing.assert_array_equal(values, [m[name] for m in expected_metrics], err_msg=name)
