"""Tests for transformer_jax.data.batching: buckets, token budget, padding, packing."""
import collections

import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data import batching


def _random_examples(num, max_len, seed=0):
  """EOS-terminated random int32 sequences of lengths 1..max_len per side."""
  rng = np.random.default_rng(seed)
  def seq():
    return np.append(rng.integers(3, 50, rng.integers(0, max_len)), 1).astype(np.int32)
  return [seq() for _ in range(num)], [seq() for _ in range(num)]


def _pairs(inputs, targets):
  return collections.Counter((tuple(x), tuple(y)) for x, y in zip(inputs, targets))


def _strip(row):
  """A padded row without its trailing pads."""
  return tuple(row[:np.flatnonzero(row).max() + 1]) if row.any() else ()


def test_default_bucket_lengths():
  assert batching.default_bucket_lengths(128) == (8, 16, 24, 32, 48, 64, 96, 128)
  assert batching.default_bucket_lengths(100) == (8, 16, 24, 32, 48, 64, 96, 100)
  assert batching.default_bucket_lengths(256) == (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
  assert batching.default_bucket_lengths(6) == (6,)


def test_normalize_bucket_lengths_ends_at_max_len():
  assert batching.normalize_bucket_lengths((64, 16, 16, 300), 128) == (16, 64, 128)
  assert batching.normalize_bucket_lengths((), 64) == batching.default_bucket_lengths(64)
  with pytest.raises(UserError, match='bucket_lengths'):
    batching.normalize_bucket_lengths((0, 8), 64)


def test_rows_round_down_to_batch_multiple():
  assert batching.rows_for_length(4096, 48, 8) == 80  # 85 rows -> 80
  assert batching.rows_for_length(4096, 8, 8) == 512


def test_rows_error_names_numbers_and_fix():
  with pytest.raises(UserError) as e:
    batching.rows_for_length(512, 128, 8)
  message = str(e.value)
  assert 'tokens_per_batch=512' in message and 'batch_multiple=8' in message
  assert '--experiment.data.tokens_per_batch to at least 1024' in message
  assert '\n' not in message


def test_bucket_ids_pick_smallest_holding_bucket():
  ids = batching.bucket_ids(np.array([1, 8, 9, 16, 17, 64, 65]), (8, 16, 64))
  np.testing.assert_array_equal(ids, [0, 0, 1, 1, 2, 2, 3])


def test_bucketed_epoch_covers_every_example_once_within_budget():
  inputs, targets = _random_examples(500, 60)
  buckets, tokens, multiple = (8, 16, 32, 64), 1024, 4
  rows = [batching.rows_for_length(tokens, b, multiple) for b in buckets]
  lengths = batching.example_lengths(inputs, targets)
  rng = np.random.default_rng(0)
  plan = batching.plan_bucketed_epoch(rng.permutation(500), batching.bucket_ids(lengths, buckets),
                                      len(buckets), rows, rng)
  seen_in, seen_tg = [], []
  for k, members in plan:
    batch = batching.pad_batch([inputs[i] for i in members], [targets[i] for i in members],
                               rows[k], buckets[k])
    assert batch['inputs'].shape == batch['targets'].shape == (rows[k], buckets[k])
    assert batch['inputs'].dtype == np.int32
    assert rows[k] % multiple == 0 and rows[k] * buckets[k] <= tokens
    # The bucket is the smallest holding both sides of every member.
    assert all(lengths[i] <= buckets[k] and (k == 0 or lengths[i] > buckets[k - 1])
               for i in members)
    for r in range(len(members)):
      seen_in.append(_strip(batch['inputs'][r]))
      seen_tg.append(_strip(batch['targets'][r]))
    assert not batch['targets'][len(members):].any()  # pad rows carry no weight
  assert _pairs(seen_in, seen_tg) == _pairs(inputs, targets)


def test_pack_then_unpack_gives_back_the_examples():
  inputs, targets = _random_examples(300, 30, seed=1)
  length, rows = 64, 8
  plan = batching.plan_packed_epoch(np.random.default_rng(0).permutation(300),
                                    np.array([len(x) for x in inputs]),
                                    np.array([len(y) for y in targets]), length, rows)
  unpacked, non_pad, total = [], 0, 0
  for packed_rows in plan:
    batch = batching.pack_batch(inputs, targets, packed_rows, rows, length)
    assert set(batch) == {'inputs', 'targets', 'inputs_position', 'inputs_segmentation',
                          'targets_position', 'targets_segmentation'}
    assert all(v.shape == (rows, length) and v.dtype == np.int32 for v in batch.values())
    for key in ('inputs', 'targets'):
      segmentation, position = batch[key + '_segmentation'], batch[key + '_position']
      # Padding is segment 0, position 0, token 0; positions restart per segment.
      assert not batch[key][segmentation == 0].any() and not position[segmentation == 0].any()
      for r in range(rows):
        for segment in range(1, segmentation[r].max(initial=0) + 1):
          np.testing.assert_array_equal(position[r][segmentation[r] == segment],
                                        np.arange((segmentation[r] == segment).sum()))
      # Segments are contiguous and numbered 1, 2, ... from the left.
      for row in segmentation:
        real = row[row > 0]
        assert (np.diff(real) >= 0).all() and (real.size == 0 or real[0] == 1)
    for row_pairs, members in zip(batching.unpack_batch(batch), packed_rows):
      assert len(row_pairs) == len(members)
      for (x, y), i in zip(row_pairs, members):
        np.testing.assert_array_equal(x, inputs[i])
        np.testing.assert_array_equal(y, targets[i])
        unpacked.append((tuple(x), tuple(y)))
    non_pad += (batch['targets'] != 0).sum()
    total += batch['targets'].size
  assert collections.Counter(unpacked) == _pairs(inputs, targets)
  assert non_pad / total > 0.6  # packing is doing its job on short examples


def test_pack_batch_by_hand_with_an_empty_row_between():
  inputs = [np.array([5, 1]), np.array([6, 7, 1]), np.array([8, 1])]
  targets = [np.array([9, 1]), np.array([4, 1]), np.array([3, 3, 1])]
  batch = batching.pack_batch(inputs, targets, [[2, 0], [], [1]], 4, 6)
  np.testing.assert_array_equal(batch['inputs'], [[8, 1, 5, 1, 0, 0], [0] * 6,
                                                  [6, 7, 1, 0, 0, 0], [0] * 6])
  np.testing.assert_array_equal(batch['inputs_segmentation'], [[1, 1, 2, 2, 0, 0], [0] * 6,
                                                               [1, 1, 1, 0, 0, 0], [0] * 6])
  np.testing.assert_array_equal(batch['inputs_position'], [[0, 1, 0, 1, 0, 0], [0] * 6,
                                                           [0, 1, 2, 0, 0, 0], [0] * 6])
  np.testing.assert_array_equal(batch['targets'], [[3, 3, 1, 9, 1, 0], [0] * 6,
                                                   [4, 1, 0, 0, 0, 0], [0] * 6])
  np.testing.assert_array_equal(batch['targets_position'], [[0, 1, 2, 0, 1, 0], [0] * 6,
                                                            [0, 1, 0, 0, 0, 0], [0] * 6])


def test_pad_batch_pads_rows_and_length_with_zero():
  batch = batching.pad_batch([np.array([5, 1])], [np.array([6, 7, 1])], 2, 4)
  np.testing.assert_array_equal(batch['inputs'], [[5, 1, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(batch['targets'], [[6, 7, 1, 0], [0, 0, 0, 0]])


def test_cut_to_length_keeps_the_eos_and_names_the_cut_ones():
  sequences = [np.array([5, 6, 1]), [4, 4, 4, 4, 4, 1], np.arange(2, 40)]
  cut, indices = batching.cut_to_length(sequences, 4)
  assert indices == [1, 2]
  np.testing.assert_array_equal(cut[0], [5, 6, 1])
  np.testing.assert_array_equal(cut[1], [4, 4, 4, 1])
  np.testing.assert_array_equal(cut[2], [2, 3, 4, 39])
  assert batching.cut_to_length(sequences, None) == (sequences, [])
  note = batching.describe_cut_lines(list(range(7)), 64)
  assert '\n' not in note and note.startswith('7 input line(s)')
  assert 'max_len=64' in note and 'line(s) 1, 2, 3, 4, 5, ...;' in note


def test_eval_layout_stays_within_the_model_and_never_refuses_a_long_example():
  # Data ladder up to 32, a model reading 64 tokens, a 5,000-token line cut to 64.
  buckets, rows = batching.eval_layout((), 32, 64, tokens_per_batch=256, batch_multiple=8,
                                       limit=64)
  assert buckets[-1] == 64 and rows == 8          # one row per device, past the 256 budget
  buckets, rows = batching.eval_layout((), 32, 40, 4096, 8, limit=64)
  assert buckets[-1] == 40 and rows == 4096 // 40 // 8 * 8
  buckets, _ = batching.eval_layout((), 32, 61, 4096, 8, limit=62)
  assert buckets[-1] == 62                        # a multiple of 8 would pass the table
  buckets, _ = batching.eval_layout((), 128, 20, 4096, 8, limit=24)
  assert max(buckets) == 24                       # the data ladder is capped too
  buckets, _ = batching.eval_layout((), 32, 5001, 4096, 8)
  assert buckets[-1] == 5008                      # no table (rotary): nothing is cut
