"""Positional encodings (Vaswani et al., 2017, §3.5 and Table 3 row E) and their variants.

Positions are always passed explicitly (`[batch, length]` ints), so packed sequences,
whose positions restart at every segment, and one-token cached decoding work alike.

  sinusoidal      PE(t, 2i) = sin(t / 10000^(2i/d)), PE(t, 2i+1) = cos(t / 10000^(2i/d)), added
  learned         a trained [max_len, d] table, added (row E of Table 3)
  multiplicative  a trained [max_len, d] table (initialised to ones) multiplied element-wise
  rotary          RoPE (Su et al., 2021): q and k rotated inside attention; nothing added here
  none            no position information at all

The three table kinds cover positions 0 .. max_len - 1 only: outside the table `jnp.take`
returns NaN under jit, which attention then spreads to every position of the row. So they
refuse, at trace time, a sequence longer than max_len (the largest position of a row is
below its static length; a cached decoder is checked when its cache is created, and the
searches never step past the cache). Rotary and none read no table and take any length.
"""
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def sinusoidal_table(max_len: int, dim: int, max_wavelength: float = 10_000.0) -> np.ndarray:
  """The paper's table, sin on even and cos on odd channels (interleaved as in §3.5).

  Returns:
    float32 [max_len, dim].
  """
  positions = np.arange(max_len, dtype=np.float64)[:, None]
  pair = np.arange(0, dim, 2, dtype=np.float64)            # 2i for each sin/cos pair
  angles = positions / np.power(max_wavelength, pair / dim)  # [max_len, ceil(dim/2)]
  table = np.zeros((max_len, dim), dtype=np.float64)
  table[:, 0::2] = np.sin(angles)
  table[:, 1::2] = np.cos(angles[:, : dim // 2])
  return table.astype(np.float32)


def default_positions(tokens: jnp.ndarray) -> jnp.ndarray:
  """0, 1, 2, ... for every row of `tokens` [batch, length]."""
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape[:2])


def apply_rotary(x: jnp.ndarray, positions: jnp.ndarray, max_wavelength: float = 10_000.0) -> jnp.ndarray:
  """Rotates channel pairs (j, j + d/2) of `x` by angle position * wavelength_j^-1.

  Because rotations compose, <R_m q, R_n k> = <q, R_{n-m} k>: the attention score
  depends on the two positions only through their offset.

  Args:
    x: [batch, length, heads, head_dim] queries or keys, head_dim even.
    positions: [batch, length] integer positions.
    max_wavelength: base of the geometric frequency ladder.

  Returns:
    Array like `x`.
  """
  half = x.shape[-1] // 2
  inv_freq = max_wavelength ** (-np.arange(half, dtype=np.float32) / half)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq   # [batch, length, half]
  sin = jnp.sin(angles)[:, :, None, :]                           # broadcast over heads
  cos = jnp.cos(angles)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def _rows(table: jnp.ndarray, positions: jnp.ndarray, dtype) -> jnp.ndarray:
  """Rows `positions` [batch, length] of `table` [max_len, d]; ValueError if length > max_len."""
  length, max_len = positions.shape[-1], table.shape[0]
  if length > max_len:
    raise ValueError(f'sequence length {length} exceeds max_len={max_len} of the positional '
                     'table: raise TransformerConfig.max_len or shorten the input')
  return jnp.take(table, positions, axis=0).astype(dtype)


class SinusoidalPositions(nn.Module):
  """Adds the fixed sinusoidal table (no parameters)."""
  max_len: int
  max_wavelength: float = 10_000.0

  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    table = jnp.asarray(sinusoidal_table(self.max_len, x.shape[-1], self.max_wavelength))
    return x + _rows(table, positions, x.dtype)


def _table_rows(module: nn.Module, init, x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
  """Rows `positions` of the module's trained [max_len, features] table, in x's dtype."""
  table = module.param('table', init, (module.max_len, x.shape[-1]), module.param_dtype)
  return _rows(table, positions, x.dtype)


class LearnedPositions(nn.Module):
  """Adds a trained position table."""
  max_len: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    return x + _table_rows(self, nn.initializers.normal(stddev=0.02), x, positions)


class MultiplicativePositions(nn.Module):
  """Multiplies the embedding by a trained, position-dependent weight (starts as identity)."""
  max_len: int
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    return x * _table_rows(self, nn.initializers.ones, x, positions)


# Encodings applied to the embedding. 'rotary' acts inside attention and 'none' does
# nothing, so neither has a module here.
EMBEDDING_POSITIONS = {
    'sinusoidal': SinusoidalPositions,
    'learned': LearnedPositions,
    'multiplicative': MultiplicativePositions,
}


def make_positions(kind: str, max_len: int, **kwargs) -> Optional[nn.Module]:
  """The module that mixes positions into embeddings for `kind`, or None."""
  if kind in ('rotary', 'none'):
    return None
  module = EMBEDDING_POSITIONS[kind]
  if module is SinusoidalPositions:
    kwargs.pop('param_dtype', None)
  return module(max_len=max_len, **kwargs)
