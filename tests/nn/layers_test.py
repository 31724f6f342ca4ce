"""Tests for transformer_jax.nn.layers' hand-differentiated tied output projection."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn import layers


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_tied_logits_gradients_match_autodiff_of_the_product(dtype):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (2, 3, 8)).astype(dtype)
  table = jax.random.normal(keys[1], (11, 8)).astype(dtype)
  cotangent = jax.random.normal(keys[2], (2, 3, 11)).astype(dtype)

  def pulled(fn):
    logits, vjp = jax.vjp(fn, x, table)
    return (logits, *vjp(cotangent))

  ours = pulled(layers.tied_logits)
  # Independent: NumPy in float64 on the same (rounded) inputs.
  x64, t64, c64 = (np.asarray(a, np.float64) for a in (x, table, cotangent))
  expected = (x64 @ t64.T, c64 @ t64, np.einsum('btv,btd->vd', c64, x64))
  tolerance = 1e-5 if dtype == jnp.float32 else 6e-2
  for got, want in zip(ours, expected):
    assert got.dtype == dtype and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tolerance, atol=tolerance)


def test_embedder_attend_is_the_tied_product():
  embedder = layers.Embedder(vocab_size=7, model_dim=4)
  ids = jnp.array([[1, 2, 3]])
  params = embedder.init(jax.random.PRNGKey(0), ids)
  x = jnp.arange(12.0).reshape(1, 3, 4)
  logits = embedder.apply(params, x, method=layers.Embedder.attend)
  table = np.asarray(params['params']['embedding'])
  np.testing.assert_allclose(logits, np.asarray(x) @ table.T, rtol=1e-5, atol=1e-5)
