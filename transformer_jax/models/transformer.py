"""The encoder-decoder Transformer (Vaswani et al., 2017, §3 and Figure 1).

`Transformer.encode` and `Transformer.decode` build every mask once, from padding
(id 0) and, for packed batches, segment ids; the layers only receive them. With
`decoding=True` the decoder runs one target position per call against a key/value cache
(see `transformer_jax.decoding.decode`).
"""
from typing import ClassVar, Optional

import flax.linen as nn
import jax.numpy as jnp

from transformer_jax.nn import attention
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn import layers
from transformer_jax.nn import positional
from transformer_jax.nn import projected_loss


def shift_right(targets: jnp.ndarray, segmentation: Optional[jnp.ndarray] = None,
                bos_id: int = 0) -> jnp.ndarray:
  """Decoder inputs: targets moved one step right, BOS first (and at each packed segment start)."""
  shifted = jnp.pad(targets, ((0, 0), (1, 0)), constant_values=bos_id)[:, :-1]
  if segmentation is not None:
    prev_segment = jnp.pad(segmentation, ((0, 0), (1, 0)))[:, :-1]
    shifted = jnp.where(segmentation == prev_segment, shifted, bos_id)
  return shifted


def make_embedder(config: TransformerConfig, vocab_size: int, name: str) -> layers.Embedder:
  return layers.Embedder(vocab_size, config.model_dim, scale=config.scale_embeddings,
                         dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype),
                         name=name)


def make_positions(config: TransformerConfig, name: str) -> Optional[nn.Module]:
  return positional.make_positions(config.positional, config.max_len,
                                   param_dtype=jnp.dtype(config.param_dtype), name=name)


class Encoder(nn.Module):
  """Embedding + positions, then N encoder layers (and a final LayerNorm when pre-LN)."""
  config: TransformerConfig
  embedder: layers.Embedder

  @nn.compact
  def __call__(self, inputs: jnp.ndarray, mask: Optional[jnp.ndarray], positions: jnp.ndarray,
               deterministic: bool = True) -> jnp.ndarray:
    """inputs [batch, src_len] ids, mask [batch, 1, src_len, src_len] -> [batch, src_len, model_dim]."""
    cfg = self.config
    x = layers.embed_tokens(self.embedder, make_positions(cfg, 'positions'), inputs, positions,
                            cfg.dropout_rate, deterministic)
    x = self.perturb('embedded', x)   # a zero hook: tests take gradients w.r.t. each position
    for i in range(cfg.num_layers):
      x = layers.EncoderLayer(cfg, name=f'layer_{i}')(x, mask, positions, deterministic)
    if cfg.norm_order == 'pre':
      x = layers.make_norm(cfg, 'final_norm')(x)
    return x


class Decoder(nn.Module):
  """Target embedding + positions, N decoder layers, output projection (tied or not).

  In decode mode it keeps its own position counter in the 'cache' collection. The call that
  creates the cache passes its full length through the position module, so a cache longer
  than a position table is refused there; the searches never step past the cache.
  """
  config: TransformerConfig
  embedder: layers.Embedder
  decode: bool = False

  @nn.compact
  def __call__(self, decoder_inputs: jnp.ndarray, encoded: Optional[jnp.ndarray],
               self_mask: Optional[jnp.ndarray], cross_mask: Optional[jnp.ndarray],
               positions: Optional[jnp.ndarray], deterministic: bool = True,
               project: bool = True):
    """decoder_inputs [batch, tgt_len] ids -> float32 logits [batch, tgt_len, vocab].

    With `project=False` and a tied output, the final hidden states and the table instead
    (`projected_loss.Projection`), for a loss that forms the logits chunk by chunk.
    """
    cfg = self.config
    if self.decode:
      positions = self._step_positions(decoder_inputs, positions)
    elif positions is None:
      positions = positional.default_positions(decoder_inputs)
    y = layers.embed_tokens(self.embedder, make_positions(cfg, 'positions'), decoder_inputs,
                            positions, cfg.dropout_rate, deterministic)
    y = self.perturb('embedded', y)
    for i in range(cfg.decoder_layers):
      y = layers.DecoderLayer(cfg, decode=self.decode, name=f'layer_{i}')(
          y, encoded, self_mask, cross_mask, positions, deterministic)
    if cfg.norm_order == 'pre':
      y = layers.make_norm(cfg, 'final_norm')(y)
    if cfg.tie_output and not project:
      return projected_loss.Projection(y, self.embedder.embedding.astype(self.embedder.dtype))
    if cfg.tie_output:
      logits = self.embedder.attend(y)
    else:
      logits = nn.Dense(cfg.output_vocab_size, dtype=jnp.dtype(cfg.dtype),
                        param_dtype=jnp.dtype(cfg.param_dtype), name='logits')(y)
    return logits.astype(jnp.float32)

  def _step_positions(self, decoder_inputs, positions):
    """In decode steps, the position is the number of tokens decoded so far."""
    initialized = self.has_variable('cache', 'position')
    counter = self.variable('cache', 'position', lambda: jnp.zeros((), jnp.int32))
    if not initialized or positions is not None:
      return positions if positions is not None else positional.default_positions(decoder_inputs)
    step = counter.value
    counter.value = step + 1
    return jnp.full(decoder_inputs.shape, step, jnp.int32)


