"""The encoder-decoder Transformer: causality, padding, packing, caching, shapes, sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.models import summary
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import NAMED_SETTINGS, POSITIONAL_KINDS, TABLE_POSITIONAL_KINDS
from transformer_jax.nn.config import TransformerConfig

SMALL = dict(vocab_size=40, model_dim=16, num_heads=2, mlp_dim=32, num_layers=2, max_len=24,
             dropout_rate=0.0)


def tokens(seed, shape, lengths):
  """Random ids in [3, 40) with row r padded (0) from lengths[r] on."""
  ids = np.random.default_rng(seed).integers(3, 40, shape)
  for row, length in enumerate(lengths):
    ids[row, length:] = 0
  return jnp.asarray(ids, jnp.int32)


def setup_model(**changes):
  config = TransformerConfig(**{**SMALL, **changes})
  model = Transformer(config)
  inputs, targets = tokens(0, (2, 9), [9, 6]), tokens(1, (2, 8), [8, 5])
  variables = model.init(jax.random.key(0), inputs, targets)
  return config, model, variables['params'], inputs, targets


_JACOBIANS = {}      # id(model) -> (model, jitted gradient): one compile per model, not per call


def embedding_jacobian(model, params, inputs, targets, side, out_pos):
  """|d logits[:, out_pos] / d embedded[side][:, j]| summed, for every position j."""
  if id(model) not in _JACOBIANS:
    def out_at(params, inputs, targets, perturb_enc, perturb_dec, out_pos):
      perturbations = {'encoder': {'embedded': perturb_enc}, 'decoder': {'embedded': perturb_dec}}
      logits = model.apply({'params': params, 'perturbations': perturbations}, inputs, targets)
      return jnp.sum(logits[:, out_pos] * jnp.linspace(0.5, 1.5, logits.shape[-1]))
    _JACOBIANS[id(model)] = (model, jax.jit(jax.grad(out_at, argnums=(3, 4))))
  gradient = _JACOBIANS[id(model)][1]
  zeros = lambda ids: jnp.zeros(ids.shape + (model.config.model_dim,))
  grads = gradient(params, inputs, targets, zeros(inputs), zeros(targets), out_pos)
  grad = grads[0] if side == 'encoder' else grads[1]
  return np.abs(np.asarray(grad)).sum(-1)               # [batch, length]


@pytest.mark.parametrize('positional', ['sinusoidal', 'rotary'])
def test_decoder_position_i_has_zero_gradient_from_later_targets(positional):
  _, model, params, inputs, targets = setup_model(positional=positional)
  targets = tokens(1, (2, 8), [8, 8])
  for i in range(8):
    grad = embedding_jacobian(model, params, inputs, targets, 'decoder', i)
    # Decoder input j holds target token j-1: output i may only see inputs 0..i (BOS, t_0..t_{i-1}).
    assert np.all(grad[:, i + 1:] == 0.0), f'position {i} sees the future'
    assert np.all(grad[:, :i + 1] > 0.0), f'position {i} is cut off from its past'


def test_changing_target_i_does_not_change_output_i():
  _, model, params, inputs, targets = setup_model()
  logits = model.apply({'params': params}, inputs, targets)
  for i in range(7):
    changed = targets.at[0, i].set(int(targets[0, i]) % 37 + 3)
    other = model.apply({'params': params}, inputs, changed)
    np.testing.assert_array_equal(logits[0, :i + 1], other[0, :i + 1])
    assert not np.allclose(logits[0, i + 1:], other[0, i + 1:])


def test_padding_gets_zero_gradient_and_extra_padding_changes_nothing():
  _, model, params, inputs, targets = setup_model()
  for side in ('encoder', 'decoder'):
    grad = embedding_jacobian(model, params, inputs, targets, side, out_pos=2)
    pad = np.asarray((inputs if side == 'encoder' else targets) == 0)
    if side == 'decoder':       # decoder input j+1 carries target j; input 0 is BOS
      pad = np.pad(pad, ((0, 0), (1, 0)))[:, :-1]
    assert np.all(grad[pad] == 0.0) and pad.any()
  logits = model.apply({'params': params}, inputs, targets)
  longer = model.apply({'params': params}, jnp.pad(inputs, ((0, 0), (0, 7))),
                       jnp.pad(targets, ((0, 0), (0, 4))))
  real = np.asarray(targets != 0)
  np.testing.assert_allclose(np.asarray(longer)[:, :8][real], np.asarray(logits)[real], atol=1e-5)


@pytest.mark.parametrize('positional', POSITIONAL_KINDS)
@pytest.mark.parametrize('norm_order', ['post', 'pre'])
def test_cached_decoding_equals_teacher_forced_pass(positional, norm_order):
  config, model, params, inputs, targets = setup_model(positional=positional, norm_order=norm_order)
  full = model.apply({'params': params}, inputs, targets)
  step_model = Transformer(config, decoding=True)
  encoded = model.apply({'params': params}, inputs, method='encode')
  _, state = step_model.apply({'params': params}, encoded, inputs,
                              jnp.zeros((2, config.max_len), jnp.int32), method='decode',
                              mutable=['cache'])
  previous = jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]
  steps = []
  for t in range(targets.shape[1]):
    logits, state = step_model.apply({'params': params, **state}, encoded, inputs,
                                     previous[:, t:t + 1], method='decode', mutable=['cache'])
    steps.append(logits[:, 0])
  real = np.asarray(targets != 0)
  np.testing.assert_allclose(np.asarray(jnp.stack(steps, 1))[real], np.asarray(full)[real], atol=1e-5)


def test_packed_row_equals_separate_examples():
  _, model, params, _, _ = setup_model(positional='learned')
  a_in, a_tg = tokens(2, (1, 4), [4]), tokens(3, (1, 3), [3])
  b_in, b_tg = tokens(4, (1, 3), [3]), tokens(5, (1, 4), [4])
  packed = dict(
      inputs=jnp.concatenate([a_in, b_in, jnp.zeros((1, 2), jnp.int32)], 1),
      targets=jnp.concatenate([a_tg, b_tg, jnp.zeros((1, 2), jnp.int32)], 1),
      inputs_position=jnp.array([[0, 1, 2, 3, 0, 1, 2, 0, 0]]),
      targets_position=jnp.array([[0, 1, 2, 0, 1, 2, 3, 0, 0]]),
      inputs_segmentation=jnp.array([[1, 1, 1, 1, 2, 2, 2, 0, 0]]),
      targets_segmentation=jnp.array([[1, 1, 1, 2, 2, 2, 2, 0, 0]]))
  logits = model.apply({'params': params}, **packed)
  alone_a = model.apply({'params': params}, a_in, a_tg)
  alone_b = model.apply({'params': params}, b_in, b_tg)
  np.testing.assert_allclose(logits[0, :3], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(logits[0, 3:7], alone_b[0], atol=1e-5)


def test_all_padding_example_is_finite_forward_and_backward():
  _, model, params, inputs, targets = setup_model()
  inputs = inputs.at[1].set(0)
  targets = targets.at[1].set(0)
  def loss(p):
    return jnp.mean(model.apply({'params': p}, inputs, targets) ** 2)
  value, grads = jax.jit(jax.value_and_grad(loss))(params)
  assert np.isfinite(value)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_dropout_is_active_only_in_training():
  _, model, params, inputs, targets = setup_model(dropout_rate=0.3)
  a = model.apply({'params': params}, inputs, targets)
  b = model.apply({'params': params}, inputs, targets, deterministic=False,
                  rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(a, b)


@pytest.mark.parametrize('name', sorted(NAMED_SETTINGS))
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_named_settings_shapes_through_eval_shape(name, dtype):
  config = TransformerConfig.named(name, vocab_size=1000, dtype=dtype)
  model = Transformer(config)
  ids = jax.ShapeDtypeStruct((2, 7), jnp.int32)
  variables = jax.eval_shape(lambda i: model.init(jax.random.key(0), i, i), ids)
  logits = jax.eval_shape(lambda v, i: model.apply(v, i, i), variables, ids)
  assert logits.shape == (2, 7, 1000) and logits.dtype == jnp.float32
  for leaf in jax.tree_util.tree_leaves(variables['params']):
    assert leaf.dtype == jnp.float32          # parameters stay float32 for bf16 compute
  layer = variables['params']['encoder']['layer_0']['self_attention']['query']['kernel']
  assert layer.shape == (config.model_dim, config.num_heads, config.model_dim // config.num_heads)


def test_bfloat16_computes_in_bfloat16():
  config, model, params, inputs, targets = setup_model(dtype='bfloat16')
  _, state = model.apply({'params': params}, inputs, targets, capture_intermediates=True,
                         mutable=['intermediates'])
  ffn_out = state['intermediates']['encoder']['layer_0']['feed_forward']['__call__'][0]
  assert ffn_out.dtype == jnp.bfloat16


def test_paper_parameter_counts():
  base = summary.count_params(summary.transformer_param_shapes(
      TransformerConfig.named('base', vocab_size=37000)))
  big = summary.count_params(summary.transformer_param_shapes(
      TransformerConfig.named('big', vocab_size=37000)))
  assert 63e6 <= base <= 65.5e6, base      # paper, Table 3: 65 M
  assert 210e6 <= big <= 215e6, big        # paper, Table 3: 213 M


def test_separate_vocabularies_and_untied_output():
  config = TransformerConfig(**{**SMALL, 'share_embeddings': False, 'target_vocab_size': 30,
                                'tie_output': False})
  shapes = summary.transformer_param_shapes(config)
  assert shapes['source_embedding']['embedding'].shape == (40, 16)
  assert shapes['target_embedding']['embedding'].shape == (30, 16)
  assert shapes['decoder']['logits']['kernel'].shape == (16, 30)
  with pytest.raises(ValueError, match='share_embeddings'):
    TransformerConfig(**{**SMALL, 'target_vocab_size': 30})


def test_table3_row_b_sets_key_and_value_sizes_apart():
  config = TransformerConfig(**{**SMALL, 'head_dim': 4, 'value_dim': 12})
  attn = summary.transformer_param_shapes(config)['decoder']['layer_0']['cross_attention']
  assert attn['key']['kernel'].shape == (16, 2, 4)
  assert attn['value']['kernel'].shape == (16, 2, 12)
  assert attn['out']['kernel'].shape == (2, 12, 16)


@pytest.mark.parametrize('positional', POSITIONAL_KINDS)
def test_longer_than_max_len_is_refused_by_a_table_and_finite_without_one(positional):
  """Decided behaviour: the table kinds raise a clear error at trace time (jnp.take past the
  table would give NaN logits for every position); rotary and none have no table and stay
  finite at any length."""
  _, model, params, _, _ = setup_model(positional=positional, max_len=16, num_layers=1)
  apply = jax.jit(lambda p, x, y: model.apply({'params': p}, x, y))
  fits, longer = tokens(2, (2, 16), [16, 7]), tokens(3, (2, 17), [17, 9])
  if positional not in TABLE_POSITIONAL_KINDS:
    assert np.isfinite(np.asarray(apply(params, longer, longer))).all()
    return
  for inputs, targets in ((longer, fits), (fits, longer)):       # either side alone
    with pytest.raises(ValueError, match='sequence length 17 exceeds max_len=16'):
      apply(params, inputs, targets)


def test_a_decoding_cache_longer_than_the_table_is_refused():
  config, model, params, inputs, _ = setup_model(max_len=16, num_layers=1)
  encoded = model.apply({'params': params}, inputs, method='encode')
  step_model = Transformer(config, decoding=True)
  make_cache = lambda length: step_model.apply(
      {'params': params}, encoded, inputs, jnp.zeros((2, length), jnp.int32), method='decode',
      mutable=['cache'])
  make_cache(16)
  with pytest.raises(ValueError, match='sequence length 17 exceeds max_len=16'):
    make_cache(17)
