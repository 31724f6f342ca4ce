"""Tests for transformer_jax.nn.losses against NumPy and hand computations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.nn import losses


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _numpy_smoothed(logits, targets, label_smoothing):
  """Full soft-target cross entropy minus the soft target's entropy, per token."""
  vocab = logits.shape[-1]
  soft = np.full(logits.shape, label_smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1.0 - label_smoothing, axis=-1)
  entropy = -(soft * np.log(np.where(soft > 0, soft, 1.0))).sum(-1)
  return -(soft * _log_softmax(logits)).sum(-1) - entropy


@pytest.fixture
def example():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
  targets = rng.integers(1, 7, size=(3, 5)).astype(np.int32)
  targets[0, 3:] = 0
  targets[2, 1:] = 0
  return logits, targets


def test_target_weights_mark_real_tokens():
  weights = losses.target_weights(jnp.array([[5, 2, 0], [0, 0, 0]]))
  assert weights.dtype == jnp.float32
  np.testing.assert_array_equal(weights, [[1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1, 0.3])
def test_cross_entropy_matches_numpy(example, label_smoothing):
  logits, targets = example
  loss_sum, weight_sum = losses.cross_entropy(logits, targets, label_smoothing)
  mask = targets > 0
  expected = _numpy_smoothed(logits, targets, label_smoothing)[mask].sum()
  np.testing.assert_allclose(loss_sum, expected, rtol=1e-5)
  assert weight_sum == mask.sum() == 9


def test_smoothed_loss_hand_example():
  # Uniform logits over 4 tokens, smoothing 0.3: soft target (0.1, 0.7, 0.1, 0.1).
  # CE = log 4 for any soft target; minus its entropy.
  logits = jnp.zeros((1, 1, 4))
  targets = jnp.array([[1]])
  entropy = -(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1))
  loss_sum, weight_sum = losses.cross_entropy(logits, targets, 0.3)
  np.testing.assert_allclose(loss_sum, math.log(4) - entropy, rtol=1e-6)
  assert weight_sum == 1.0


def test_perfect_smoothed_prediction_scores_zero():
  soft = jnp.array([0.1, 0.7, 0.1, 0.1])
  loss_sum, _ = losses.cross_entropy(jnp.log(soft)[None, None], jnp.array([[1]]), 0.3)
  np.testing.assert_allclose(loss_sum, 0.0, atol=1e-6)


def test_nll_is_unsmoothed_and_matches_numpy(example):
  logits, targets = example
  nll_sum, weight_sum = losses.nll(logits, targets)
  log_probs = np.take_along_axis(_log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(nll_sum, -log_probs[targets > 0].sum(), rtol=1e-5)
  ce_sum, _ = losses.cross_entropy(logits, targets, 0.0)
  np.testing.assert_allclose(nll_sum, ce_sum, rtol=1e-6)
  assert weight_sum == 9


def test_accuracy_counts_real_tokens_only():
  # Arg-max predictions: [[2, 1, 0]]; the last position is padding.
  logits = jnp.array([[[0., 0., 5.], [0., 5., 0.], [5., 0., 0.]]])
  correct_sum, weight_sum = losses.accuracy(logits, jnp.array([[2, 2, 0]]))
  assert (correct_sum, weight_sum) == (1.0, 2.0)


def test_explicit_weights_replace_padding_mask(example):
  logits, targets = example
  weights = np.full(targets.shape, 0.5, np.float32)
  loss_sum, weight_sum = losses.cross_entropy(logits, targets, 0.1, weights)
  expected = 0.5 * _numpy_smoothed(logits, targets, 0.1).sum()
  np.testing.assert_allclose(loss_sum, expected, rtol=1e-5)
  assert weight_sum == 0.5 * targets.size


def test_compute_metrics_agrees_with_single_functions(example):
  logits, targets = example
  metrics = losses.compute_metrics(logits, targets, 0.1)
  np.testing.assert_allclose(metrics['loss'], losses.cross_entropy(logits, targets, 0.1)[0])
  np.testing.assert_allclose(metrics['nll'], losses.nll(logits, targets)[0])
  assert metrics['accuracy'] == losses.accuracy(logits, targets)[0]
  assert metrics['weight'] == 9


def test_bfloat16_logits_give_float32_sums(example):
  logits, targets = example
  metrics = losses.compute_metrics(jnp.asarray(logits, jnp.bfloat16), targets, 0.1)
  assert all(v.dtype == jnp.float32 for v in metrics.values())
  np.testing.assert_allclose(metrics['nll'], losses.nll(logits, targets)[0], rtol=2e-2)


@pytest.mark.parametrize('label_smoothing', [-0.1, 1.0])
def test_label_smoothing_out_of_range_is_user_error(example, label_smoothing):
  logits, targets = example
  with pytest.raises(UserError, match='label_smoothing'):
    losses.cross_entropy(logits, targets, label_smoothing)


def _numpy_soft_target(logits, targets, label_smoothing):
  vocab = logits.shape[-1]
  soft = np.full(logits.shape, label_smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1.0 - label_smoothing, axis=-1)
  return soft


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1, 0.3])
def test_gradient_of_metrics_is_softmax_minus_soft_target(example, label_smoothing):
  # d(loss_sum)/dz = w (softmax - soft); d(nll_sum)/dz = w (softmax - one-hot); the
  # hand-written backward pass must give exactly these, mixed in any proportion.
  logits, targets = example
  mask = (targets > 0)[..., None]
  probs = np.exp(_log_softmax(logits.astype(np.float64)))

  def mixed(z):
    sums = losses.compute_metrics(z, targets, label_smoothing)
    return 0.7 * sums['loss'] + 1.9 * sums['nll']

  grad = jax.grad(mixed)(jnp.asarray(logits))
  expected = mask * (0.7 * (probs - _numpy_soft_target(logits, targets, label_smoothing))
                     + 1.9 * (probs - _numpy_soft_target(logits, targets, 0.0)))
  np.testing.assert_allclose(grad, expected, atol=2e-6)
  jitted = jax.jit(jax.grad(lambda z: losses.cross_entropy(z, targets, label_smoothing)[0]))(logits)
  np.testing.assert_allclose(
      jitted, mask * (probs - _numpy_soft_target(logits, targets, label_smoothing)), atol=2e-6)


def test_gradient_keeps_the_logits_dtype(example):
  logits, targets = example
  grad = jax.grad(lambda z: losses.cross_entropy(z, targets, 0.1)[0])(
      jnp.asarray(logits, jnp.bfloat16))
  assert grad.dtype == jnp.bfloat16
  expected = jax.grad(lambda z: losses.cross_entropy(z, targets, 0.1)[0])(
      jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(grad.astype(np.float32), expected, atol=1e-2)


def test_huge_logits_stay_finite():
  logits = jnp.array([[[1e30, -1e30, 0.0], [-3e38, 3e38, 1.0]]], jnp.float32)
  targets = jnp.array([[1, 2]])
  value, grad = jax.value_and_grad(lambda z: losses.cross_entropy(z, targets, 0.1)[0])(logits)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
