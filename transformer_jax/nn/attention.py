"""Scaled dot-product and multi-head attention (Vaswani et al., 2017, §3.2), with masks.

Masks are boolean, True where attention is allowed, shaped to broadcast against
`[batch, heads, query_length, key_length]`. A query row with nothing to attend to
(fully masked) gets all-zero weights and a zero output, never NaN.
"""
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.nn import dropout
from transformer_jax.nn import positional

# The decoding self-attention cache's buffers, [batch, heads, max_len, d] (_self_cache).
SELF_CACHE_BUFFERS = ('cached_key', 'cached_value')

# ---------------------------------------------------------------------------- masks


def make_attention_mask(query_valid: jnp.ndarray, key_valid: jnp.ndarray) -> jnp.ndarray:
  """[batch, q] and [batch, k] booleans -> [batch, 1, q, k]: both ends valid."""
  return (query_valid[:, None, :, None] & key_valid[:, None, None, :])


def make_padding_mask(query_tokens: jnp.ndarray, key_tokens: jnp.ndarray, pad_id: int = 0) -> jnp.ndarray:
  """Mask of [batch, 1, q, k] that hides padding on either side."""
  return make_attention_mask(query_tokens != pad_id, key_tokens != pad_id)


def make_causal_mask(length: int) -> jnp.ndarray:
  """[1, 1, length, length]: query i may attend to keys 0..i."""
  return jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))[None, None]


def make_segment_mask(query_segments: jnp.ndarray, key_segments: jnp.ndarray) -> jnp.ndarray:
  """[batch, 1, q, k]: packed examples attend only within their own segment."""
  return query_segments[:, None, :, None] == key_segments[:, None, None, :]


def combine_masks(*masks: Optional[jnp.ndarray]) -> Optional[jnp.ndarray]:
  """Logical AND of the masks that are not None (None if all are)."""
  masks = [m for m in masks if m is not None]
  if not masks:
    return None
  return functools.reduce(jnp.logical_and, masks)


# ------------------------------------------------------------------- the attention op


def dot_product_attention(query: jnp.ndarray,
                          key: jnp.ndarray,
                          value: jnp.ndarray,
                          mask: Optional[jnp.ndarray] = None,
                          bias: Optional[jnp.ndarray] = None,
                          *,
                          scale: Optional[float] = None,
                          dropout_rate: float = 0.0,
                          dropout_rng: Optional[jax.Array] = None,
                          deterministic: bool = True,
                          heads_first: bool = False):
  """softmax(Q Kᵀ · scale + bias) V over each head.

  Args:
    query: [batch, q, heads, d_k].
    key: [batch, k, heads, d_k], or [batch, heads, k, d_k] with heads_first.
    value: [batch, k, heads, d_v], or [batch, heads, k, d_v] with heads_first.
    mask: boolean, broadcastable to [batch, heads, q, k]; True = may attend.
    bias: additive, broadcastable to [batch, heads, q, k] (e.g. relative positions).
    scale: logit multiplier; None is the paper's 1/sqrt(d_k), 1.0 disables scaling.
    dropout_rate: dropout on the attention weights.
    dropout_rng: key for that dropout (needed when not deterministic and rate > 0).
    deterministic: no dropout when True.
    heads_first: key and value are laid out [batch, heads, k, d] (the decoding cache's
      layout: a product against it needs no transposed copy of the cache).

  Returns:
    (output [batch, q, heads, d_v] in value's dtype, weights [batch, heads, q, k] float32).
  """
  if scale is None:
    scale = query.shape[-1] ** -0.5
  kv = 'bhkd' if heads_first else 'bkhd'
  # Logits and softmax in float32 whatever the compute dtype.
  logits = jnp.einsum(f'bqhd,{kv}->bhqk', query, key, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    logits = logits + bias.astype(jnp.float32)
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1)
  if mask is not None:
    # A fully masked row was a softmax over equal huge negatives (uniform): zero it.
    weights = weights * mask
  if not deterministic and dropout_rate > 0.0:
    weights = dropout.apply(weights, dropout_rng, dropout_rate)
  output = jnp.einsum(f'bhqk,{kv}->bqhd', weights.astype(value.dtype), value)
  return output, weights