class Transformer(nn.Module):
  """Encoder-decoder Transformer.

  Call signature matches a batch dict: `model.apply(variables, **batch, deterministic=...)`.
  `decoding=True` turns on the key/value cache (the attribute cannot be called `decode`
  as in the leaf modules, since `decode` is the method the paper's decoder half runs).
  When decoding, `encoded` and `inputs` may have n times fewer rows than the targets
  (`beams_share_source`): decoder rows g*n ... g*n+n-1 then read source row g, so a beam
  search keeps one copy of each source's cross-attention keys/values, not one per beam.
  `project=False` (training and evaluation losses) returns the final hidden states and the
  tied table instead of logits (`projected_loss.Projection`; `defers_projection`).
  """
  config: TransformerConfig
  decoding: bool = False
  beams_share_source: ClassVar[bool] = True
  defers_projection: ClassVar[bool] = True

  def setup(self):
    cfg = self.config
    if cfg.share_embeddings:
      source = target = make_embedder(cfg, cfg.vocab_size, 'shared_embedding')
    else:
      source = make_embedder(cfg, cfg.vocab_size, 'source_embedding')
      target = make_embedder(cfg, cfg.output_vocab_size, 'target_embedding')
    self.encoder = Encoder(cfg, embedder=source)
    self.decoder = Decoder(cfg, embedder=target, decode=self.decoding)

  def encode(self, inputs: jnp.ndarray, inputs_position: Optional[jnp.ndarray] = None,
             inputs_segmentation: Optional[jnp.ndarray] = None,
             deterministic: bool = True) -> jnp.ndarray:
    """inputs [batch, src_len] -> encoded [batch, src_len, model_dim]."""
    pad = self.config.pad_id
    mask = attention.combine_masks(
        attention.make_padding_mask(inputs, inputs, pad),
        None if inputs_segmentation is None else
        attention.make_segment_mask(inputs_segmentation, inputs_segmentation))
    if inputs_position is None:
      inputs_position = positional.default_positions(inputs)
    return self.encoder(inputs, mask, inputs_position, deterministic)

  def decode(self, encoded: jnp.ndarray, inputs: jnp.ndarray, targets: jnp.ndarray,
             targets_position: Optional[jnp.ndarray] = None,
             inputs_segmentation: Optional[jnp.ndarray] = None,
             targets_segmentation: Optional[jnp.ndarray] = None,
             deterministic: bool = True, project: bool = True):
    """Logits [batch, tgt_len, vocab] for `targets` given the encoder output.

    In training/eval (decoding=False) `targets` are the labels: they are shifted right
    here and masked causally. In decode mode `targets` is the previous token
    [batch, 1], and causality comes from the cache.
    """
    pad = self.config.pad_id
    if self.decoding:
      cross_mask = (inputs != pad)[:, None, None, :]   # per source row (beams may share one)
      return self.decoder(targets, encoded, None, cross_mask, targets_position, deterministic)
    decoder_inputs = shift_right(targets, targets_segmentation, bos_id=pad)
    segment_self = segment_cross = None
    if targets_segmentation is not None:
      segment_self = attention.make_segment_mask(targets_segmentation, targets_segmentation)
      segment_cross = attention.make_segment_mask(targets_segmentation, inputs_segmentation)
    self_mask = attention.combine_masks(
        attention.make_padding_mask(targets, targets, pad),
        attention.make_causal_mask(targets.shape[1]), segment_self)
    cross_mask = attention.combine_masks(attention.make_padding_mask(targets, inputs, pad),
                                         segment_cross)
    return self.decoder(decoder_inputs, encoded, self_mask, cross_mask, targets_position,
                        deterministic, project)

  def __call__(self, inputs: jnp.ndarray, targets: jnp.ndarray,
               inputs_position: Optional[jnp.ndarray] = None,
               targets_position: Optional[jnp.ndarray] = None,
               inputs_segmentation: Optional[jnp.ndarray] = None,
               targets_segmentation: Optional[jnp.ndarray] = None,
               deterministic: bool = True, project: bool = True):
    """Teacher-forced logits [batch, tgt_len, vocab] (float32)."""
    encoded = self.encode(inputs, inputs_position, inputs_segmentation, deterministic)
    return self.decode(encoded, inputs, targets, targets_position, inputs_segmentation,
                       targets_segmentation, deterministic, project)
