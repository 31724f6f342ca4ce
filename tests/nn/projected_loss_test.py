"""The chunked tied projection + loss (projected_loss) against float64 NumPy, and the models'
`project=False` path against their logits."""
import functools
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.models.lm import DecoderOnlyLM
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn import losses
from transformer_jax.nn import objectives
from transformer_jax.nn import projected_loss
from transformer_jax.train import steps


def _example(rows=3, length=11, d=8, vocab=13, seed=0):
  rng = np.random.default_rng(seed)
  hidden = rng.normal(size=(rows, length, d)).astype(np.float32)
  table = (0.5 * rng.normal(size=(vocab, d))).astype(np.float32)
  targets = rng.integers(1, vocab, size=(rows, length)).astype(np.int32)
  targets[0, 7:] = 0
  targets[2, 2:] = 0
  return hidden, table, targets


def _numpy_sums_and_gradients(hidden, table, targets, label_smoothing, g_loss, g_nll):
  """Float64: the metric sums, and d(g_loss * loss + g_nll * nll)/d(hidden, table)."""
  h, t = hidden.astype(np.float64), table.astype(np.float64)
  vocab = t.shape[0]
  weights = (targets > 0).astype(np.float64)
  z = h @ t.T
  p = np.exp(z - z.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  soft = np.full(z.shape, label_smoothing / (vocab - 1))
  np.put_along_axis(soft, targets[..., None], 1.0 - label_smoothing, axis=-1)
  entropy = -(soft * np.log(np.where(soft > 0, soft, 1.0))).sum(-1)
  log_p = np.log(p)
  smoothed = -(soft * log_p).sum(-1) - entropy
  nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
  correct = np.take_along_axis(z, targets[..., None], -1)[..., 0] >= z.max(-1)
  one_hot = np.zeros(z.shape)
  np.put_along_axis(one_hot, targets[..., None], 1.0, axis=-1)
  grad_z = weights[..., None] * (g_loss * (p - soft) + g_nll * (p - one_hot))
  sums = {'loss': (smoothed * weights).sum(), 'nll': (nll * weights).sum(),
          'accuracy': (correct * weights).sum(), 'weight': weights.sum()}
  return sums, grad_z @ t, np.einsum('rlv,rld->vd', grad_z, h)


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1, 0.3])
@pytest.mark.parametrize('chunk', [1, 4, 7, 33, 1000])
def test_sums_and_gradients_match_float64_numpy(label_smoothing, chunk):
  hidden, table, targets = _example()
  weights = losses.target_weights(targets)

  def objective(h, t):
    sums = projected_loss.metric_sums(projected_loss.Projection(h, t), targets,
                                      label_smoothing, weights, chunk)
    return sums['loss'] + 0.7 * sums['nll'], sums

  (_, sums), (grad_h, grad_t) = jax.jit(jax.value_and_grad(objective, argnums=(0, 1),
                                                           has_aux=True))(hidden, table)
  expected, expected_h, expected_t = _numpy_sums_and_gradients(
      hidden, table, targets, label_smoothing, 1.0, 0.7)
  for key, value in expected.items():
    np.testing.assert_allclose(sums[key], value, rtol=2e-5, err_msg=key)
  np.testing.assert_allclose(grad_h, expected_h, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grad_t, expected_t, rtol=1e-4, atol=1e-6)
  assert np.all(np.asarray(grad_h)[2, 2:] == 0)       # padding gets no gradient


def test_equals_the_materialised_logits_path():
  hidden, table, targets = _example(rows=4, length=9, d=16, vocab=40, seed=1)
  weights = losses.target_weights(targets)
  projection = projected_loss.Projection(jnp.asarray(hidden), jnp.asarray(table))
  chunked = projected_loss.metric_sums(projection, targets, 0.1, weights, 8)
  whole = losses.compute_metrics(projection.logits(), targets, 0.1, weights)
  for key in whole:
    np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-5, err_msg=key)


def test_bfloat16_inputs_keep_their_dtype_in_the_gradient():
  hidden, table, targets = _example()
  weights = losses.target_weights(targets)

  def loss(h, t):
    return projected_loss.metric_sums(projected_loss.Projection(h, t), targets, 0.1,
                                      weights, 4)['loss']

  grad_h, grad_t = jax.grad(loss, argnums=(0, 1))(jnp.asarray(hidden, jnp.bfloat16),
                                                  jnp.asarray(table, jnp.bfloat16))
  assert grad_h.dtype == grad_t.dtype == jnp.bfloat16
  _, expected_h, _ = _numpy_sums_and_gradients(hidden, table, targets, 0.1, 1.0, 0.0)
  np.testing.assert_allclose(np.asarray(grad_h, np.float32), expected_h, rtol=0.1, atol=0.02)


def _tiny(**overrides):
  fields = dict(vocab_size=31, num_layers=1, model_dim=16, num_heads=2, mlp_dim=32,
                dropout_rate=0.0, attention_dropout_rate=0.0, max_len=32)
  fields.update(overrides)
  return TransformerConfig(**fields)


@pytest.mark.parametrize('model_class', [Transformer, DecoderOnlyLM])
def test_train_step_with_chunks_equals_the_logits_path(model_class):
  rng = np.random.default_rng(2)
  targets = rng.integers(1, 31, size=(4, 10)).astype(np.int32)
  targets[1, 6:] = 0
  batch = {'targets': targets}
  if model_class is Transformer:
    batch['inputs'] = rng.integers(1, 31, size=(4, 7)).astype(np.int32)
  model = model_class(_tiny())
  import optax
  state = steps.init_train_state(model, jax.random.PRNGKey(0), batch, optax.sgd(0.1))
  outputs = objectives.model_outputs(model, state.params, batch, deterministic=True,
                                     loss_chunk=8)
  assert isinstance(outputs, projected_loss.Projection)
  np.testing.assert_allclose(outputs.logits(), objectives.model_outputs(
      model, state.params, batch, deterministic=True), rtol=1e-6, atol=1e-6)
  results = [jax.jit(functools.partial(steps.train_step, model=model, label_smoothing=0.1,
                                       loss_chunk=c))(state, batch) for c in (0, 8)]
  for key in ('loss', 'nll', 'accuracy', 'weight', 'grad_norm'):
    np.testing.assert_allclose(results[0][1][key], results[1][1][key], rtol=1e-5, err_msg=key)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                         results[0][0].params, results[1][0].params)


def test_an_untied_output_still_returns_logits():
  model = Transformer(_tiny(tie_output=False))
  batch = {'inputs': np.ones((2, 5), np.int32), 'targets': np.ones((2, 4), np.int32)}
  params = model.init(jax.random.PRNGKey(0), **batch)['params']
  outputs = objectives.model_outputs(model, params, batch, deterministic=True, loss_chunk=8)
  assert outputs.shape == (2, 4, 31)
