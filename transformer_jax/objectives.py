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
"""
import jax
import jax.numpy as jnp

from transformer_jax import losses

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


def metric_sums(objective: str, outputs, batch, *, label_smoothing: float, weight=None):
  """Sums of `loss` (smoothed for tokens), `nll`, `accuracy`, `weight` for one batch.

  Args:
    objective: TOKENS, CLASSES or NEGATIVE_SAMPLING.
    outputs: what the model returned on `batch`.
    batch: the batch dict.
    label_smoothing: epsilon of the smoothed cross-entropy (TOKENS and CLASSES).
    weight: precomputed `weights(objective, batch)`, or None.
  """
  weight = weights(objective, batch) if weight is None else weight
  if objective == TOKENS:
    return losses.compute_metrics(outputs, batch['targets'], label_smoothing, weight)
  if objective == CLASSES:
    return losses.compute_metrics(outputs, batch['label'], label_smoothing, weight)
  if objective == NEGATIVE_SAMPLING:
    return _negative_sampling_sums(outputs, weight)
  raise ValueError(f'unknown objective {objective!r}')


def model_outputs(model, params, batch, *, deterministic, rng=None):
  """`model.apply` on every key of `batch` (logits or scores)."""
  rngs = None if rng is None else {'dropout': rng}
  return model.apply({'params': params}, **batch, deterministic=deterministic, rngs=rngs)
