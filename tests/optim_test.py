"""Tests for transformer_jax.optim: schedules, clipping, accumulation, weight decay."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from multihost_worker import optim_config
from transformer_jax import optim
from transformer_jax.errors import UserError


def _paper_rate(step, d_model, warmup):
  """Vaswani et al. (2017), eq. 3."""
  return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


@pytest.mark.parametrize('learning_rate', [None, 0.0])
def test_rsqrt_default_is_the_papers_formula(learning_rate):
  config = optim_config(schedule='rsqrt', learning_rate=learning_rate,
                        warmup_steps=4000)
  schedule = optim.learning_rate_schedule(config, model_dim=512, num_steps=100_000)
  for step in [1, 10, 1000, 3999, 4000, 4001, 10_000, 100_000]:
    np.testing.assert_allclose(schedule(step), _paper_rate(step, 512, 4000),
                               rtol=1e-5, err_msg=f'step {step}')
  assert schedule(0) == 0.0


def test_rsqrt_learning_rate_sets_the_peak():
  config = optim_config(schedule='rsqrt', learning_rate=2e-3, warmup_steps=100)
  schedule = optim.learning_rate_schedule(config, model_dim=512, num_steps=1000)
  np.testing.assert_allclose([schedule(50), schedule(100), schedule(400)],
                             [1e-3, 2e-3, 1e-3], rtol=1e-6)


def test_constant_with_linear_warmup():
  config = optim_config(schedule='constant', learning_rate=0.5, warmup_steps=10)
  schedule = optim.learning_rate_schedule(config, model_dim=8, num_steps=100)
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(99)],
                             [0.0, 0.25, 0.5, 0.5])


def test_cosine_endpoints():
  config = optim_config(schedule='cosine', learning_rate=1.0, warmup_steps=10)
  schedule = optim.learning_rate_schedule(config, model_dim=8, num_steps=110)
  np.testing.assert_allclose(
      [schedule(0), schedule(10), schedule(60), schedule(110), schedule(200)],
      [0.0, 1.0, 0.5, 0.0, 0.0], atol=1e-6)


@pytest.mark.parametrize('overrides, match', [
    (dict(schedule='linear'), 'unknown optim.schedule'),
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
      optim_config(grad_accum_steps=k, schedule='cosine'), 8, 10)
  plain, schedule = optim.make_optimizer(optim_config(schedule='cosine'), 8, 10)
  params, opt_state = _params(), tx.init(_params())
  micro_grads = [_grads(s) for s in (1.0, -2.0, 4.0)]
  for i, grads in enumerate(micro_grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    moved = optax.tree.norm(updates) > 0
    assert bool(moved) == (i == k - 1), f'micro-step {i}'
  mean_grads = jax.tree_util.tree_map(lambda *g: sum(g) / k, *micro_grads)
  expected, _ = plain.update(mean_grads, plain.init(_params()), params)
  jax.tree_util.tree_map(np.testing.assert_allclose, updates, expected)
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
