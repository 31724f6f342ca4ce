"""Tests for transformer_jax.models.classifier (encoder-only Transformer classifier)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer_jax.models.classifier import EncoderClassifier
from transformer_jax.nn.config import ClassifierConfig
from transformer_jax.nn import objectives
from transformer_jax.train import steps

VOCAB = 16


def _config(pooling='mean', **changes):
  fields = dict(vocab_size=VOCAB, model_dim=32, num_heads=4, mlp_dim=64, num_layers=2,
                dropout_rate=0.0, max_len=64, pooling=pooling, num_classes=3)
  return ClassifierConfig(**{**fields, **changes})


def _init(config, seed=0):
  model = EncoderClassifier(config)
  ones = jnp.ones((1, 8), jnp.int32)
  init = jax.jit(model.init)
  return model, init(jax.random.key(seed), ones, jnp.ones((1,), jnp.int32))['params']


def _sentences():
  """Three rows of different lengths, 0-padded to 7 ids."""
  return np.array([[5, 7, 3, 9, 1, 0, 0], [4, 1, 0, 0, 0, 0, 0], [3, 3, 8, 6, 2, 11, 1]],
                  np.int32)


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_shapes(pooling):
  config = _config(pooling)
  model = EncoderClassifier(config)
  inputs = jax.ShapeDtypeStruct((4, 12), jnp.int32)
  label = jax.ShapeDtypeStruct((4,), jnp.int32)
  params = jax.eval_shape(
      lambda i, l: model.init(jax.random.key(0), i, l), inputs, label)['params']
  rows = VOCAB + (pooling == 'cls')
  assert params['embedding']['embedding'].shape == (rows, 32)
  assert params['logits']['kernel'].shape == (32, 3)
  out = jax.eval_shape(lambda p, i, l: model.apply({'params': p}, i, l), params, inputs, label)
  assert out.shape == (4, 3) and out.dtype == jnp.float32
  assert EncoderClassifier.OBJECTIVE == objectives.CLASSES


def _intermediates(model, params, inputs):
  """(logits, sown intermediates, encoder output as numpy) of one forward pass."""
  logits, state = jax.jit(functools.partial(model.apply, mutable=['intermediates']))(
      {'params': params}, inputs)
  return logits, state, np.asarray(state['intermediates']['encoded'][0])


def test_mean_pooling_is_the_masked_mean_of_the_encoder_output():
  model, params = _init(_config('mean'))
  inputs = _sentences()
  logits, state, encoded = _intermediates(model, params, inputs)
  # Independently: the encoder alone, then a numpy mean over the real tokens of each row.
  again, _ = jax.jit(functools.partial(model.apply, method=EncoderClassifier.encode))(
      {'params': params}, inputs)
  np.testing.assert_allclose(np.asarray(again), encoded, rtol=1e-6)
  expected = np.stack([encoded[r, inputs[r] != 0].mean(axis=0) for r in range(len(inputs))])
  np.testing.assert_allclose(np.asarray(state['intermediates']['pooled'][0]), expected,
                             rtol=1e-5, atol=1e-6)
  dense = params['logits']
  np.testing.assert_allclose(np.asarray(logits), expected @ np.asarray(dense['kernel'])
                             + np.asarray(dense['bias']), rtol=1e-5, atol=1e-5)


# cls twins are slow; test_cls_pooling_reads_the_class_token_output stays.
@pytest.mark.parametrize('pooling', ['mean', pytest.param('cls', marks=pytest.mark.slow)])
def test_logits_do_not_depend_on_padding(pooling):
  model, params = _init(_config(pooling))
  apply = jax.jit(model.apply)
  inputs = _sentences()
  logits = apply({'params': params}, inputs)
  longer = np.pad(inputs, ((0, 0), (0, 9)))
  np.testing.assert_allclose(np.asarray(apply({'params': params}, longer)),
                             np.asarray(logits), rtol=1e-5, atol=1e-6)
  # Whatever sits in the padded slots' embeddings, real outputs stay the same: pads get no
  # gradient (the receptive-field test of flax, through the encoder's `embedded` perturbation).
  perturbations = jax.eval_shape(
      lambda: model.apply({'params': params}, longer, mutable=['perturbations'])[1])
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), perturbations)

  def total(perturb):
    out = model.apply({'params': params, **perturb}, longer)
    return jnp.sum(out * jnp.arange(1.0, 4.0))

  grads = jax.jit(jax.grad(total))(zeros)['perturbations']['encoder']['embedded']
  grads = np.abs(np.asarray(grads)).sum(-1)
  if pooling == 'cls':
    assert grads[:, 0].min() > 0      # the class token
    grads = grads[:, 1:]
  assert np.all(grads[longer == 0] == 0)
  assert np.all(grads[longer != 0] > 0)


def test_cls_pooling_reads_the_class_token_output():
  model, params = _init(_config('cls'))
  inputs = _sentences()
  _, state, encoded = _intermediates(model, params, inputs)
  assert encoded.shape == (3, 8, 32)
  np.testing.assert_array_equal(np.asarray(state['intermediates']['pooled'][0]), encoded[:, 0])
  # The class token is seen by every row, even a row of padding only (it stays finite).
  empty = np.zeros((1, 7), np.int32)
  assert np.all(np.isfinite(np.asarray(model.apply({'params': params}, empty))))


def _token_task(rng, rows, length=10):
  """label 1 iff token 5 occurs among 1-8 random tokens from 3..15 (half the rows)."""
  inputs = np.zeros((rows, length), np.int32)
  label = rng.integers(0, 2, rows).astype(np.int32)
  for r in range(rows):
    n = rng.integers(1, length - 1)
    tokens = rng.choice([t for t in range(3, VOCAB) if t != 5], n)
    if label[r]:
      tokens[rng.integers(0, n)] = 5
    inputs[r, :n] = tokens
    inputs[r, n] = 1  # EOS
  return {'inputs': inputs, 'label': label}


@pytest.mark.parametrize('pooling', ['mean', pytest.param('cls', marks=pytest.mark.slow)])
def test_learns_whether_a_token_occurs(pooling):
  config = _config(pooling, num_classes=2, num_layers=1)
  model = EncoderClassifier(config)
  tx = optax.adam(3e-3)
  rng = np.random.default_rng(0)
  state = steps.init_train_state(model, jax.random.key(0), _token_task(rng, 2), tx)
  train_step = jax.jit(functools.partial(steps.train_step, model=model, label_smoothing=0.0))
  for _ in range(200):
    state, _ = train_step(state, _token_task(rng, 32))
  held_out = _token_task(np.random.default_rng(1), 512)
  held_out['inputs'] = np.pad(held_out['inputs'], ((0, 8), (0, 0)))    # 8 padding rows
  held_out['label'] = np.pad(held_out['label'], (0, 8))
  sums = steps.eval_step(state.params, held_out, model=model, label_smoothing=0.0)
  assert float(sums['weight']) == 512
  assert float(sums['accuracy']) / 512 > 0.95


@pytest.mark.parametrize('pooling', ['mean', 'cls'])
def test_the_class_token_takes_one_position_of_the_table(pooling):
  """Under 'cls' a sentence of max_len tokens needs max_len + 1 positions: refused, not NaN."""
  config = _config(pooling, max_len=8, num_layers=1)
  assert config.max_input_len == (7 if pooling == 'cls' else 8)
  model = EncoderClassifier(config)
  apply = lambda length: jax.eval_shape(
      lambda i: model.init_with_output(jax.random.key(0), i)[0],
      jax.ShapeDtypeStruct((2, length), jnp.int32))
  assert apply(config.max_input_len).shape == (2, 3)
  with pytest.raises(ValueError, match='sequence length 9 exceeds max_len=8'):
    apply(config.max_input_len + 1)
