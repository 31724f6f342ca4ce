"""How peaked a Transformer's attention is: entropy and saturation of its attention rows.

Each attention (encoder self-, decoder self- and cross-attention, per layer and head) gives
every query position a distribution over the keys it may see (Vaswani et al., 2017, §3.2.1).
Over the real (non-pad) query rows of some batches this module measures

  entropy    -sum_k w_k log w_k in nats: 0 for a one-hot row, log n for a row uniform over
             n keys; a row is read over the real keys only (padded keys are dropped and the
             row renormalised, a no-op for the model's own weights, which are 0 there);
  saturated  whether the row's largest weight exceeds SATURATION_THRESHOLD (0.99).

The decoder's first self-attention row sees one key only, so it is one-hot by construction.
The weights come from what MultiHeadAttention `sow`s ('intermediates'/'attention_weights').
"""
import functools
from typing import Dict, Iterable, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.train import components

SATURATION_THRESHOLD = 0.99

# kind -> (the stack it lives in, the attention module's name in each layer,
#          the batch key of its query tokens, of its key tokens)
KINDS = {
    'encoder_self_attention': ('encoder', 'self_attention', 'inputs', 'inputs'),
    'decoder_self_attention': ('decoder', 'self_attention', 'targets', 'targets'),
    'cross_attention': ('decoder', 'cross_attention', 'targets', 'inputs'),
}


# What Transformer.__call__ takes (packed batches keep their segments: their weights are
# already 0 across segments, so only padding needs dropping here).
BATCH_KEYS = ('inputs', 'targets', 'inputs_position', 'targets_position', 'inputs_segmentation',
              'targets_segmentation')


def attention_maps(model, params, batch: Dict[str, jnp.ndarray]) -> Dict[str, List[jnp.ndarray]]:
  """The attention weights of a teacher-forced pass (no dropout).

  Args:
    model: a `Transformer` (encoder-decoder).
    params: its parameters.
    batch: at least `inputs` [batch, src_len] and `targets` [batch, tgt_len] ids.

  Returns:
    {kind of KINDS: one float32 [batch, heads, queries, keys] array per layer, layer 0 first}.
  """
  _, state = model.apply({'params': params}, **batch, deterministic=True,
                         mutable=['intermediates'])
  sown = state['intermediates']
  maps = {}
  for kind, (stack, module, _, _) in KINDS.items():
    layers = sorted((name for name in sown[stack] if name.startswith('layer_')),
                    key=lambda name: int(name[len('layer_'):]))
    maps[kind] = [sown[stack][layer][module]['attention_weights'][0] for layer in layers]
  return maps


def row_statistics(weights: jnp.ndarray, query_valid: jnp.ndarray,
                   key_valid: jnp.ndarray) -> Dict[str, jnp.ndarray]:
  """Per-head sums over the real query rows of one attention map.

  Args:
    weights: [batch, heads, queries, keys] attention weights.
    query_valid: [batch, queries] booleans, True for real query positions.
    key_valid: [batch, keys] booleans, True for real key positions.

  Returns:
    {'entropy': [heads] summed row entropies (nats), 'saturated': [heads] counts of rows
    whose largest weight exceeds SATURATION_THRESHOLD, 'rows': [] number of real rows}.
  """
  w = jnp.where(key_valid[:, None, None, :], weights.astype(jnp.float32), 0.0)
  total = w.sum(-1, keepdims=True)
  w = w / jnp.where(total > 0, total, 1.0)              # a row with no real key stays 0
  entropy = -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0), -1)
  saturated = (w.max(-1) > SATURATION_THRESHOLD).astype(jnp.float32)   # [batch, heads, q]
  rows = query_valid[:, None, :].astype(jnp.float32)
  return {'entropy': jnp.sum(entropy * rows, (0, 2)),
          'saturated': jnp.sum(saturated * rows, (0, 2)),
          'rows': jnp.sum(query_valid.astype(jnp.float32))}


