"""RNN encoder-decoder: shapes, padding, the fixed context vector vs attention, cached
decoding through predict_step, and learning to reverse sequences."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.decoding import beam_checks
from transformer_jax.decoding import predict
from transformer_jax.models.rnn_seq2seq import RNNSeq2Seq
from transformer_jax.nn.config import RNNConfig
from transformer_jax.train import steps

EOS = 1
VARIANTS = list(itertools.product(('gru', 'lstm'), (True, False)))


def make(cell='gru', attention=True, **changes):
  fields = dict(vocab_size=24, cell=cell, attention=attention, embed_dim=8, hidden_dim=12,
                attention_dim=6, dropout_rate=0.0, max_len=32)
  fields.update(changes)
  return RNNSeq2Seq(RNNConfig(**fields))


def batch(seed=0, rows=4, source_len=7, target_len=6):
  rng = np.random.default_rng(seed)
  inputs = rng.integers(3, 24, (rows, source_len)).astype(np.int32)
  targets = rng.integers(3, 24, (rows, target_len)).astype(np.int32)
  for r in range(rows):       # sentences of different lengths, EOS then padding
    n, m = 2 + r % (source_len - 2), 2 + (r * 2) % (target_len - 2)
    inputs[r, n], inputs[r, n + 1:] = EOS, 0
    targets[r, m], targets[r, m + 1:] = EOS, 0
  return jnp.asarray(inputs), jnp.asarray(targets)


def setup(cell='gru', attention=True):
  """(model, inputs, targets, params) of a small model on `batch()`."""
  model = make(cell, attention)
  inputs, targets = batch()
  return model, inputs, targets, model.init(jax.random.key(0), inputs, targets)['params']


@pytest.mark.parametrize('cell,attention', VARIANTS)
def test_shapes_by_eval_shape(cell, attention):
  model = make(cell, attention, hidden_dim=512, embed_dim=256, attention_dim=256, vocab_size=10000)
  inputs = jax.ShapeDtypeStruct((16, 40), jnp.int32)
  targets = jax.ShapeDtypeStruct((16, 30), jnp.int32)
  variables = jax.eval_shape(model.init, jax.random.key(0), inputs, targets)
  logits = jax.eval_shape(model.apply, variables, inputs, targets)
  assert logits.shape == (16, 30, 10000) and logits.dtype == jnp.float32
  params = variables['params']
  assert ('keys' in params) == attention
  # The bidirectional encoder doubles the state the decoder reads.
  assert params['bridge']['kernel'].shape == (1024, 512)


# GRU's twins are slow; its padding stays covered by test_final_state_reads_each_sentence_to_its_own_end.
@pytest.mark.parametrize('cell,attention', [pytest.param(*v, marks=pytest.mark.slow) if v[0] == 'gru'
                                            else v for v in VARIANTS])
def test_extra_padding_changes_nothing(cell, attention):
  model, inputs, targets, params = setup(cell, attention)
  logits = model.apply({'params': params}, inputs, targets)
  padded = model.apply({'params': params}, jnp.pad(inputs, ((0, 0), (0, 5))),
                       jnp.pad(targets, ((0, 0), (0, 3))))
  np.testing.assert_allclose(padded[:, :targets.shape[1]], logits, atol=1e-5)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_final_state_reads_each_sentence_to_its_own_end(cell):
  """The context of a padded row equals that of the same sentence alone, unpadded."""
  model, inputs, targets, params = setup(cell, False)
  encoded = model.apply({'params': params}, inputs, method='encode')
  for row in range(inputs.shape[0]):
    n = int(jnp.sum(inputs[row] != 0))
    alone = model.apply({'params': params}, inputs[row:row + 1, :n], method='encode')
    np.testing.assert_allclose(encoded['final'][row], alone['final'][0], atol=1e-5)
    np.testing.assert_allclose(encoded['states'][row, :n], alone['states'][0], atol=1e-5)
    assert np.all(np.asarray(encoded['states'][row, n:]) == 0)


def test_backward_direction_reads_from_the_sentence_end():
  """The backward half of the first state depends on the last real word, not on padding."""
  model, inputs, targets, params = setup('gru', False)
  hidden = model.config.hidden_dim

  def first_backward_state(x):
    return model.apply({'params': params}, x, method='encode')['states'][0, 0, hidden:]

  n = int(jnp.sum(inputs[0] != 0))
  changed_last = inputs.at[0, n - 2].set(5 if inputs[0, n - 2] != 5 else 6)
  assert not np.allclose(first_backward_state(inputs), first_backward_state(changed_last))


@pytest.mark.parametrize('attention', [True, False])
def test_decoder_reads_states_only_with_attention(attention):
  """Without attention the source reaches the decoder only through the fixed vector."""
  model, inputs, targets, params = setup('gru', attention)
  encoded = model.apply({'params': params}, inputs, method='encode')
  changed = dict(encoded, states=encoded['states'] + 1.0)
  run = lambda enc: model.apply({'params': params}, enc, inputs, targets, method='decode')
  same = np.allclose(run(encoded), run(changed), atol=1e-6)
  assert same != attention


def test_attention_weights_are_a_distribution_over_real_source_words():
  model, inputs, targets, params = setup('gru', True)
  _, state = model.apply({'params': params}, inputs, targets, mutable=['intermediates'])
  (weights,) = state['intermediates']['attention_weights']
  assert weights.shape == (4, targets.shape[1], inputs.shape[1])
  np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
  pad = np.asarray(inputs == 0)[:, None, :].repeat(targets.shape[1], 1)
  assert np.all(np.asarray(weights)[pad] < 1e-8)


@pytest.mark.parametrize('cell,attention', VARIANTS)
def test_cached_decoding_equals_the_teacher_forced_pass(cell, attention):
  model, inputs, targets, params = setup(cell, attention)
  full = model.apply({'params': params}, inputs, targets)
  encoded = model.apply({'params': params}, inputs, method='encode')
  cache = predict.init_cache(model, params, encoded, inputs, targets.shape[1])
  step = predict.make_tokens_to_logits(model, params, encoded, inputs)
  previous = jnp.zeros((inputs.shape[0], 1), jnp.int32)         # BOS = pad id
  for t in range(targets.shape[1]):
    logits, cache = step(previous, cache)
    expected = full[:, t].at[:, 0].set(logits[:, 0])             # PAD is masked in decoding
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    previous = targets[:, t:t + 1]


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_beam_of_one_equals_greedy_through_predict_step():
  model, inputs, targets, params = setup('lstm', True)
  run = lambda **kw: np.asarray(predict.predict_step(
      params, {'inputs': inputs}, model=model,
      settings=predict.SearchSettings(max_extra_len=4, **kw), eos_id=EOS))
  beam_checks.assert_beam_of_one_is_greedy(run(method='beam', beam_size=1), run(method='greedy'), EOS)
  assert run(method='beam', beam_size=3).shape == (4, inputs.shape[1] + 4)


def test_packed_batches_are_refused():
  model, inputs, targets, params = setup()
  with pytest.raises(ValueError, match='data.pack=False'):
    model.apply({'params': params}, inputs, targets, inputs_segmentation=inputs)


def reverse_batches(seed, rows=32, length=6, vocab=12):
  rng = np.random.default_rng(seed)
  while True:
    words = rng.integers(3, vocab, (rows, length)).astype(np.int32)
    eos = np.full((rows, 1), EOS, np.int32)
    yield {'inputs': np.concatenate([words, eos], 1),
           'targets': np.concatenate([words[:, ::-1], eos], 1)}


@pytest.mark.parametrize('attention', [True, pytest.param(False, marks=pytest.mark.slow)])
def test_learns_to_reverse(attention):
  model = make('gru', attention, vocab_size=12, embed_dim=16, hidden_dim=32, attention_dim=16)
  data = reverse_batches(0)
  state = steps.init_train_state(model, jax.random.key(0), next(data), optax.adam(1e-2))
  step = jax.jit(functools.partial(steps.train_step, model=model, label_smoothing=0.0))
  for _ in range(300):
    state, metrics = step(state, next(data))
  accuracy = metrics['accuracy'] / metrics['weight']
  assert accuracy > 0.9, accuracy
