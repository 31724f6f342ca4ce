"""attention_stats: entropy and saturation of attention rows, against numpy row by row."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.analysis import attention_stats
from transformer_jax.base.errors import UserError
from transformer_jax.experiments import copy_task
from transformer_jax.experiments import rnn_seq2seq
from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig

THIRD = [1 / 3, 1 / 3, 1 / 3, 0.0]
GARBAGE = [0.25, 0.25, 0.25, 0.25]     # a padded query row: must not count


class HandMadeModel:
  """Stands in for a Transformer: sows fixed weights for inputs [5 6 7 pad], targets [8 9 pad]."""
  config = types.SimpleNamespace(pad_id=0)

  def apply(self, variables, inputs, targets, deterministic, mutable):
    del variables, inputs, targets, deterministic, mutable
    sow = lambda rows: {'attention_weights': (jnp.asarray([rows], jnp.float32),)}
    encoder = sow([[[1, 0, 0, 0], THIRD, [0.5, 0.5, 0, 0], GARBAGE],       # head 0
                   [[0.5, 0, 0, 0.5], THIRD, THIRD, GARBAGE]])      # head 1: weight on a pad key
    decoder_self = sow([[[1, 0, 0], [0.5, 0.5, 0], [1 / 3] * 3]])
    cross = sow([[THIRD, [0.995, 0.005, 0, 0], GARBAGE]])
    return None, {'intermediates': {
        'encoder': {'layer_0': {'self_attention': encoder}},
        'decoder': {'layer_0': {'self_attention': decoder_self, 'cross_attention': cross}}}}


def test_hand_made_rows_one_hot_uniform_and_padding():
  batch = {'inputs': np.asarray([[5, 6, 7, 0]]), 'targets': np.asarray([[8, 9, 0]])}
  stats = attention_stats.attention_statistics(HandMadeModel(), {}, [batch, batch])
  log2, log3 = math.log(2), math.log(3)
  near_one_hot = -(0.995 * math.log(0.995) + 0.005 * math.log(0.005))
  # Real rows only; the pad key's weight in head 1, row 0 is dropped: one-hot over real keys.
  entropies = {'encoder_self_attention': [[0, log3, log2], [0, log3, log3]],
               'decoder_self_attention': [[0, log2]],
               'cross_attention': [[log3, near_one_hot]]}
  saturated = {'encoder_self_attention': [[1, 0, 0], [1, 0, 0]],
               'decoder_self_attention': [[1, 0]],
               'cross_attention': [[0, 1]]}
  for kind, heads in entropies.items():
    for j, rows in enumerate(heads):
      assert stats[f'{kind}_layer0_head{j}_entropy'] == pytest.approx(np.mean(rows), abs=1e-6)
      assert stats[f'{kind}_layer0_head{j}_saturated'] == pytest.approx(
          np.mean(saturated[kind][j]))
    assert stats[f'{kind}_entropy'] == pytest.approx(np.mean(heads), abs=1e-6)
  every_row = [e for heads in entropies.values() for rows in heads for e in rows]
  assert len(every_row) == 10
  assert stats['attention_entropy'] == pytest.approx(np.mean(every_row), abs=1e-6)
  assert stats['attention_saturated'] == pytest.approx(4 / 10)
  assert stats['decoder_self_attention_layer0_head0_entropy'] == pytest.approx(log2 / 2)


def numpy_statistics(model, params, batches):
  """The same numbers, independently: weights straight from the sown tree, a loop per row."""
  rows = {}                                  # (kind, layer, head) -> [(entropy, saturated)]
  where = {'encoder_self_attention': ('encoder', 'self_attention', 'inputs', 'inputs'),
           'decoder_self_attention': ('decoder', 'self_attention', 'targets', 'targets'),
           'cross_attention': ('decoder', 'cross_attention', 'targets', 'inputs')}
  for batch in batches:
    _, state = model.apply({'params': params}, batch['inputs'], batch['targets'],
                           mutable=['intermediates'])
    for kind, (stack, module, query_key, key_key) in where.items():
      for layer, modules in state['intermediates'][stack].items():
        weights = np.asarray(modules[module]['attention_weights'][0], np.float64)
        for b, h, q in np.ndindex(weights.shape[:3]):
          if batch[query_key][b, q] == 0:
            continue
          p = weights[b, h, q][batch[key_key][b] != 0]
          p = p / p.sum()
          entropy = -sum(x * math.log(x) for x in p if x > 0)
          rows.setdefault((kind, int(layer.split('_')[1]), h), []).append(
              (entropy, float(p.max() > 0.99)))
  out = {}
  for (kind, layer, head), values in rows.items():
    out[f'{kind}_layer{layer}_head{head}_entropy'] = np.mean([e for e, _ in values])
    out[f'{kind}_layer{layer}_head{head}_saturated'] = np.mean([s for _, s in values])
  for prefix in list(where) + ['']:
    chosen = [v for key, values in rows.items() if key[0].startswith(prefix) for v in values]
    name = f'{prefix}_' if prefix else 'attention_'
    out[name + 'entropy'] = np.mean([e for e, _ in chosen])
    out[name + 'saturated'] = np.mean([s for _, s in chosen])
  return out


def test_a_tiny_model_matches_numpy():
  # A large logit scale makes some rows saturate; the decoder has one layer fewer.
  config = TransformerConfig(vocab_size=20, model_dim=16, num_heads=2, mlp_dim=32, num_layers=2,
                             num_decoder_layers=1, max_len=16, dropout_rate=0.0,
                             attention_scale=3.0)
  model = Transformer(config)
  rng = np.random.default_rng(0)
  batches = []
  for length, real in ((6, [6, 3, 1]), (9, [9, 4, 0])):
    def ids(lengths):
      x = rng.integers(3, 20, (len(lengths), length))
      return np.where(np.arange(length) < np.asarray(lengths)[:, None], x, 0).astype(np.int32)
    batches.append({'inputs': ids(real), 'targets': ids([max(n - 1, 0) for n in real])})
  params = model.init(jax.random.PRNGKey(0), batches[0]['inputs'], batches[0]['targets'])['params']
  stats = attention_stats.attention_statistics(model, params, batches + batches[:1], max_batches=2)
  expected = numpy_statistics(model, params, batches)
  assert sorted(stats) == sorted(expected)
  assert len(stats) == 2 + 2 * 3 + 2 * 2 * (2 + 1 + 1)
  for key, value in expected.items():
    assert stats[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
  assert 0 < stats['attention_saturated'] < 1
  assert stats['attention_entropy'] > 0


def test_only_the_transformer_family_is_measured():
  config = copy_task.get_config('smoke')
  assert not attention_stats.requested(config)
  config.eval.attention_stats = True
  assert attention_stats.requested(config)
  config = rnn_seq2seq.get_config('smoke')
  config.eval.attention_stats = True
  with pytest.raises(UserError, match="not model.family='rnn_seq2seq'"):
    attention_stats.requested(config)
