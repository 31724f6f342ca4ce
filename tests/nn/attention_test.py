"""Attention against an independent NumPy computation; masks; NaN safety; the KV cache."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn import attention


def numpy_attention(q, k, v, mask, scale):
  """softmax(q kᵀ * scale) v per head, written with explicit loops over batch and head."""
  b, lq, h, _ = q.shape
  out = np.zeros((b, lq, h, v.shape[-1]))
  for i in range(b):
    for j in range(h):
      logits = q[i, :, j, :].astype(np.float64) @ k[i, :, j, :].T.astype(np.float64) * scale
      m = np.broadcast_to(mask[i, 0], logits.shape)
      logits = np.where(m, logits, -np.inf)
      weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
      weights /= weights.sum(axis=-1, keepdims=True)
      out[i, :, j, :] = weights @ v[i, :, j, :]
  return out


def random_qkv(seed, b=3, lq=5, lk=7, h=2, dk=4, dv=6):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, lq, h, dk)).astype(np.float32),
          rng.normal(size=(b, lk, h, dk)).astype(np.float32),
          rng.normal(size=(b, lk, h, dv)).astype(np.float32))


@pytest.mark.parametrize('scale', [None, 1.0, 0.3])
def test_matches_numpy_with_padding_mask(scale):
  q, k, v = random_qkv(0)
  key_valid = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], bool)
  mask = attention.make_attention_mask(jnp.ones((3, 5), bool), jnp.asarray(key_valid))
  out, weights = attention.dot_product_attention(q, k, v, mask, scale=scale)
  expected = numpy_attention(q, k, v, np.asarray(mask), q.shape[-1] ** -0.5 if scale is None else scale)
  np.testing.assert_allclose(out, expected, atol=1e-5)
  assert out.shape == (3, 5, 2, 6) and weights.shape == (3, 2, 5, 7)
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
  assert np.all(np.asarray(weights)[1, :, :, 4:] == 0)


def test_matches_numpy_with_causal_mask_and_bias():
  q, k, v = random_qkv(1, lq=6, lk=6)
  bias = np.random.default_rng(2).normal(size=(1, 2, 6, 6)).astype(np.float32)
  mask = attention.make_causal_mask(6)
  out, _ = attention.dot_product_attention(q, k, v, mask, bias)
  # Fold the bias in as scaled logits of the independent computation: q kᵀ s + bias.
  b, lq, h, _ = q.shape
  expected = np.zeros((b, lq, h, 6))
  for i in range(b):
    for j in range(h):
      logits = q[i, :, j] @ k[i, :, j].T * 0.5 + bias[0, j]
      logits = np.where(np.tril(np.ones((6, 6), bool)), logits, -np.inf)
      w = np.exp(logits - logits.max(-1, keepdims=True))
      expected[i, :, j] = (w / w.sum(-1, keepdims=True)) @ v[i, :, j]
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_mask_helpers():
  causal = np.asarray(attention.make_causal_mask(4))[0, 0]
  np.testing.assert_array_equal(causal, np.tril(np.ones((4, 4), bool)))
  seg = jnp.array([[1, 1, 2, 2, 0]])
  segment = np.asarray(attention.make_segment_mask(seg, seg))[0, 0]
  assert segment[0, 1] and not segment[1, 2] and segment[2, 3] and not segment[3, 4]
  pad = np.asarray(attention.make_padding_mask(jnp.array([[5, 0]]), jnp.array([[5, 6, 0]])))[0, 0]
  np.testing.assert_array_equal(pad, [[True, True, False], [False, False, False]])
  assert attention.combine_masks(None, None) is None
  both = attention.combine_masks(jnp.array([True, True, False]), None, jnp.array([True, False, True]))
  np.testing.assert_array_equal(both, [True, False, False])


def test_fully_masked_row_gives_zeros_and_finite_gradients():
  q, k, v = random_qkv(3)
  mask = np.ones((3, 1, 5, 7), bool)
  mask[0, :, 2, :] = False        # query 2 of example 0 sees nothing
  mask[1] = False                 # example 1 sees nothing at all

  def loss(q, k, v):
    out, _ = attention.dot_product_attention(q, k, v, jnp.asarray(mask))
    return jnp.sum(out ** 2), out

  (value, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
  assert np.isfinite(value)
  np.testing.assert_array_equal(np.asarray(out)[0, 2], 0.0)
  np.testing.assert_array_equal(np.asarray(out)[1], 0.0)
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))


def test_multi_head_module_equals_manual_projection():
  x = np.random.default_rng(4).normal(size=(2, 5, 8)).astype(np.float32)
  module = attention.MultiHeadAttention(num_heads=2, head_dim=3, value_dim=5)
  params = jax.device_get(module.init(jax.random.key(0), x)['params'])
  assert params['query']['kernel'].shape == (8, 2, 3)
  assert params['value']['kernel'].shape == (8, 2, 5)
  assert params['out']['kernel'].shape == (2, 5, 8)
  mask = attention.make_causal_mask(5)
  out = module.apply({'params': params}, x, mask=mask)
  assert 'bias' not in params['key']          # softmax cancels a key bias: none is kept
  proj = lambda name: (np.einsum('bld,dhk->blhk', x, params[name]['kernel'])
                       + params[name].get('bias', 0.0))
  heads = numpy_attention(proj('query'), proj('key'), proj('value'),
                          np.broadcast_to(np.asarray(mask), (2, 1, 5, 5)), 3 ** -0.5)
  expected = np.einsum('blhk,hkd->bld', heads, params['out']['kernel']) + params['out']['bias']
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_unscaled_logit_variance_at_init_does_not_grow_with_head_dim():
  """The tutorials' argument for 1/sqrt(d_k) takes q and k with unit-variance components, so
  q.k has variance d_k. The projections' Xavier init (fan-in d_model, fan-out h * d_k) gives
  each component variance 2 d_model / (d_model + h d_k) on unit-variance inputs, hence
  Var(q.k) = d_k (2 d_model / (d_model + h d_k))^2: about flat in d_k at d_model 128, h 4
  (seed_claims.py's unscaled rows saturate as much at d_k 16 as at 128 at initialisation)."""
  d_model, heads = 128, 4
  x = np.random.default_rng(0).normal(size=(1, 256, d_model)).astype(np.float32)
  measured = {}
  for head_dim in (16, 32, 64, 128):
    module = attention.MultiHeadAttention(num_heads=heads, head_dim=head_dim)
    draws = []
    for seed in range(4):
      params = jax.device_get(module.init(jax.random.key(seed), x)['params'])
      q = (np.einsum('bld,dhk->bhlk', x, params['query']['kernel'])
           + params['query']['bias'][None, :, None, :])
      k = np.einsum('bld,dhk->bhlk', x, params['key']['kernel'])
      draws.append(np.einsum('bhqk,bhsk->bhqs', q, k).var())
    measured[head_dim] = np.mean(draws)
    expected = head_dim * (2 * d_model / (d_model + heads * head_dim)) ** 2
    assert measured[head_dim] == pytest.approx(expected, rel=0.15), head_dim
  assert measured[128] < measured[16]       # not 8x larger, as unit-variance q, k would give


def test_cross_attention_shapes_and_sown_weights():
  q = jnp.ones((2, 3, 8))
  kv = jnp.ones((2, 6, 8))
  module = attention.MultiHeadAttention(num_heads=4, head_dim=2)
  variables = module.init(jax.random.key(0), q, kv)
  out, state = module.apply(variables, q, kv, mutable=['intermediates'])
  assert out.shape == (2, 3, 8)
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (2, 4, 3, 6)


def test_attention_dropout_only_when_not_deterministic():
  x = np.random.default_rng(5).normal(size=(2, 6, 8)).astype(np.float32)
  module = attention.MultiHeadAttention(num_heads=2, head_dim=4, dropout_rate=0.5)
  variables = module.init(jax.random.key(0), x)
  a = module.apply(variables, x)
  b = module.apply(variables, x)
  c = module.apply(variables, x, deterministic=False, rngs={'dropout': jax.random.key(1)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_self_attention_cache_equals_full_causal_pass():
  x = np.random.default_rng(6).normal(size=(2, 5, 8)).astype(np.float32)
  module = attention.MultiHeadAttention(num_heads=2, head_dim=4, rotary=True)
  params = module.init(jax.random.key(0), x)['params']
  full = module.apply({'params': params}, x, mask=attention.make_causal_mask(5))
  cached = attention.MultiHeadAttention(num_heads=2, head_dim=4, rotary=True, decode=True)
  _, state = cached.apply({'params': params}, x, mutable=['cache'])   # creates the cache
  steps = []
  for t in range(5):
    # No positions given: a decode step takes its RoPE position from the cache index.
    out, state = cached.apply({'params': params, **state}, x[:, t:t + 1], mutable=['cache'])
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)
  # The cache is kept heads-first, [batch, heads, length, d_k]: steps read it without a copy.
  assert state['cache']['cached_key'].shape == (2, 2, 5, 4)


def test_a_cache_grown_mid_decoding_goes_on_as_the_full_causal_pass():
  """Two positions in a 2-position cache, then grown to 5 (attention.grow_cache): the
  remaining steps see the filled positions where they were and nothing of the new ones."""
  x = np.random.default_rng(7).normal(size=(2, 5, 8)).astype(np.float32)
  module = attention.MultiHeadAttention(num_heads=2, head_dim=4, rotary=True)
  params = module.init(jax.random.key(0), x)['params']
  full = module.apply({'params': params}, x, mask=attention.make_causal_mask(5))
  cached = attention.MultiHeadAttention(num_heads=2, head_dim=4, rotary=True, decode=True)
  _, state = cached.apply({'params': params}, x[:, :2], mutable=['cache'])
  assert attention.holds_self_cache(state)
  steps = []
  for t in range(5):
    if t == 2:
      before = state['cache']
      state = attention.grow_cache(state, 5)
      assert state['cache']['cached_key'].shape == (2, 2, 5, 4)
      np.testing.assert_array_equal(state['cache']['cached_value'][:, :, :2],
                                    before['cached_value'])
      assert int(state['cache']['cache_index']) == 2
    out, state = cached.apply({'params': params, **state}, x[:, t:t + 1], mutable=['cache'])
    steps.append(out)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=1e-5)
  with pytest.raises(ValueError, match='shrink'):
    attention.grow_cache(state, 4)
  assert not attention.holds_self_cache({'carry': jnp.zeros((2, 3))})


def test_decoding_cross_attention_groups_query_rows_over_fewer_source_rows():
  """Rows 3g..3g+2 over source row g (a beam search's beams sharing one source) equal
  each row over its own copy of that source; a count that is not a multiple is refused."""
  rng = np.random.default_rng(7)
  memory = rng.normal(size=(2, 4, 8)).astype(np.float32)
  queries = rng.normal(size=(6, 1, 8)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  module = attention.MultiHeadAttention(num_heads=2, head_dim=4, decode=True)
  params = module.init(jax.random.key(0), queries, np.repeat(memory, 3, 0))['params']

  def step(memory, mask):
    _, state = module.apply({'params': params}, queries, memory, mutable=['cache'])
    return module.apply({'params': params, **state}, queries, memory,
                        mask=mask[:, None, None, :], mutable=['cache'])[0]
  shared = step(memory, mask)
  tiled = step(np.repeat(memory, 3, 0), np.repeat(mask, 3, 0))
  np.testing.assert_allclose(shared, tiled, atol=1e-6)
  with pytest.raises(ValueError, match='whole number of query rows'):
    step(memory[:1].repeat(4, 0), mask[:1].repeat(4, 0))
