"""Dropout from 16 random bits per element: the keep rate, the scaling, independence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn import dropout


@pytest.mark.parametrize('rate', [0.1, 0.3, 0.5, 0.9])
def test_keep_probability_is_within_one_level_of_the_rate(rate):
  assert abs(dropout.keep_probability(rate) - (1.0 - rate)) <= 0.5 / 65536


@pytest.mark.parametrize('rate', [0.1, 0.3])
def test_kept_share_and_mean_match_the_rate(rate):
  x = jnp.ones((400, 1001))                  # odd size: the last word's upper half unused
  out = dropout.apply(x, jax.random.key(0), rate)
  kept = np.asarray(out != 0)
  n = kept.size
  keep = dropout.keep_probability(rate)
  # 5 standard deviations of a binomial share.
  assert abs(kept.mean() - keep) < 5 * np.sqrt(keep * (1 - keep) / n)
  np.testing.assert_allclose(np.asarray(out)[kept], 1.0 / keep, rtol=1e-6)
  assert abs(float(out.mean()) - 1.0) < 5 * np.sqrt((1 - keep) / keep / n)


def test_both_halves_of_each_word_are_used_and_independent():
  mask = np.asarray(dropout.keep_mask(jax.random.key(1), 0.5, (200_000,)))
  low, high = mask[0::2], mask[1::2]           # the two halves of each 32-bit word
  n = low.size
  assert abs(low.mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
  assert abs(high.mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
  # Independent halves: P(both kept) = 1/4.
  assert abs((low & high).mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / n)
  other = np.asarray(dropout.keep_mask(jax.random.key(2), 0.5, (200_000,)))
  assert (mask != other).mean() > 0.45        # another key, another mask


def test_module_is_identity_when_deterministic_and_draws_from_the_dropout_stream():
  module = dropout.Dropout(0.3)
  x = jnp.arange(1.0, 65.0).reshape(8, 8)
  assert module.apply({}, x, deterministic=True) is x
  a = module.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(3)})
  b = module.apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(3)})
  np.testing.assert_array_equal(a, b)
  assert 0 < int((a == 0).sum()) < 64
  assert dropout.Dropout(0.0).apply({}, x, deterministic=False) is x


def test_gradient_flows_through_kept_elements_only():
  x = jnp.ones((64, 64))
  key = jax.random.key(4)
  grad = jax.grad(lambda y: jnp.sum(dropout.apply(y, key, 0.3)))(x)
  out = dropout.apply(x, key, 0.3)
  np.testing.assert_array_equal(np.asarray(grad) != 0, np.asarray(out) != 0)
  np.testing.assert_allclose(np.asarray(grad)[np.asarray(out) != 0],
                             1.0 / dropout.keep_probability(0.3), rtol=1e-6)


def test_a_rate_of_one_drops_everything_and_impossible_rates_are_refused():
  x = jnp.ones((4, 8))
  np.testing.assert_array_equal(dropout.apply(x, jax.random.key(0), 1.0), np.zeros((4, 8)))
  for rate in (-0.1, 1.5, 1.0 - 2.0**-18):
    with pytest.raises(ValueError, match='dropout rate'):
      dropout.keep_probability(rate)
  assert dropout.keep_probability(0.99999) == 1 / 65536
