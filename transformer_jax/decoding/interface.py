"""What every search (decode.py's greedy and sampling, beam.py's beam search) shares with the
models it decodes: the step function they call, the finite -inf, the per-example length limits.

The searches know nothing about the model. They call

  tokens_to_logits_fn(token_ids: int32[n, 1], cache) -> (logits: float[n, vocab], new_cache)

once per output position, where `cache` is any pytree whose non-scalar leaves have
leading dimension n: n = batch for greedy/sampling and n = batch * beam_size for beam
search (beams of one example are adjacent rows, see `beam.expand_to_beams`). Scalar leaves,
such as flax's `cache_index`, are passed through untouched. The first input token is
`bos_id` (0, the pad id, as in flax's wmt example).
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp

# Finite stand-in for -inf: keeps sums and divisions free of inf/nan arithmetic.
NEG_INF = -1.0e7

TokensToLogitsFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def max_lengths_or_default(max_lengths, batch_size, max_decode_len):
  """int32 `[batch]` output lengths, clipped to [1, max_decode_len] (all max_decode_len if None)."""
  if max_lengths is None:
    return jnp.full((batch_size,), max_decode_len, jnp.int32)
  return jnp.clip(jnp.asarray(max_lengths, jnp.int32), 1, max_decode_len)
