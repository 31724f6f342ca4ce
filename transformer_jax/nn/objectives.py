"""What each model family's loss compares its output with, as metric sums.

A model class names its objective in a class attribute `OBJECTIVE` (TOKENS when it has
none, so any encoder-decoder or LM module trains as is). The one place that knows batch
layouts:
  TOKENS             logits [batch, length, vocab] vs `targets` [batch, length]; pad 0 has weight 0.
  CLASSES            logits [batch, classes] vs `label` [batch]; padding rows (an `inputs`
                     row of only pad ids) have weight 0.
  NEGATIVE_SAMPLING  scores [batch, 1 + K]: column 0 the true (center, context) pair, the
                     rest K noise words; loss -log sigmoid(s_0) - sum_k log sigmoid(-s_k)
                     (Mikolov et al., 2013); rows whose `context` is all pad have weight 0.
Every function returns float32 sums (`loss`, `nll`, `accuracy`, `weight`); the step and the
host divide by `weight`.

A model whose class sets `defers_projection` (the Transformer and the decoder-only LM) can
return its final hidden states and tied table instead of logits (`model_outputs(...,
loss_chunk=C)`); the TOKENS sums are then formed C tokens at a time (`projected_loss`).
"""
import jax
import jax.numpy as jnp

from transformer_jax.nn import losses
from transformer_jax.nn import projected_loss

TOKENS = 'tokens'
CLASSES = 'classes'
NEGATIVE_SAMPLING = 'negative_sampling'


def objective_of(model) -> str:
  """The model's `OBJECTIVE` class attribute; TOKENS by default."""
  return getattr(type(model), 'OBJECTIVE', TOKENS)


def weights(objective: str, batch) -> jnp.ndarray:
  """Float32 weight of each unit the loss averages over (token, sentence or pair)."""
  if objective == TOKENS:
    return losses.target_weights(batch['targets'])
  if objective == CLASSES:
    return jnp.any(batch['inputs'] != losses.PAD_ID, axis=-1).astype(jnp.float32)
  if objective == NEGATIVE_SAMPLING:
    return jnp.any(batch['context'] != losses.PAD_ID, axis=-1).astype(jnp.float32)
  raise ValueError(f'unknown objective {objective!r}')


def _negative_sampling_sums(scores, weight):
  scores = scores.astype(jnp.float32)
  # -log sigmoid(x) = softplus(-x): stable for large |x|.
  per_row = jax.nn.softplus(-scores[:, 0]) + jnp.sum(jax.nn.softplus(scores[:, 1:]), axis=-1)
  # Accuracy: the share of the 1 + K binary decisions (true pair vs noise) that are right.
  right = jnp.concatenate([scores[:, :1] > 0, scores[:, 1:] < 0], axis=-1)
  correct = jnp.mean(right.astype(jnp.float32), axis=-1)
  return {'loss': jnp.sum(per_row * weight), 'nll': jnp.sum(per_row * weight),
          'accuracy': jnp.sum(correct * weight), 'weight': jnp.sum(weight)}


def metric_sums(objective: str, outputs, batch, *, label_smoothing: float, weight=None,
                loss_chunk: int = 0):
  """Sums of `loss` (smoothed for tokens), `nll`, `accuracy`, `weight` for one batch.

  Args:
    objective: TOKENS, CLASSES or NEGATIVE_SAMPLING.
    outputs: what the model returned on `batch` (logits, scores or a `Projection`).
    batch: the batch dict.
    label_smoothing: epsilon of the smoothed cross-entropy (TOKENS and CLASSES).
    weight: precomputed `weights(objective, batch)`, or None.
    loss_chunk: tokens per chunk when `outputs` is a `Projection`.
  """
  weight = weights(objective, batch) if weight is None else weight
  if isinstance(outputs, projected_loss.Projection):
    return projected_loss.metric_sums(outputs, batch['targets'], label_smoothing, weight,
                                      loss_chunk)
  if objective == TOKENS:
    return losses.compute_metrics(outputs, batch['targets'], label_smoothing, weight)
  if objective == CLASSES:
    return losses.compute_metrics(outputs, batch['label'], label_smoothing, weight)
  if objective == NEGATIVE_SAMPLING:
    return _negative_sampling_sums(outputs, weight)
  raise ValueError(f'unknown objective {objective!r}')


def model_outputs(model, params, batch, *, deterministic, rng=None, loss_chunk: int = 0):
  """`model.apply` on every key of `batch`: logits or scores, or a `Projection` when
  `loss_chunk` > 0 and the model `defers_projection`."""
  rngs = None if rng is None else {'dropout': rng}
  deferred = {'project': False} if loss_chunk > 0 and getattr(model, 'defers_projection', False) else {}
  return model.apply({'params': params}, **batch, deterministic=deterministic, rngs=rngs,
                     **deferred)
