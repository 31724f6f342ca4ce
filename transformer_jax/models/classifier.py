"""An encoder-only Transformer classifier: the paper's encoder (Vaswani et al., 2017,
§3.1) pooled to one vector per sentence, then dropout and a linear layer to the classes.

Pooling (`config.pooling`):
  'mean' - the mean of the encoder outputs over the real (non-pad) tokens.
  'cls'  - a learned class-token vector is prepended to every sentence (as BERT's [CLS],
           Devlin et al., 2019) and its encoder output is the sentence vector. It is one
           extra row of the embedding table (id `vocab_size`), so it is embedded, scaled
           and given position 0 like a token; the sentence moves to positions 1, 2, ....
Padding (id 0) is masked out of attention and of the pooling, so logits do not depend
on how much padding a batch has.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from transformer_jax.models import transformer
from transformer_jax.nn import attention
from transformer_jax.nn.config import ClassifierConfig
from transformer_jax.nn import dropout
from transformer_jax.nn import objectives
from transformer_jax.nn import positional


def prepend_class_token(inputs, positions, segmentation, class_id):
  """Puts `class_id` before every row; positions shift by one, the class token joins the
  first segment.

  Args:
    inputs: [batch, length] ids.
    positions: [batch, length] positions.
    segmentation: [batch, length] segment ids, or None.
    class_id: id of the class token.

  Returns:
    (inputs, positions, segmentation), each [batch, length + 1] (segmentation may be None).
  """
  column = lambda value: jnp.full((inputs.shape[0], 1), value, inputs.dtype)
  inputs = jnp.concatenate([column(class_id), inputs], axis=1)
  positions = jnp.concatenate([column(0), positions + 1], axis=1)
  if segmentation is not None:
    segmentation = jnp.concatenate([segmentation[:, :1], segmentation], axis=1)
  return inputs, positions, segmentation


def masked_mean(x, mask):
  """Mean of x [batch, length, dim] over positions where mask [batch, length] is True."""
  mask = mask.astype(x.dtype)[..., None]
  count = jnp.maximum(jnp.sum(mask, axis=1), 1.0)   # an all-pad row gives 0, not NaN
  return jnp.sum(x * mask, axis=1) / count


class EncoderClassifier(nn.Module):
  """Token ids -> class logits.

  Call signature matches a classification batch: `model.apply(variables, **batch,
  deterministic=...)` with `inputs` [batch, length] and `label` [batch] (unused here:
  the objective compares the logits with it).
  """
  config: ClassifierConfig
  OBJECTIVE = objectives.CLASSES

  def setup(self):
    cfg = self.config
    # One extra row holds the learned class token when pooling is 'cls'.
    rows = cfg.vocab_size + (cfg.pooling == 'cls')
    self.encoder = transformer.Encoder(
        cfg, embedder=transformer.make_embedder(cfg, rows, 'embedding'))
    self.dropout = dropout.Dropout(cfg.dropout_rate)
    self.head = nn.Dense(cfg.num_classes, dtype=jnp.dtype(cfg.dtype),
                         param_dtype=jnp.dtype(cfg.param_dtype), name='logits')

  def encode(self, inputs, inputs_position=None, inputs_segmentation=None, deterministic=True):
    """Encoder outputs [batch, length', model_dim] and the ids they belong to [batch, length']
    (length' = length + 1 with the class token first under 'cls' pooling)."""
    cfg = self.config
    if inputs_position is None:
      inputs_position = positional.default_positions(inputs)
    if cfg.pooling == 'cls':
      inputs, inputs_position, inputs_segmentation = prepend_class_token(
          inputs, inputs_position, inputs_segmentation, cfg.vocab_size)
    mask = attention.combine_masks(
        attention.make_padding_mask(inputs, inputs, cfg.pad_id),
        None if inputs_segmentation is None else
        attention.make_segment_mask(inputs_segmentation, inputs_segmentation))
    return self.encoder(inputs, mask, inputs_position, deterministic), inputs

  def __call__(self, inputs: jnp.ndarray, label: Optional[jnp.ndarray] = None,
               inputs_position: Optional[jnp.ndarray] = None,
               inputs_segmentation: Optional[jnp.ndarray] = None,
               deterministic: bool = True) -> jnp.ndarray:
    """inputs [batch, length] ids -> float32 logits [batch, num_classes]."""
    del label
    encoded, ids = self.encode(inputs, inputs_position, inputs_segmentation, deterministic)
    self.sow('intermediates', 'encoded', encoded)
    if self.config.pooling == 'cls':
      pooled = encoded[:, 0]
    else:
      pooled = masked_mean(encoded, ids != self.config.pad_id)
    self.sow('intermediates', 'pooled', pooled)
    pooled = self.dropout(pooled, deterministic=deterministic)
    return self.head(pooled).astype(jnp.float32)
