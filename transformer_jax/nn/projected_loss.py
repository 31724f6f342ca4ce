"""The tied output projection and the token losses as one operation, a chunk of tokens at a time.

A model that ties its output projection to its embedding table (§3.4) can hand the loss its
final hidden states and the table (`Projection`) instead of logits. `metric_sums` then forms
the `[tokens, vocab]` logits one chunk of `chunk` tokens at a time and, while the chunk is in
cache, everything the loss and its gradient need from it:

  logits z = h tableᵀ; lse, the target's logit, sum_v z_v and the max (for the losses and the
  accuracy); with p = softmax(z) and w the token weights, the two products
  P_h = (w p) table  [tokens, d]   and   P_t = (w p)ᵀ h  [vocab, d].
(A tied projection has no output bias, so there is none here either.)

The gradient of the weighted sums S = sum_t w_t smoothed_t and N = sum_t w_t nll_t with
cotangents g_s, g_n is, per token (c the target's smoothed probability, l every other token's,
e_t the target's one-hot):
  dL/dz_t = w_t [(g_s + g_n) p_t - g_s l - ((c - l) g_s + g_n) e_t],
so dh and dtable are (g_s + g_n) P_h, P_t plus terms built from the table's row sum, the
targets' rows and a scatter of h into the targets' rows: [tokens, d] work, no second pass over
the logits. The backward pass therefore costs no matrix product at all.

Against forming the logits whole (`layers.tied_logits` + `losses.compute_metrics`) this does
the same three [tokens x d x vocab] products, but the elementwise passes read a chunk that is
still in cache: on the 2-core CPU (AMD EPYC with AVX-512, jax 0.10.2, 2026-12-01;
`python -m benchmarks.loss_speed`) loss, metrics and gradients for 4,096 tokens x 10,000 words
took 202-257 ms against 317-387 ms at d 128 (chunk 256; two runs), and at 640 tokens x 37,000
words x d 512 506-534 ms against 533-568 ms, the same values to 1e-6 relative.
"""
import functools

import flax.struct
import jax
import jax.numpy as jnp

from transformer_jax.nn import losses

# Tokens per chunk unless told otherwise (`train.loss_chunk_tokens`): the fastest of 128-1,024
# on the 2-core CPU; 0 forms the logits whole.
DEFAULT_CHUNK = 256

@flax.struct.dataclass
class Projection:
  """What a model returns instead of logits when asked to (`project=False`).

  Attributes:
    hidden: `[..., d]` final hidden states (after the final norm), in the compute dtype.
    table: `[vocab, d]` the tied embedding table; logits are `hidden @ table.T`.
  """
  hidden: jnp.ndarray
  table: jnp.ndarray

  def logits(self) -> jnp.ndarray:
    """The float32 logits the model would have returned."""
    return jnp.einsum('...d,vd->...v', self.hidden, self.table).astype(jnp.float32)


