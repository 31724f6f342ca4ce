"""Tests for transformer_jax.train.optim: schedules, update rules, clipping, accumulation, decay."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multihost_worker import optim_config
from transformer_jax.base.errors import UserError
from transformer_jax.train import optim


def _paper_rate(step, d_model, warmup):
  """Vaswani et al. (2017), eq. 3."""
  return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@pytest.mark.parametrize('learning_rate', [None, 0.0])
def test_rsqrt_default_is_the_papers_formula(learning_rate):
  config = optim_config(schedule='rsqrt', learning_rate=learning_rate,
                        warmup_steps=4000)
  schedule = optim.learning_rate_schedule(config, model_dim=512, num_updates=100_000)
  for step in [1, 10, 1000, 3999, 4000, 4001, 10_000, 100_000]:
    np.testing.assert_allclose(schedule(step), _paper_rate(step, 512, 4000),
                               rtol=1e-5, err_msg=f'step {step}')
  assert schedule(0) == 0.0


def test_rsqrt_learning_rate_sets_the_peak():
  config = optim_config(schedule='rsqrt', learning_rate=2e-3, warmup_steps=100)
  schedule = optim.learning_rate_schedule(config, model_dim=512, num_updates=1000)
  np.testing.assert_allclose([schedule(50), schedule(100), schedule(400)],
                             [1e-3, 2e-3, 1e-3], rtol=1e-6)


def test_constant_with_linear_warmup():
  config = optim_config(schedule='constant', learning_rate=0.5, warmup_steps=10)
  schedule = optim.learning_rate_schedule(config, model_dim=8, num_updates=100)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(99)],
                             [0.0, 0.25, 0.5, 0.5])


def test_cosine_endpoints():
  config = optim_config(schedule='cosine', learning_rate=1.0, warmup_steps=10)
  schedule = optim.learning_rate_schedule(config, model_dim=8, num_updates=110)
  np.testing.assert_allclose(
      [schedule(0), schedule(10), schedule(60), schedule(110), schedule(200)],
      [0.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_linear_decays_to_zero_at_num_steps():
  config = optim_config(schedule='linear', learning_rate=2.0, warmup_steps=10)
  schedule = optim.learning_rate_schedule(config, model_dim=8, num_updates=110)
  np.testing.assert_allclose(
      [schedule(0), schedule(5), schedule(10), schedule(35), schedule(110), schedule(200)],
      [0.0, 1.0, 2.0, 1.5, 0.0, 0.0], atol=1e-6)
  no_warmup = optim.learning_rate_schedule(optim_config(schedule='linear', learning_rate=1.0),
                                           model_dim=8, num_updates=4)
  np.testing.assert_allclose([no_warmup(s) for s in range(5)], [1, 0.75, 0.5, 0.25, 0])


@pytest.mark.parametrize('overrides, match', [
    (dict(schedule='exponential'), 'unknown optim.schedule'),
    (dict(schedule='rsqrt', warmup_steps=0), 'warmup_steps'),
    (dict(schedule='cosine', learning_rate=None), 'learning_rate'),
])
def test_bad_schedule_config_is_user_error(overrides, match):
  with pytest.raises(UserError, match=match):
    optim.learning_rate_schedule(optim_config(**overrides), 8, 100)


def _params():
  return {'kernel': jnp.ones((2, 3)), 'bias': jnp.ones((3,))}


def _grads(scale):
  return jax.tree_util.tree_map(lambda p: scale * jnp.ones_like(p), _params())


def _first_moment_norm(tx, grads):
  _, opt_state = tx.update(grads, tx.init(_params()), _params())
  return optax.tree.norm(optax.tree_utils.tree_get(opt_state, 'mu'))


@pytest.mark.parametrize('clip, expected', [(1.0, 0.1 * 1.0), (0.0, 0.1 * 9.0)])
def test_clipping_clips_the_global_norm(clip, expected):
  tx, _ = optim.make_optimizer(optim_config(grad_clip_norm=clip), 8, 10)
  grads = _grads(9.0 / 3.0)  # 9 entries of 3: global norm 9
  # Adam's first moment after one step is (1 - b1) * the (clipped) gradient.
  np.testing.assert_allclose(_first_moment_norm(tx, grads), expected, rtol=1e-5)


def test_accumulation_applies_one_update_every_k_micro_steps():
  k = 3
  tx, learning_rate_fn = optim.make_optimizer(
      optim_config(grad_accum_steps=k, schedule='cosine'), 8, 4 * k)
  plain, schedule = optim.make_optimizer(optim_config(schedule='cosine'), 8, 4)  # same 4 updates
  params, opt_state = _params(), tx.init(_params())
  micro_grads = [_grads(s) for s in (1.0, -2.0, 4.0)]
  for i, grads in enumerate(micro_grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    moved = optax.tree.norm(updates) > 0
    assert bool(moved) == (i == k - 1), f'micro-step {i}'
  mean_grads = jax.tree_util.tree_map(lambda *g: sum(g) / k, *micro_grads)
  expected, _ = plain.update(mean_grads, plain.init(_params()), params)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                         updates, expected)
  for step in range(7):
    assert learning_rate_fn(step) == schedule(step // k)
  assert float(schedule(0)) > 0.0     # the first update uses the paper's step_num = 1


def test_weight_decay_skips_vectors():
  config = optim_config(weight_decay=0.1, learning_rate=0.5)
  tx, _ = optim.make_optimizer(config, 8, 10)
  zero = _grads(0.0)
  updates, _ = tx.update(zero, tx.init(_params()), _params())
  # Zero gradients: only the decoupled decay -lr * wd * p moves the matrices.
  np.testing.assert_allclose(updates['kernel'], -0.5 * 0.1 * np.ones((2, 3)), rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)


def test_adam_uses_the_papers_betas():
  tx, _ = optim.make_optimizer(optim_config(b1=0.9, b2=0.98, eps=1e-9), 8, 10)
  _, opt_state = tx.update(_grads(2.0), tx.init(_params()), _params())
  nu = optax.tree_utils.tree_get(opt_state, 'nu')
  np.testing.assert_allclose(nu['bias'], (1 - 0.98) * 4.0, rtol=1e-6)


def _step(config, grads, num_steps=10):
  tx, _ = optim.make_optimizer(config, 8, num_steps)
  updates, _ = tx.update(grads, tx.init(_params()), _params())
  return updates


def test_sgd_update_is_minus_lr_times_grad():
  grads = {'kernel': jnp.arange(6.0).reshape(2, 3), 'bias': jnp.array([-1.0, 0.5, 2.0])}
  updates = _step(optim_config(optimizer='sgd', learning_rate=0.25), grads)
  for name in grads:
    np.testing.assert_array_equal(updates[name], -0.25 * grads[name])
  # The linear schedule's first update uses step_num 1: lr * (1 - 1/num_steps).
  updates = _step(optim_config(optimizer='sgd', schedule='linear', learning_rate=1.0), grads,
                  num_steps=4)
  np.testing.assert_allclose(updates['kernel'], -0.75 * grads['kernel'])


def test_sgd_decay_clipping_and_accumulation():
  config = optim_config(optimizer='sgd', learning_rate=0.5, weight_decay=0.1)
  updates = _step(config, _grads(0.0))
  np.testing.assert_allclose(updates['kernel'], -0.5 * 0.1 * np.ones((2, 3)), rtol=1e-6)
  np.testing.assert_array_equal(updates['bias'], 0.0)
  clipped = _step(optim_config(optimizer='sgd', learning_rate=1.0, grad_clip_norm=1.0),
                  _grads(3.0))                 # global norm 9 -> 1
  np.testing.assert_allclose(optax.tree.norm(clipped), 1.0, rtol=1e-6)
  tx, _ = optim.make_optimizer(optim_config(optimizer='sgd', grad_accum_steps=2), 8, 10)
  state = tx.init(_params())
  _, state = tx.update(_grads(1.0), state, _params())
  updates, _ = tx.update(_grads(3.0), state, _params())
  np.testing.assert_allclose(updates['bias'], -0.01 * 2.0 * np.ones(3), rtol=1e-6)


def test_adagrad_first_step():
  grads = {'kernel': jnp.full((2, 3), 2.0), 'bias': jnp.array([1.0, -3.0, 0.5])}
  updates = _step(optim_config(optimizer='adagrad', learning_rate=0.1), grads)
  # optax.adagrad: accumulator starts at 0.1, update = -lr * g / sqrt(0.1 + g^2 + ...).
  expected = -0.1 * grads['bias'] / np.sqrt(0.1 + np.asarray(grads['bias'])**2)
  np.testing.assert_allclose(updates['bias'], expected, rtol=1e-4)


def test_unknown_optimizer_is_user_error():
  with pytest.raises(UserError, match="unknown optim.optimizer 'lamb'"):
    optim.make_optimizer(optim_config(optimizer='lamb'), 8, 10)


def _rates_applied_per_update(config, num_steps):
  """The learning rate of each update, read off the real tx: SGD on unit gradients moves every
  parameter by -lr. Also checks learning_rate_fn(micro_step) at each update's micro-step."""
  k = config.grad_accum_steps
  tx, learning_rate_fn = optim.make_optimizer(config, 8, num_steps)
  params = _params()
  state, update = tx.init(params), jax.jit(tx.update)
  rates = []
  for micro_step in range(num_steps):
    updates, state = update(_grads(1.0), state, params)
    if (micro_step + 1) % k == 0:        # the micro-step that completes an update
      rates.append(-float(updates['bias'][0]))
      assert rates[-1] == pytest.approx(float(learning_rate_fn(micro_step)), rel=1e-5, abs=1e-12)
  assert len(rates) == num_steps // k
  return rates