def fused_attention(query: jnp.ndarray,
                    key: jnp.ndarray,
                    value: jnp.ndarray,
                    mask: Optional[jnp.ndarray] = None,
                    bias: Optional[jnp.ndarray] = None,
                    *,
                    scale: Optional[float] = None,
                    implementation: str = 'xla') -> jnp.ndarray:
  """`dot_product_attention`'s output through `jax.nn.dot_product_attention`.

  The weights are never materialised for the caller (cuDNN's flash attention never
  forms them at all), and there is no attention dropout. A query row with nothing to
  attend to gets a zero output, as in `dot_product_attention` (JAX's own softmax would
  spread it uniformly over the masked keys).

  Args:
    query, key, value, mask, bias, scale: as in `dot_product_attention`; d_v must equal
      d_k here.
    implementation: 'xla' or 'cudnn' (GPU, bfloat16/float16 only).

  Returns:
    [batch, q, heads, d_v] in query's dtype.
  """
  if bias is not None:
    bias = bias.astype(query.dtype)
  output = jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale,
                                        implementation=implementation)
  if mask is not None:
    has_key = jnp.any(mask, axis=-1, keepdims=True)                   # [b|1, h|1, q|1, 1]
    output = output * jnp.swapaxes(has_key, 1, 2).astype(output.dtype)
  return output


def resolve_implementation(implementation: str, dtype, head_dim: int, value_dim: int) -> str:
  """The implementation 'auto' stands for on this backend and dtype (others unchanged).

  'cudnn' where cuDNN flash attention takes the call (a GPU, bfloat16 or float16, equal
  head sizes that are multiples of 8 up to 128), else 'explicit'.
  """
  if implementation != 'auto':
    return implementation
  fits_cudnn = (jax.default_backend() == 'gpu' and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
                and head_dim == value_dim and head_dim % 8 == 0 and head_dim <= 128)
  return 'cudnn' if fits_cudnn else 'explicit'


# ------------------------------------------------------------------------ the module