def metric_sums(projection: Projection, targets, label_smoothing: float, weights, chunk: int):
  """`losses.compute_metrics` of `projection.logits()`, without forming them whole.

  Args:
    projection: hidden states `[batch, length, d]` and table `[vocab, d]`.
    targets: int `[batch, length]`.
    label_smoothing: as in `losses.cross_entropy`.
    weights: float `[batch, length]` (0 for padding).
    chunk: about this many tokens per chunk (> 0), taken as whole positions of every row (so
      a batch sharded over devices by rows stays sharded); the length is padded with weight 0
      to a multiple of the positions per chunk.

  Returns:
    dict of float32 sums `loss`, `nll`, `accuracy`, `weight`. `loss` and `nll` are
    differentiable in hidden and table; `accuracy` counts tokens whose target logit is the
    largest (ties count as correct, where an argmax would pick the first; the accuracy's
    gradient is zero).
  """
  losses._smoothing_constants(label_smoothing, projection.table.shape[0])  # pylint: disable=protected-access
  hidden = projection.hidden
  length, d = hidden.shape[-2:]
  hidden = hidden.reshape(-1, length, d)
  rows = hidden.shape[0]
  targets = targets.reshape(rows, length).astype(jnp.int32)
  weights = weights.reshape(rows, length).astype(jnp.float32)
  # Whole positions per chunk, about `chunk` tokens: the number of chunks rounded, so that
  # little of the length is padding (16 x 40 tokens in chunks of 256: two of 320, not three
  # of 256 with 128 padded).
  pieces = max(1, round(rows * length / max(1, int(chunk))))
  positions = -(-length // min(pieces, length))
  extra = -length % positions
  # Position-major, so that each chunk is a contiguous block of whole positions.
  hidden, targets, weights = (jnp.swapaxes(jnp.pad(x, ((0, 0), (0, extra)) + ((0, 0),) * (x.ndim - 2)), 0, 1)
                              for x in (hidden, targets, weights))
  loss, nll, correct = _fused(hidden, projection.table, targets, weights,
                              float(label_smoothing), positions)
  return {'loss': loss, 'nll': nll, 'accuracy': correct, 'weight': jnp.sum(weights)}


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _fused(hidden, table, targets, weights, label_smoothing, positions):
  """hidden [length, rows, d], targets and weights [length, rows] -> (loss, nll, correct)."""
  return _forward(hidden, table, targets, weights, label_smoothing, positions)[0]


def _forward(hidden, table, targets, weights, label_smoothing, positions):
  confidence, low, entropy = losses._smoothing_constants(label_smoothing, table.shape[0])  # pylint: disable=protected-access
  length, rows, d = hidden.shape
  n = length // positions

  def one_chunk(table_products, piece):
    h, t, w = piece                                            # [p, rows, d], [p, rows]
    z = jnp.einsum('prd,vd->prv', h, table, preferred_element_type=jnp.float32)
    top = jnp.max(z, axis=-1)
    exp = jnp.exp(z - top[..., None])
    total = jnp.sum(exp, axis=-1)
    lse = top + jnp.log(total)
    target_logit = jnp.take_along_axis(z, t[..., None], axis=-1)[..., 0]
    smoothed = lse - (confidence - low) * target_logit - low * jnp.sum(z, axis=-1) - entropy
    weighted_probs = (exp * (w / total)[..., None]).astype(table.dtype)
    hidden_products = jnp.einsum('prv,vd->prd', weighted_probs, table,
                                 preferred_element_type=jnp.float32)
    # Accumulated as [d, vocab]: the chunk's probabilities are then the product's right
    # operand as they lie; [vocab, d] made XLA transpose every [tokens, vocab] chunk.
    table_products += jnp.einsum('prd,prv->dv', h, weighted_probs,
                                 preferred_element_type=jnp.float32)
    sums = (jnp.sum(smoothed * w), jnp.sum((lse - target_logit) * w),
            jnp.sum((target_logit >= top).astype(jnp.float32) * w))
    return table_products, (sums, hidden_products)

  pieces = (hidden.reshape(n, positions, rows, d), targets.reshape(n, positions, rows),
            weights.reshape(n, positions, rows))
  table_products, (sums, hidden_products) = jax.lax.scan(
      one_chunk, jnp.zeros(table.shape[::-1], jnp.float32), pieces)
  outputs = tuple(jnp.sum(s) for s in sums)
  return outputs, (hidden, table, targets, weights, hidden_products.reshape(hidden.shape),
                   table_products.T)


def _backward(label_smoothing, positions, residuals, cotangents):
  del positions
  hidden, table, targets, weights, hidden_products, table_products = residuals
  g_smoothed, g_nll, _ = cotangents            # the accuracy is piecewise constant
  confidence, low, _ = losses._smoothing_constants(label_smoothing, table.shape[0])  # pylint: disable=protected-access
  h = hidden.astype(jnp.float32)
  tab = table.astype(jnp.float32)
  everywhere = g_smoothed * low * weights                   # per token, on every word
  at_target = ((confidence - low) * g_smoothed + g_nll) * weights
  grad_hidden = ((g_smoothed + g_nll) * hidden_products
                 - everywhere[..., None] * jnp.sum(tab, 0)
                 - at_target[..., None] * tab[targets])
  grad_table = ((g_smoothed + g_nll) * table_products
                - jnp.einsum('lr,lrd->d', everywhere, h)[None, :]
                - jnp.zeros_like(tab).at[targets].add(at_target[..., None] * h))
  return grad_hidden.astype(hidden.dtype), grad_table.astype(table.dtype), None, None


_fused.defvjp(_forward, _backward)
