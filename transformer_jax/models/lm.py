"""The decoder-only causal Transformer language model (Liu et al., 2018; Radford et al., 2018).

The Transformer's decoder stack without cross-attention: token embedding (scaled by
sqrt(model_dim) as in the Transformer), any `config.positional` kind, N DecoderLayers
with `encoded=None`, a final LayerNorm when pre-LN, and the output projection (the
transposed embedding when `config.tie_output`). It predicts `targets` from
`shift_right(targets)`: position t sees BOS (the pad id 0) and tokens 0..t-1.

With `decoding=True` each call takes one token per row, [n, 1], against a key/value
cache (the Transformer decoder's cache and position counter); the first call, with an
[n, max_decode_len] placeholder, only creates the cache. transformer_jax.decoding.generate
samples and searches through it.
"""
from typing import ClassVar, Optional

import flax.linen as nn
import jax.numpy as jnp

from transformer_jax.models import transformer
from transformer_jax.nn import attention
from transformer_jax.nn.config import TransformerConfig


class DecoderOnlyLM(nn.Module):
  """Causal LM; `model.apply(variables, **batch, deterministic=...)` -> logits [B, L, V].

  `num_decoder_layers` (or `num_layers` when it is None) sets the depth; the encoder
  fields of TransformerConfig (`share_embeddings`, `target_vocab_size`) are unused.
  """
  config: TransformerConfig
  decoding: bool = False
  defers_projection: ClassVar[bool] = True      # project=False: see Transformer

  def setup(self):
    cfg = self.config
    embedder = transformer.make_embedder(cfg, cfg.vocab_size, 'embedding')
    self.decoder = transformer.Decoder(cfg.replace(target_vocab_size=None), embedder=embedder,
                                       decode=self.decoding)

  def __call__(self, targets: jnp.ndarray, targets_position: Optional[jnp.ndarray] = None,
               targets_segmentation: Optional[jnp.ndarray] = None,
               deterministic: bool = True, project: bool = True):
    """Float32 logits [batch, length, vocab]; position t predicts targets[:, t].

    Args:
      targets: [batch, length] ids (0 = padding); in decode mode the previous token
        [n, 1] (0 = BOS at the first step).
      targets_position: [batch, length] positions of packed rows (restarting per segment).
      targets_segmentation: [batch, length] segment ids of packed rows (0 = padding).
      deterministic: no dropout when True.
      project: False returns hidden states and the tied table (`projected_loss.Projection`).
    """
    pad = self.config.pad_id
    if self.decoding:        # causality comes from the cache
      return self.decoder(targets, None, None, None, targets_position, deterministic)
    decoder_inputs = transformer.shift_right(targets, targets_segmentation, bos_id=pad)
    segment_mask = None
    if targets_segmentation is not None:
      segment_mask = attention.make_segment_mask(targets_segmentation, targets_segmentation)
    mask = attention.combine_masks(attention.make_padding_mask(targets, targets, pad),
                                   attention.make_causal_mask(targets.shape[1]), segment_mask)
    return self.decoder(decoder_inputs, None, mask, None, targets_position, deterministic,
                        project)