@functools.partial(jax.jit, static_argnames='model')
def _batch_sums(params, batch, *, model):
  """{kind: [per-layer row_statistics]} for one batch (compiled once per model and shape)."""
  pad_id = model.config.pad_id
  sums = {}
  for kind, layers in attention_maps(model, params, batch).items():
    _, _, query_key, key_key = KINDS[kind]
    query_valid, key_valid = batch[query_key] != pad_id, batch[key_key] != pad_id
    sums[kind] = [row_statistics(w, query_valid, key_valid) for w in layers]
  return sums


def attention_statistics(model, params, batches: Iterable[Dict[str, np.ndarray]],
                         max_batches: Optional[int] = None) -> Dict[str, float]:
  """Mean attention entropy and fraction of saturated rows, pooled over real query rows.

  Args:
    model: a `Transformer`.
    params: its parameters (host arrays).
    batches: dicts with `inputs` and `targets` [batch, length] ids (0 = pad), e.g. an
      Evaluator's `batches()`; other keys of BATCH_KEYS are passed on, the rest dropped.
    max_batches: read at most this many batches (None: all).

  Returns:
    Flat floats:
      attention_entropy, attention_saturated: over every real row of every head of every
        attention layer;
      <kind>_entropy, <kind>_saturated: over the rows of one kind of KINDS;
      <kind>_layer<i>_head<j>_entropy, ..._saturated: over the rows of one head.
  """
  totals = None
  for number, batch in enumerate(batches):
    if max_batches is not None and number >= max_batches:
      break
    batch = {key: value for key, value in batch.items() if key in BATCH_KEYS}
    sums = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64),
                                  _batch_sums(params, batch, model=model))
    totals = sums if totals is None else jax.tree_util.tree_map(np.add, totals, sums)
  if totals is None:
    raise UserError('no batches to measure attention on: check eval.split and eval.max_batches')
  return _means(totals)


def _means(totals) -> Dict[str, float]:
  """Flat means from {kind: [per-layer sums]} (see `attention_statistics`)."""
  out = {}
  pooled = {'entropy': 0.0, 'saturated': 0.0, 'rows': 0.0}
  for kind, layers in totals.items():
    kind_sums = {'entropy': 0.0, 'saturated': 0.0, 'rows': 0.0}
    for i, sums in enumerate(layers):
      heads = len(sums['entropy'])
      for name in ('entropy', 'saturated'):
        for j in range(heads):
          out[f'{kind}_layer{i}_head{j}_{name}'] = float(sums[name][j] / max(sums['rows'], 1))
        kind_sums[name] += float(np.sum(sums[name]))
      kind_sums['rows'] += float(sums['rows']) * heads
    for name in ('entropy', 'saturated'):
      out[f'{kind}_{name}'] = kind_sums[name] / max(kind_sums['rows'], 1)
      pooled[name] += kind_sums[name]
    pooled['rows'] += kind_sums['rows']
  for name in ('entropy', 'saturated'):
    out[f'attention_{name}'] = pooled[name] / max(pooled['rows'], 1)
  return out


def requested(config) -> bool:
  """Whether `eval.attention_stats` asks for the statistics; a UserError where the model
  family has no encoder-decoder attention to measure (checked before any work)."""
  if not config.eval.get('attention_stats', False):
    return False
  family = components.family_of(config)
  if family.name != 'transformer':
    raise UserError(f'eval.attention_stats measures the encoder-decoder Transformer, not '
                    f'model.family={family.name!r}: drop --experiment.eval.attention_stats')
  return True


def eval_metrics(config, parts, params, batches) -> Dict[str, float]:
  """For `--mode=eval`: the statistics of `params` and, prefixed `init_`, of the initial
  params of the run's seed (what training changed), or {} when not `requested`."""
  if not requested(config):
    return {}
  initial = components.init_state(parts, config.train.seed).params
  batches = list(batches)
  out = attention_statistics(parts.model, params, batches)
  out.update({f'init_{key}': value
              for key, value in attention_statistics(parts.model, initial, batches).items()})
  logging.info('attention entropy %.3f nats (at init %.3f), saturated rows %.3f (at init %.3f)',
               out['attention_entropy'], out['init_attention_entropy'],
               out['attention_saturated'], out['init_attention_saturated'])
  return out
