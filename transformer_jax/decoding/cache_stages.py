"""A decoding cache that grows in stages (`decode`'s searches take one as `cache_stages`).

The searches run one `jax.lax.while_loop` per stage; between stages the cache is grown
(`attention.grow_cache` for the Transformer's self-attention buffers), so early steps
read, and in beam search reorder, a short cache. `predict.staged_cache` builds both.
"""
import dataclasses
from typing import Any, Callable, Optional, Tuple

import jax


@dataclasses.dataclass(frozen=True)
class CacheStages:
  """A decoding cache that grows as the search goes.

  Steps 0 .. lengths[0] - 1 run with a cache of lengths[0] positions (the cache the
  search is given must hold exactly that many); before step lengths[k - 1] the cache is
  grown to lengths[k] by `grow_fn(cache, lengths[k])`, which must keep every filled
  position and add unfilled ones (e.g. `attention.grow_cache`). Each step's attention
  and, in beam search, its cache reorder then cost the current stage's length rather
  than the final one's; the price is one compiled loop body per stage. The outputs are
  those of one cache of lengths[-1] positions (tested): positions not yet written are
  masked either way.

  Use `stage_lengths` for a schedule.
  """
  lengths: Tuple[int, ...]
  grow_fn: Callable[[Any, int], Any]

  def check(self, max_decode_len: int):
    lengths = tuple(self.lengths)
    if (not lengths or lengths[0] < 1 or lengths[-1] != max_decode_len
        or any(b <= a for a, b in zip(lengths, lengths[1:]))):
      raise ValueError(f'cache stage lengths {lengths} must rise strictly from >= 1 to '
                       f'max_decode_len={max_decode_len}')


def stage_lengths(max_decode_len: int, stages: int, multiple: int = 8) -> Tuple[int, ...]:
  """Cache lengths of `stages` roughly equal stages ending at max_decode_len.

  Inner ends are rounded up to a multiple of `multiple` (so vectorised loops see whole
  blocks); stages that would be empty are dropped, so a short output gets fewer. One
  stage is `(max_decode_len,)`, a plain fixed-size cache.
  """
  if stages < 1:
    raise ValueError(f'cache stages must be >= 1, got {stages}')
  ends = {min(max_decode_len, -(-max_decode_len * k // stages // multiple) * multiple)
          for k in range(1, stages)}
  return tuple(sorted(e for e in ends if 0 < e < max_decode_len)) + (max_decode_len,)


def run_loop(cond_fn, body_fn, state, max_decode_len: int,
                 cache_stages: Optional[CacheStages]):
  """`while cur_index < max_decode_len and cond_fn(state): state = body_fn(state)`, run
  as one while loop per cache stage, the cache grown between them."""
  if cache_stages is None:
    return jax.lax.while_loop(lambda s: (s.cur_index < max_decode_len) & cond_fn(s),
                              body_fn, state)
  cache_stages.check(max_decode_len)
  for k, end in enumerate(cache_stages.lengths):
    if k:
      state = state.replace(cache=cache_stages.grow_fn(state.cache, end))
    state = jax.lax.while_loop(lambda s, end=end: (s.cur_index < end) & cond_fn(s),
                               body_fn, state)
  return state
