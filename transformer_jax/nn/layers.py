"""Embedding, position-wise FFN and the encoder/decoder layers (Vaswani et al., 2017, §3.1-3.4).

Each sub-layer is wrapped as the paper's post-LN `LayerNorm(x + Dropout(Sublayer(x)))`
or, with `norm_order='pre'`, `x + Dropout(Sublayer(LayerNorm(x)))` (the stack then ends
with one more LayerNorm, added by the model).
"""
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.nn.attention import MultiHeadAttention
from transformer_jax.nn.config import TransformerConfig
from transformer_jax.nn import dropout

ACTIVATION_FNS = {'relu': nn.relu, 'gelu': nn.gelu}


class Embedder(nn.Module):
  """Token embedding, scaled by sqrt(model_dim), that can also produce tied output logits.

  The table starts as N(0, model_dim^-1), so scaled embeddings have unit variance and
  tied logits `x · Eᵀ` of a layer-normed x have unit variance too.
  """
  vocab_size: int
  model_dim: int
  scale: bool = True
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  def setup(self):
    self.embedding = self.param('embedding', nn.initializers.normal(stddev=self.model_dim ** -0.5),
                                (self.vocab_size, self.model_dim), self.param_dtype)

  def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
    """[batch, length] ids -> [batch, length, model_dim]."""
    x = jnp.take(self.embedding, ids, axis=0).astype(self.dtype)
    return x * jnp.asarray(self.model_dim ** 0.5, self.dtype) if self.scale else x

  def attend(self, x: jnp.ndarray) -> jnp.ndarray:
    """[..., model_dim] -> [..., vocab_size] logits with the transposed table."""
    return tied_logits(x, self.embedding.astype(self.dtype))


@jax.custom_vjp
def tied_logits(x: jnp.ndarray, table: jnp.ndarray) -> jnp.ndarray:
  """x [..., d] · tableᵀ [d, vocab] -> logits [..., vocab].

  Differentiated by hand only to choose the layout of the table's gradient: it is
  formed as [d, vocab] (contracting over tokens with the logits' gradient as it lies)
  and then transposed, a [d, vocab] copy. Left to autodiff, XLA:CPU transposed the
  whole [tokens, vocab] gradient first (122 ms of a 1.9 s Transformer-Tiny step at
  4,096 tokens x 10,000 words on the 2-core CPU).
  """
  return jnp.einsum('...d,vd->...v', x, table)


def _tied_logits_forward(x, table):
  return tied_logits(x, table), (x, table)


def _tied_logits_backward(residuals, grad):
  x, table = residuals
  grad_x = jnp.einsum('...v,vd->...d', grad, table)
  grad_table = jnp.einsum('...d,...v->dv', x, grad).T
  return grad_x.astype(x.dtype), grad_table.astype(table.dtype)


tied_logits.defvjp(_tied_logits_forward, _tied_logits_backward)


class FeedForward(nn.Module):
  """FFN(x) = act(x W1 + b1) W2 + b2, applied at each position (§3.3)."""
  mlp_dim: int
  activation: str = 'relu'
  dropout_rate: float = 0.0       # on the hidden layer; the paper has none there
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, deterministic: bool = True) -> jnp.ndarray:
    dense = lambda features, name: nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                                            kernel_init=nn.initializers.xavier_uniform(), name=name)
    h = ACTIVATION_FNS[self.activation](dense(self.mlp_dim, 'hidden')(x))
    h = dropout.Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return dense(x.shape[-1], 'output')(h)


def residual(x: jnp.ndarray, sublayer_fn: Callable[[jnp.ndarray], jnp.ndarray], norm: nn.Module,
             dropout_rate: float, norm_order: str, deterministic: bool) -> jnp.ndarray:
  """One residual sub-layer in post-LN (paper) or pre-LN order, with dropout on its output."""
  drop = lambda y: dropout.Dropout(dropout_rate)(y, deterministic=deterministic)
  if norm_order == 'pre':
    return x + drop(sublayer_fn(norm(x)))
  return norm(x + drop(sublayer_fn(x)))


