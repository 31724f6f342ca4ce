"""word2vec: shapes, the negative-sampling loss, CBOW padding, and learning co-occurrence."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from transformer_jax.models import word2vec
from transformer_jax.nn.config import Word2VecConfig
from transformer_jax.nn import objectives


def _init(config, context_width=1, k=3):
  model = word2vec.Word2Vec(config)
  batch = dict(center=jnp.ones((2, 1), jnp.int32), context=jnp.ones((2, context_width), jnp.int32),
               negatives=jnp.ones((2, k), jnp.int32))
  params = model.init(jax.random.key(0), **batch)['params']
  return model, params


@pytest.mark.parametrize('mode,width', [('skipgram', 1), ('cbow', 6)])
def test_output_shape_and_init(mode, width):
  config = Word2VecConfig(vocab_size=50, embed_dim=8, mode=mode)
  model = word2vec.Word2Vec(config)
  batch = dict(center=jnp.ones((4, 1), jnp.int32), context=jnp.ones((4, width), jnp.int32),
               negatives=jnp.ones((4, 5), jnp.int32), extra_key=jnp.ones((4,), jnp.int32))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), **batch))
  scores = jax.eval_shape(lambda v: model.apply(v, **batch), variables)
  assert scores.shape == (4, 6) and scores.dtype == jnp.float32
  params = model.init(jax.random.key(0), **batch)['params']
  table = np.asarray(word2vec.input_embeddings(params))
  assert table.shape == (50, 8)
  assert np.abs(table).max() <= 0.5 / 8 and np.abs(table).max() > 0.25 / 8
  np.testing.assert_array_equal(np.asarray(params['output_embed']['embedding']), 0)


def test_negative_sampling_loss_matches_numpy():
  config = Word2VecConfig(vocab_size=20, embed_dim=4, mode='skipgram')
  model, params = _init(config)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                                  params)
  batch = dict(center=np.array([[3], [5], [7]], np.int32), context=np.array([[4], [6], [0]],
                                                                              np.int32),
               negatives=np.array([[1, 2, 9], [10, 11, 12], [13, 14, 15]], np.int32))
  scores = model.apply({'params': params}, **batch)
  sums = objectives.metric_sums(objectives.NEGATIVE_SAMPLING, scores, batch, label_smoothing=0.0)
  v = np.asarray(params['input_embed']['embedding'])
  u = np.asarray(params['output_embed']['embedding'])
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  expected = 0.0
  for row in range(2):          # row 2 has a pad context: weight 0
    h = v[batch['center'][row, 0]]
    expected -= np.log(sigmoid(h @ u[batch['context'][row, 0]]))
    expected -= sum(np.log(sigmoid(-h @ u[n])) for n in batch['negatives'][row])
  np.testing.assert_allclose(float(sums['loss']), expected, rtol=1e-5)
  assert float(sums['weight']) == 2.0


def test_cbow_mean_ignores_padding():
  config = Word2VecConfig(vocab_size=20, embed_dim=4, mode='cbow')
  model, params = _init(config, context_width=4)
  params['output_embed']['embedding'] = jnp.asarray(
      np.random.default_rng(1).normal(size=(20, 4)), jnp.float32)
  negatives = np.array([[7, 8]], np.int32)
  padded = model.apply({'params': params}, center=np.array([[5]]), negatives=negatives,
                       context=np.array([[3, 0, 4, 0]], np.int32))
  unpadded = model.apply({'params': params}, center=np.array([[5]]), negatives=negatives,
                         context=np.array([[3, 4]], np.int32))
  np.testing.assert_allclose(np.asarray(padded), np.asarray(unpadded), rtol=1e-6)
  v = np.asarray(params['input_embed']['embedding'])
  u = np.asarray(params['output_embed']['embedding'])
  h = (v[3] + v[4]) / 2
  np.testing.assert_allclose(np.asarray(padded)[0], [h @ u[5], h @ u[7], h @ u[8]], rtol=1e-5)


def test_learns_cooccurring_groups():
  """Words 2-6 only co-occur with each other, 7-11 likewise: within-group vectors align."""
  config = Word2VecConfig(vocab_size=12, embed_dim=16, mode='skipgram')
  model, params = _init(config)
  groups = [np.arange(2, 7), np.arange(7, 12)]
  rng = np.random.default_rng(0)
  tx = optax.adam(0.02)
  opt_state = tx.init(params)

  def loss_fn(p, batch):
    scores = model.apply({'params': p}, **batch)
    sums = objectives.metric_sums(objectives.NEGATIVE_SAMPLING, scores, batch, label_smoothing=0.0)
    return sums['loss'] / sums['weight']

  @jax.jit
  def step(p, s, batch):
    grads = jax.grad(loss_fn)(p, batch)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

  for _ in range(300):
    group = rng.integers(0, 2, size=64)
    center = np.array([rng.choice(groups[g]) for g in group])[:, None]
    context = np.array([rng.choice(groups[g]) for g in group])[:, None]
    negatives = rng.integers(2, 12, size=(64, 3))
    params, opt_state = step(params, opt_state, dict(center=center, context=context,
                                                     negatives=negatives))
  v = np.asarray(word2vec.input_embeddings(params))[2:]
  v = v / np.linalg.norm(v, axis=1, keepdims=True)
  cos = v @ v.T
  same = np.equal.outer(np.arange(10) // 5, np.arange(10) // 5) & ~np.eye(10, dtype=bool)
  across = ~np.equal.outer(np.arange(10) // 5, np.arange(10) // 5)
  assert cos[same].mean() > 0.5
  assert cos[same].mean() > cos[across].mean() + 0.4