class MultiHeadAttention(nn.Module):
  """Multi-head attention: self (inputs_kv None), cross, or causal (through `mask`).

  With `decode=True` it keeps a key/value cache in the 'cache' collection. The first
  call (made with full-length inputs, e.g. by `init_cache`) only creates the cache;
  each later call takes one new query position. For cross-attention the projected
  encoder keys/values are stored once, when the cache is created, and reused.

  Attributes:
    num_heads: h.
    head_dim: d_k, per-head query/key size.
    value_dim: d_v, per-head value size; None means head_dim.
    out_dim: output features; None means the input's feature size.
    dropout_rate: dropout on the attention weights.
    scale: logit scale; None is 1/sqrt(d_k).
    rotary: apply RoPE to queries and keys (self-attention only).
    rope_max_wavelength: RoPE frequency base.
    decode: keep a key/value cache for one-position-per-call decoding.
    implementation: 'explicit' (`dot_product_attention`), 'xla' or 'cudnn'
      (`fused_attention`), or 'auto' (`resolve_implementation`). A call that must
      produce weights (the 'intermediates' collection is mutable, e.g. for
      visualisation) or apply attention dropout, or has d_v != d_k, runs 'explicit'.
    dtype: compute dtype; param_dtype: parameter dtype.
  """
  num_heads: int
  head_dim: int
  value_dim: Optional[int] = None
  out_dim: Optional[int] = None
  dropout_rate: float = 0.0
  scale: Optional[float] = None
  rotary: bool = False
  rope_max_wavelength: float = 10_000.0
  decode: bool = False
  implementation: str = 'explicit'
  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = nn.initializers.xavier_uniform()

  def _project(self, x, dim, name):
    # No key bias: it adds q·b_k to every logit of a query row, which softmax cancels,
    # so its gradient is exactly zero (and Adam would amplify rounding noise in it).
    return nn.DenseGeneral((self.num_heads, dim), dtype=self.dtype, param_dtype=self.param_dtype,
                           use_bias=name != 'key', kernel_init=self.kernel_init, name=name)(x)

  @nn.compact
  def __call__(self,
               inputs_q: jnp.ndarray,
               inputs_kv: Optional[jnp.ndarray] = None,
               mask: Optional[jnp.ndarray] = None,
               bias: Optional[jnp.ndarray] = None,
               *,
               positions: Optional[jnp.ndarray] = None,
               deterministic: bool = True) -> jnp.ndarray:
    """Attends from `inputs_q` [batch, q, features] to `inputs_kv` [batch, k, features].

    Args:
      inputs_q: queries' source.
      inputs_kv: keys' and values' source; None for self-attention.
      mask: boolean [batch | 1, heads | 1, q, k]; in decode steps, the padding mask
        against the cache (causality is added here).
      bias: additive logit bias.
      positions: [batch, q] positions for RoPE (self-attention; keys share them).
      deterministic: disables attention dropout.

    Returns:
      [batch, q, out_dim].
    """
    is_cross = inputs_kv is not None
    value_dim = self.value_dim or self.head_dim
    query = self._project(inputs_q, self.head_dim, 'query')
    if is_cross and self.decode:
      key, value = self._cross_cache(inputs_kv, value_dim)
    else:
      source = inputs_kv if is_cross else inputs_q
      key = self._project(source, self.head_dim, 'key')
      value = self._project(source, value_dim, 'value')
    if self.rotary and not is_cross:
      if positions is None:
        positions = self._default_positions(inputs_q)
      query = positional.apply_rotary(query, positions, self.rope_max_wavelength)
      key = positional.apply_rotary(key, positions, self.rope_max_wavelength)
    if self.decode and not is_cross:
      key, value, mask = self._self_cache(key, value, mask)

    # Decoding keeps keys/values heads-first ([batch, heads, length, d]; see _self_cache).
    groups = self._query_groups(query, key)
    if groups > 1:      # several query rows per source (beams): they become its queries
      batch, length = query.shape[:2]
      query = query.reshape((key.shape[0], groups * length) + query.shape[2:])
    output = self._attend(query, key, value, mask, bias, deterministic, heads_first=self.decode)
    if groups > 1:
      output = output.reshape((batch, length) + output.shape[2:])
    out_dim = self.out_dim or inputs_q.shape[-1]
    return nn.DenseGeneral(out_dim, axis=(-2, -1), dtype=self.dtype, param_dtype=self.param_dtype,
                           kernel_init=self.kernel_init, name='out')(output)

  def _query_groups(self, query, key):
    """Query rows per key row: 1, or in cross-attention decoding n when the cache was built
    from n times fewer encoder rows than there are decoder rows.

    A beam search's beams of one example share its source, so the encoder output need not
    be tiled per beam: rows g*n ... g*n+n-1 (`decode.expand_to_beams`'s order) then attend
    to source row g as n queries of one product, reading its keys/values once instead of
    n times. The cross mask must then be per source row ([n_sources | 1, ...]).
    """
    if query.shape[0] == key.shape[0]:
      return 1
    if not self.decode or query.shape[0] % key.shape[0]:
      raise ValueError(f'{query.shape[0]} query rows against {key.shape[0]} key rows: decoding '
                       'cross-attention needs a whole number of query rows per source row')
    return query.shape[0] // key.shape[0]

  def _attend(self, query, key, value, mask, bias, deterministic, heads_first):
    """[batch, q, heads, d_v] by the configured implementation; sows the weights when
    they are collected. heads_first: key and value are [batch, heads, k, d]."""
    implementation = resolve_implementation(self.implementation, query.dtype,
                                            query.shape[-1], value.shape[-1])
    drops = not deterministic and self.dropout_rate > 0.0
    if (implementation == 'explicit' or drops or query.shape[-1] != value.shape[-1]
        or self.is_mutable_collection('intermediates')):
      output, weights = dot_product_attention(
          query, key, value, mask, bias, scale=self.scale, dropout_rate=self.dropout_rate,
          dropout_rng=self.make_rng('dropout') if drops else None,
          deterministic=deterministic, heads_first=heads_first)
      self.sow('intermediates', 'attention_weights', weights)
      return output
    if heads_first:
      key, value = jnp.swapaxes(key, 1, 2), jnp.swapaxes(value, 1, 2)
    return fused_attention(query, key, value, mask, bias, scale=self.scale,
                           implementation=implementation)

  def _default_positions(self, inputs_q):
    """0..q-1, or in a decode step the cache index (the number of positions cached)."""
    if self.decode and self.has_variable('cache', 'cache_index'):
      index = self.get_variable('cache', 'cache_index')
      return jnp.full(inputs_q.shape[:2], index, jnp.int32)
    return positional.default_positions(inputs_q)

  def _self_cache(self, key, value, mask):
    """Writes this step's key/value at the cache index; returns the whole cache.

    The cache is heads-first, [batch, heads, max_len, d]: the step's products against it
    then read it as it lies, where a [batch, max_len, heads, d] cache was copied into
    that order at every step (for a 4-layer decoder in a beam search on CPU, those
    copies took ~40% of the time). Returned keys/values are heads-first, also from the
    creating call.
    """
    key, value = jnp.swapaxes(key, 1, 2), jnp.swapaxes(value, 1, 2)
    key_name, value_name = SELF_CACHE_BUFFERS
    initialized = self.has_variable('cache', key_name)
    cached_key = self.variable('cache', key_name, jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable('cache', value_name, jnp.zeros, value.shape, value.dtype)
    index = self.variable('cache', 'cache_index', lambda: jnp.zeros((), jnp.int32))
    if not initialized:
      return key, value, mask          # the creating call is a plain full-length pass
    if key.shape[2] != 1:
      raise ValueError(f'decode steps take one position at a time, got {key.shape[2]}')
    i = index.value
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, 0, i, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, 0, i, 0))
    index.value = i + 1
    max_len = cached_key.value.shape[2]
    filled = (jnp.arange(max_len) <= i)[None, None, None, :]   # causal: keys written so far
    return cached_key.value, cached_value.value, combine_masks(mask, filled)

  def _cross_cache(self, inputs_kv, value_dim):
    """Encoder keys/values projected once, when the cache is created (heads-first)."""
    if self.has_variable('cache', 'cross_key'):
      return self.get_variable('cache', 'cross_key'), self.get_variable('cache', 'cross_value')
    key = jnp.swapaxes(self._project(inputs_kv, self.head_dim, 'key'), 1, 2)
    value = jnp.swapaxes(self._project(inputs_kv, value_dim, 'value'), 1, 2)
    self.put_variable('cache', 'cross_key', key)
    self.put_variable('cache', 'cross_value', value)
    return key, value


def _buffer_name(path):
  """The name of a cache leaf at `path` (its last dict key), or None."""
  return getattr(path[-1], 'key', None) if path else None


def holds_self_cache(cache) -> bool:
  """Whether the pytree holds a self-attention key/value buffer (that `grow_cache` grows)."""
  paths = jax.tree_util.tree_flatten_with_path(cache)[0]
  return any(_buffer_name(path) in SELF_CACHE_BUFFERS for path, _ in paths)


def grow_cache(cache, length: int):
  """The decoding cache (or any pytree holding one) with every self-attention key/value
  buffer lengthened to `length` positions, zeros appended.

  Filled positions and the cache index are kept, so decoding goes on where it was; the
  new positions are masked until written. For `cache_stages.CacheStages`.
  """
  def grow(path, leaf):
    if _buffer_name(path) not in SELF_CACHE_BUFFERS:
      return leaf
    if leaf.shape[2] > length:
      raise ValueError(f'cannot shrink a {leaf.shape[2]}-position cache to {length}')
    return jnp.pad(leaf, ((0, 0), (0, 0), (0, length - leaf.shape[2]), (0, 0)))
  return jax.tree_util.tree_map_with_path(grow, cache)