@pytest.mark.parametrize('schedule', ['cosine', 'linear'])
@pytest.mark.parametrize('k', [1, 2, 4])
def test_decay_ends_at_zero_on_the_last_update_whatever_the_accumulation(schedule, k):
  config = optim_config(optimizer='sgd', schedule=schedule, learning_rate=1e-3, warmup_steps=3,
                        grad_accum_steps=k)
  rates = _rates_applied_per_update(config, num_steps=24 * k)   # 24 updates, warmup 3 of them
  assert rates[-1] == pytest.approx(0.0, abs=1e-12)
  assert rates[-2] > 0.0 and max(rates) == pytest.approx(1e-3, rel=1e-5)


@pytest.mark.parametrize('k', [1, 2])
def test_rsqrt_peak_is_at_update_warmup_steps(k):
  config = optim_config(optimizer='sgd', schedule='rsqrt', learning_rate=1e-3, warmup_steps=5,
                        grad_accum_steps=k)
  rates = _rates_applied_per_update(config, num_steps=12 * k)
  assert int(np.argmax(rates)) + 1 == 5                           # updates numbered from 1
  assert rates[4] == pytest.approx(1e-3, rel=1e-5)


def test_num_steps_not_a_multiple_of_accumulation_is_a_user_error():
  with pytest.raises(UserError) as e:
    optim.make_optimizer(optim_config(grad_accum_steps=4), 8, 10)
  message = str(e.value)
  assert '\n' not in message
  assert 'train.num_steps=10 is not a multiple of optim.grad_accum_steps=4' in message
  assert 'num_steps to a multiple, e.g. 12' in message