def make_attention(config: TransformerConfig, name: str, *, rotary: bool, decode: bool = False):
  """MultiHeadAttention with the config's sizes."""
  return MultiHeadAttention(
      num_heads=config.num_heads, head_dim=config.qk_dim, value_dim=config.v_dim,
      dropout_rate=config.attention_dropout_rate, scale=config.attention_scale,
      rotary=rotary, rope_max_wavelength=config.rope_max_wavelength, decode=decode,
      implementation=config.attention_impl, dtype=jnp.dtype(config.dtype),
      param_dtype=jnp.dtype(config.param_dtype), name=name)


def make_norm(config: TransformerConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-6, dtype=jnp.dtype(config.dtype),
                      param_dtype=jnp.dtype(config.param_dtype), name=name)


def make_feed_forward(config: TransformerConfig) -> FeedForward:
  return FeedForward(config.mlp_dim, config.activation, dtype=jnp.dtype(config.dtype),
                     param_dtype=jnp.dtype(config.param_dtype), name='feed_forward')


class EncoderLayer(nn.Module):
  """Self-attention then FFN, each as a residual sub-layer."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: Optional[jnp.ndarray] = None,
               positions: Optional[jnp.ndarray] = None, deterministic: bool = True) -> jnp.ndarray:
    """x [batch, length, model_dim], mask [batch, 1, length, length] -> like x."""
    cfg = self.config
    sub = lambda y, fn, name: residual(y, fn, make_norm(cfg, name), cfg.dropout_rate,
                                       cfg.norm_order, deterministic)
    attention = make_attention(cfg, 'self_attention', rotary=cfg.positional == 'rotary')
    x = sub(x, lambda h: attention(h, mask=mask, positions=positions, deterministic=deterministic),
            'self_attention_norm')
    feed_forward = make_feed_forward(cfg)
    return sub(x, lambda h: feed_forward(h, deterministic=deterministic), 'feed_forward_norm')


class DecoderLayer(nn.Module):
  """Masked self-attention, cross-attention over the encoder output, then FFN."""
  config: TransformerConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray, encoded: Optional[jnp.ndarray],
               self_mask: Optional[jnp.ndarray] = None, cross_mask: Optional[jnp.ndarray] = None,
               positions: Optional[jnp.ndarray] = None, deterministic: bool = True) -> jnp.ndarray:
    """x [batch, tgt_len, model_dim], encoded [batch, src_len, model_dim] -> like x.

    `encoded` None leaves out cross-attention (the decoder-only LM).
    """
    cfg = self.config
    sub = lambda y, fn, name: residual(y, fn, make_norm(cfg, name), cfg.dropout_rate,
                                       cfg.norm_order, deterministic)
    self_attention = make_attention(cfg, 'self_attention', rotary=cfg.positional == 'rotary',
                                    decode=self.decode)
    x = sub(x, lambda h: self_attention(h, mask=self_mask, positions=positions,
                                        deterministic=deterministic), 'self_attention_norm')
    if encoded is not None:
      cross_attention = make_attention(cfg, 'cross_attention', rotary=False, decode=self.decode)
      x = sub(x, lambda h: cross_attention(h, encoded, mask=cross_mask, deterministic=deterministic),
              'cross_attention_norm')
    feed_forward = make_feed_forward(cfg)
    return sub(x, lambda h: feed_forward(h, deterministic=deterministic), 'feed_forward_norm')


def embed_tokens(embedder: Embedder, positions_module: Optional[nn.Module], ids: jnp.ndarray,
                 positions: jnp.ndarray, dropout_rate: float, deterministic: bool) -> jnp.ndarray:
  """Embedding, then positions, then dropout on the sum (§5.4)."""
  x = embedder(ids)
  if positions_module is not None:
    x = positions_module(x, positions)
  return dropout.Dropout(dropout_rate)(x, deterministic=deterministic)

