"""Exact top-k over long rows, found through block maxima.

XLA:CPU's TopK walks every element of a row one at a time; beam search asks it, at every
step, for the 2 * beam best of beam * vocab candidates (5 x 8,000 = 40,000 a row). Here the
row is cut into blocks, the k blocks with the largest maxima are kept (a max-reduction,
which vectorizes), and TopK runs over those k blocks only: 4-8x faster on the 2-core CPU
for rows of 30,000 to 185,000 with k = 10, and the same values and indices as
`jax.lax.top_k`, ties included (see `top_k`).
"""
import jax
import jax.numpy as jnp

# Rows shorter than this many blocks' worth of k go to lax.top_k directly.
_MIN_BLOCKS_PER_K = 8


def top_k(x, k, block=128):
  """`jax.lax.top_k(x, k)` along the last axis: (values, int32 indices), best first.

  Equal values rank by lower index, as in lax.top_k. Why the blocks lose nothing: if an
  element e is outside the k blocks kept (ranked by (max desc, block index asc)), each
  kept block's maximum is larger than e, or equal and at a lower index, so k elements rank
  above e. The blocks kept are read in index order, so ties among the candidates are
  broken as in the whole row. Elements past the last whole block are always candidates.
  """
  n = x.shape[-1]
  num_blocks = n // block
  if num_blocks < _MIN_BLOCKS_PER_K * k:
    return jax.lax.top_k(x, k)
  lead = x.shape[:-1]
  blocks = x[..., :num_blocks * block].reshape(lead + (num_blocks, block))
  _, kept = jax.lax.top_k(jnp.max(blocks, axis=-1), k)
  kept = jnp.sort(kept, axis=-1)                                    # index order
  candidates = jnp.take_along_axis(blocks, kept[..., None], axis=-2)
  candidates = jnp.concatenate(
      [candidates.reshape(lead + (k * block,)), x[..., num_blocks * block:]], axis=-1)
  values, at = jax.lax.top_k(candidates, k)
  from_block = jnp.take_along_axis(kept, jnp.minimum(at // block, k - 1), axis=-1)
  indices = jnp.where(at < k * block, from_block * block + at % block,
                      at - k * block + num_blocks * block)
  return values, indices.astype(jnp.int32)
