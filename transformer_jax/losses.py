"""Token losses and accuracy for training and evaluation (Vaswani et al., 2017, §5.4).

Every function returns a `(sum, weight_sum)` pair instead of a mean: the step adds
the sums over devices (and the host over steps) and divides once, so the mean is
over real tokens of the whole global batch, however the batch was split.
Real tokens are `targets > 0` (pad id 0). All results are float32, whatever the
dtype of the logits (bfloat16 compute stays a model concern).
"""
import math

import jax
import jax.numpy as jnp

from transformer_jax.errors import UserError

PAD_ID = 0


def target_weights(targets):
  """1.0 for real tokens, 0.0 for padding.

  Args:
    targets: int token ids, e.g. `[batch, length]`.

  Returns:
    float32 array of the same shape.
  """
  return (targets != PAD_ID).astype(jnp.float32)


def _weights_or_default(targets, weights):
  if weights is None:
    return target_weights(targets)
  return weights.astype(jnp.float32)


def _smoothing_constants(label_smoothing, vocab_size):
  """Target probabilities and the loss of a perfect smoothed prediction.

  The paper's smoothing (as in flax/examples/wmt) gives the true token
  `1 - label_smoothing` and spreads `label_smoothing` evenly over the other
  `vocab_size - 1` entries. The cross entropy against that soft target is never
  below the soft target's entropy; we subtract that entropy so a prediction equal to
  the soft target scores 0 (the gradient is unchanged; the logged number just reads
  as a KL divergence).
  """
  if not 0.0 <= label_smoothing < 1.0:
    raise UserError(f'label_smoothing={label_smoothing} is outside [0, 1): '
                    'set it to e.g. 0.1 (the paper) or 0.0 (none)')
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab_size - 1) if vocab_size > 1 else 0.0
  entropy = -confidence * math.log(confidence)
  if low > 0:
    entropy -= (vocab_size - 1) * low * math.log(low)
  return confidence, low, entropy


def _token_losses(logits, targets, label_smoothing):
  """Per-token smoothed loss and plain negative log-likelihood.

  Args:
    logits: `[..., vocab]`, any float dtype.
    targets: int `[...]`.
    label_smoothing: float in [0, 1).

  Returns:
    (smoothed, nll), float32 arrays shaped like `targets`.
  """
  vocab_size = logits.shape[-1]
  confidence, low, entropy = _smoothing_constants(label_smoothing, vocab_size)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  target_log_prob = jnp.take_along_axis(
      log_probs, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  nll = -target_log_prob
  # -sum_v soft_v * log p_v with soft = low everywhere except `confidence` at the
  # target, written without building the [..., vocab] one-hot array.
  smoothed = (-(confidence - low) * target_log_prob
              - low * jnp.sum(log_probs, axis=-1) - entropy)
  return smoothed, nll


def cross_entropy(logits, targets, label_smoothing=0.0, weights=None):
  """Label-smoothed cross entropy summed over real tokens.

  Args:
    logits: `[batch, length, vocab]` (any leading shape), upcast to float32.
    targets: int `[batch, length]`.
    label_smoothing: mass moved from the true token to the other `vocab - 1`
      tokens (0.1 in the paper). The constant entropy of the soft target is
      subtracted, so a perfect smoothed prediction has loss 0; with 0.0 this is the
      plain negative log-likelihood.
    weights: optional float `[batch, length]`; defaults to `target_weights(targets)`.

  Returns:
    (loss_sum, weight_sum): float32 scalars.
  """
  weights = _weights_or_default(targets, weights)
  smoothed, _ = _token_losses(logits, targets, label_smoothing)
  return jnp.sum(smoothed * weights), jnp.sum(weights)


def nll(logits, targets, weights=None):
  """Unsmoothed negative log-likelihood summed over real tokens.

  `exp(nll_sum / weight_sum)` is the exact per-token perplexity.

  Args:
    logits: `[batch, length, vocab]`.
    targets: int `[batch, length]`.
    weights: optional float `[batch, length]`; defaults to `target_weights(targets)`.

  Returns:
    (nll_sum, weight_sum): float32 scalars.
  """
  weights = _weights_or_default(targets, weights)
  _, token_nll = _token_losses(logits, targets, 0.0)
  return jnp.sum(token_nll * weights), jnp.sum(weights)


def accuracy(logits, targets, weights=None):
  """Number of real tokens whose arg-max prediction is the target.

  Args:
    logits: `[batch, length, vocab]`.
    targets: int `[batch, length]`.
    weights: optional float `[batch, length]`; defaults to `target_weights(targets)`.

  Returns:
    (correct_sum, weight_sum): float32 scalars.
  """
  weights = _weights_or_default(targets, weights)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return jnp.sum(correct * weights), jnp.sum(weights)


def compute_metrics(logits, targets, label_smoothing=0.0, weights=None):
  """All token metrics from one log-softmax, as sums.

  Args:
    logits: `[batch, length, vocab]`.
    targets: int `[batch, length]`.
    label_smoothing: as in `cross_entropy`.
    weights: optional float `[batch, length]`; defaults to `target_weights(targets)`.

  Returns:
    dict of float32 scalars: `loss` (smoothed), `nll`, `accuracy` (correct count)
    and `weight` (number of real tokens). Divide by `weight` for means.
  """
  weights = _weights_or_default(targets, weights)
  smoothed, token_nll = _token_losses(logits, targets, label_smoothing)
  correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return {
      'loss': jnp.sum(smoothed * weights),
      'nll': jnp.sum(token_nll * weights),
      'accuracy': jnp.sum(correct * weights),
      'weight': jnp.sum(weights),
  }
