"""The fused attention paths (`jax.nn.dot_product_attention`) against the explicit one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.nn import attention
from transformer_jax.nn.config import TransformerConfig
from tests.nn.attention_test import numpy_attention, random_qkv


def _padding_mask_with_an_empty_row():
  # Row 1's query 0 may attend to nothing: both paths must give it a zero output.
  key_valid = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0]], bool)
  query_valid = np.ones((3, 5), bool)
  mask = np.asarray(attention.make_attention_mask(jnp.asarray(query_valid), jnp.asarray(key_valid)))
  mask = mask.copy()
  mask[1, 0, 0, :] = False
  return mask


@pytest.mark.parametrize('scale', [None, 1.0])
def test_fused_xla_matches_numpy_and_zeroes_empty_rows(scale):
  q, k, v = random_qkv(11, dv=4)
  mask = _padding_mask_with_an_empty_row()
  out = attention.fused_attention(q, k, v, jnp.asarray(mask), scale=scale, implementation='xla')
  with np.errstate(invalid='ignore'):
    expected = numpy_attention(q, k, v, mask, 0.5 if scale is None else scale)
  expected = np.nan_to_num(expected)          # NumPy's empty row is 0/0
  np.testing.assert_allclose(out, expected, atol=1e-5)
  np.testing.assert_array_equal(out[1, 0], 0.0)


def test_fused_xla_equals_explicit_with_bias_causal_mask_and_gradients():
  q, k, v = (jnp.asarray(a) for a in random_qkv(12, lq=6, lk=6, dv=4))
  mask = attention.combine_masks(attention.make_causal_mask(6),
                                 jnp.asarray(np.random.default_rng(0).random((3, 1, 6, 6)) > 0.3))
  bias = jnp.asarray(np.random.default_rng(1).normal(size=(1, 2, 6, 6)), jnp.float32)

  def loss(fn, q, k, v):
    return jnp.sum(jnp.sin(fn(q, k, v)))

  explicit = lambda q, k, v: attention.dot_product_attention(q, k, v, mask, bias)[0]
  fused = lambda q, k, v: attention.fused_attention(q, k, v, mask, bias, implementation='xla')
  np.testing.assert_allclose(fused(q, k, v), explicit(q, k, v), atol=1e-5)
  for got, want in zip(jax.grad(lambda *a: loss(fused, *a), argnums=(0, 1, 2))(q, k, v),
                       jax.grad(lambda *a: loss(explicit, *a), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_auto_resolves_by_backend_dtype_and_head_sizes(monkeypatch):
  resolve = attention.resolve_implementation
  assert resolve('xla', jnp.float32, 64, 64) == 'xla'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert resolve('auto', jnp.bfloat16, 64, 64) == 'explicit'
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert resolve('auto', jnp.bfloat16, 64, 64) == 'cudnn'
  assert resolve('auto', jnp.float16, 128, 128) == 'cudnn'
  assert resolve('auto', jnp.float32, 64, 64) == 'explicit'     # cuDNN takes half precision only
  assert resolve('auto', jnp.bfloat16, 64, 32) == 'explicit'
  assert resolve('auto', jnp.bfloat16, 12, 12) == 'explicit'
  assert resolve('auto', jnp.bfloat16, 256, 256) == 'explicit'


def test_module_paths_agree_and_weights_are_still_sown(monkeypatch):
  calls = []
  fused_fn = attention.fused_attention
  monkeypatch.setattr(attention, 'fused_attention',
                      lambda *a, **k: calls.append(k['implementation']) or fused_fn(*a, **k))
  x = np.random.default_rng(13).normal(size=(2, 5, 8)).astype(np.float32)
  mask = attention.make_causal_mask(5)
  explicit = attention.MultiHeadAttention(num_heads=2, head_dim=4)
  fused = attention.MultiHeadAttention(num_heads=2, head_dim=4, implementation='xla')
  params = explicit.init(jax.random.key(0), x)['params']
  assert jax.tree.structure(fused.init(jax.random.key(0), x)['params']) == jax.tree.structure(params)
  calls.clear()
  np.testing.assert_allclose(fused.apply({'params': params}, x, mask=mask),
                             explicit.apply({'params': params}, x, mask=mask), atol=1e-5)
  assert calls == ['xla']
  _, sown = fused.apply({'params': params}, x, mask=mask, mutable=['intermediates'])
  _, reference = explicit.apply({'params': params}, x, mask=mask, mutable=['intermediates'])
  np.testing.assert_allclose(sown['intermediates']['attention_weights'][0],
                             reference['intermediates']['attention_weights'][0], atol=1e-6)
  assert calls == ['xla']                     # weights collected: the explicit path ran


def test_module_with_dropout_keeps_the_explicit_path():
  x = np.random.default_rng(14).normal(size=(2, 6, 8)).astype(np.float32)
  kwargs = dict(num_heads=2, head_dim=4, dropout_rate=0.5)
  params = attention.MultiHeadAttention(**kwargs).init(jax.random.key(0), x)['params']
  rngs = {'dropout': jax.random.key(1)}
  outs = [attention.MultiHeadAttention(**kwargs, implementation=impl).apply(
      {'params': params}, x, deterministic=False, rngs=rngs) for impl in ('explicit', 'xla')]
  np.testing.assert_array_equal(outs[0], outs[1])


def test_transformer_with_xla_attention_equals_explicit_in_training_and_decoding():
  from transformer_jax.decoding import predict
  from transformer_jax.models.transformer import Transformer
  config = TransformerConfig.named('tiny', vocab_size=30, num_layers=1, max_len=16)
  rng = np.random.default_rng(15)
  inputs = rng.integers(1, 30, (2, 7)).astype(np.int32)
  inputs[1, 4:] = 0
  targets = rng.integers(1, 30, (2, 6)).astype(np.int32)
  targets[0, 3:] = 0
  params = Transformer(config).init(jax.random.key(0), inputs, targets)['params']
  models = [Transformer(config.replace(attention_impl=impl)) for impl in ('explicit', 'xla')]
  logits = [m.apply({'params': params}, inputs, targets) for m in models]
  np.testing.assert_allclose(logits[1], logits[0], atol=2e-5)
  settings = predict.SearchSettings(method='beam', beam_size=2, max_extra_len=3)
  outputs = [predict.predict_step(params, {'inputs': jnp.asarray(inputs)}, model=m,
                                  settings=settings, eos_id=2) for m in models]
  np.testing.assert_array_equal(outputs[1], outputs[0])


def test_config_rejects_an_unknown_implementation():
  with pytest.raises(ValueError, match="attention_impl='flash'"):
    TransformerConfig(attention_impl='flash')
