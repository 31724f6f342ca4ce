"""Stage schedules of a growing decoding cache and their checks (the searches over stages
are tested against one fixed cache in predict_test, lm_test and attention_test)."""
import pytest

from transformer_jax.decoding import cache_stages


def test_stage_lengths_rise_to_the_output_length_in_whole_blocks():
  assert cache_stages.stage_lengths(64, 4) == (16, 32, 48, 64)
  assert cache_stages.stage_lengths(82, 4) == (24, 48, 64, 82)
  assert cache_stages.stage_lengths(26, 4) == (8, 16, 24, 26)
  assert cache_stages.stage_lengths(11, 4) == (8, 11)          # empty stages dropped
  assert cache_stages.stage_lengths(5, 3) == (5,)
  assert cache_stages.stage_lengths(64, 1) == (64,)
  assert cache_stages.stage_lengths(10, 4, multiple=1) == (3, 5, 8, 10)
  with pytest.raises(ValueError, match='>= 1'):
    cache_stages.stage_lengths(64, 0)


@pytest.mark.parametrize('lengths', [(), (0, 8), (4, 4, 8), (8, 4), (4, 7)])
def test_cache_stages_must_rise_strictly_to_the_output_length(lengths):
  with pytest.raises(ValueError, match='must rise strictly'):
    cache_stages.CacheStages(lengths, lambda cache, n: cache).check(8)
