"""Token-budget batching with length buckets, optional packing, and padding (numpy).

The paper batches "by approximate sequence length", each batch holding about 25,000
source and 25,000 target tokens (Vaswani et al., 2017, Section 5.1). Here an example
goes to the smallest bucket length holding both of its sides; a bucket's batch has
`tokens_per_batch // bucket_len` rows (rounded down to a multiple of the device
count) and is padded to the bucket length, so XLA compiles once per bucket.

Packing instead places several examples in each row of a fixed length, with segment
ids 1, 2, 3, ... (0 = padding) and positions restarting at 0 in each segment.

Sets that are never trimmed (evaluation, translation) keep examples longer than the data's
max_len, but a model with a table of positions reads at most its own max_len tokens: such
examples are cut to it (`cut_to_length`) and no bucket is made longer (`eval_layout`).

Examples are 1-D int32 arrays ending in EOS; everything here is planned from lengths
and index arrays first (cheap, deterministic) and materialised one batch at a time.
"""
import numpy as np

from transformer_jax.base.errors import UserError

PAD_ID = 0


def default_bucket_lengths(max_len):
  """8, 16, 24, 32, 48, 64, 96, 128, 192, 256, ... below max_len, then max_len.

  Steps of about 1.5x keep padding under ~33% while the number of shapes (and so
  of compilations) stays logarithmic in max_len.
  """
  ladder, length = [8, 16, 24], 32
  while length < max_len:
    ladder += [length, length * 3 // 2]
    length *= 2
  return tuple(b for b in ladder if b < max_len) + (max_len,)


def normalize_bucket_lengths(bucket_lengths, max_len):
  """Sorted, de-duplicated bucket lengths below max_len, ending with max_len."""
  if not bucket_lengths:
    return default_bucket_lengths(max_len)
  if min(bucket_lengths) < 1:
    raise UserError(f'bucket lengths {tuple(bucket_lengths)} must be positive: fix '
                    '--experiment.data.bucket_lengths or set it to () for the default ladder')
  return tuple(sorted({int(b) for b in bucket_lengths if b < max_len})) + (max_len,)


def rows_for_length(tokens_per_batch, length, batch_multiple):
  """Rows of a batch padded to `length`: the token budget, down to a multiple of batch_multiple."""
  rows = tokens_per_batch // length // batch_multiple * batch_multiple
  if rows == 0:
    raise UserError(
        f'tokens_per_batch={tokens_per_batch} gives {tokens_per_batch // length} rows of length '
        f'{length}, fewer than batch_multiple={batch_multiple} (the global device count): set '
        f'--experiment.data.tokens_per_batch to at least {length * batch_multiple} or lower '
        '--experiment.data.max_len')
  return rows


def example_lengths(inputs, targets):
  """Longest side of each example: int64 [num_examples]."""
  return np.maximum(np.fromiter(map(len, inputs), np.int64, len(inputs)),
                    np.fromiter(map(len, targets), np.int64, len(targets)))


def cut_to_length(sequences, limit):
  """Sequences longer than `limit` cut to their first limit - 1 tokens and their last one
  (EOS), so a cut sequence still ends like a whole one.

  Args:
    sequences: list of 1-D int arrays or lists, each ending in EOS.
    limit: most tokens a sequence may keep (>= 1), or None for no limit.

  Returns:
    (list of the sequences, cut ones replaced by int32 arrays, sorted indices of the cut ones).
  """
  if limit is None:
    return list(sequences), []
  cut = [i for i, seq in enumerate(sequences) if len(seq) > limit]
  sequences = list(sequences)
  for i in cut:
    seq = np.asarray(sequences[i], np.int32)
    sequences[i] = np.append(seq[:limit - 1], seq[-1])
  return sequences, cut


def describe_cut_lines(cut, limit, shown=5):
  """One line for a warning: how many input lines (`cut`: indices from `cut_to_length`)
  were cut to `limit` tokens, and the first `shown` of their line numbers (from 1)."""
  numbers = ', '.join(str(i + 1) for i in cut[:shown]) + (', ...' if len(cut) > shown else '')
  return (f'{len(cut)} input line(s) had more than the model\'s max_len={limit} tokens (EOS '
          f'included) and were cut to it: line(s) {numbers}; the other lines are unaffected')


def eval_layout(bucket_lengths, max_len, longest, tokens_per_batch, batch_multiple, limit=None):
  """(buckets, rows) for a set that is never trimmed (evaluation, translation).

  The bucket ladder gains one length (a multiple of 8, at most `limit`) when `longest`
  exceeds max_len; every batch gets the row count of the token budget at the longest
  bucket needed, so there is one shape per bucket. Since nothing may be dropped, a budget
  too small for one row per device of that bucket still gets one (never an error here).

  Args:
    bucket_lengths: the data config's bucket lengths (() = the default ladder).
    max_len: the data config's max_len (the ladder's top).
    longest: longest sequence of the set, already cut to `limit`.
    tokens_per_batch: token budget of a batch.
    batch_multiple: global device count; rows are a multiple of it.
    limit: the model's max_input_len (no bucket exceeds it), or None.
  """
  top = max_len if limit is None else min(max_len, limit)
  buckets = normalize_bucket_lengths(tuple(bucket_lengths), top)
  if longest > buckets[-1]:
    extra = -(-longest // 8) * 8
    buckets += (extra if limit is None else min(extra, limit),)
  length = buckets[bucket_ids(longest, buckets)]
  rows = max(tokens_per_batch // length // batch_multiple, 1) * batch_multiple
  return buckets, rows


def bucket_ids(lengths, bucket_lengths):
  """Index of the smallest bucket holding each length (len(bucket_lengths) if none)."""
  return np.searchsorted(np.asarray(bucket_lengths), lengths, side='left')


def plan_bucketed_epoch(order, buckets, num_buckets, rows_per_bucket, rng):
  """Groups examples into per-bucket batches, then shuffles the batch order.

  Every example of `order` lands in exactly one batch; a bucket's last batch may be
  short (it is padded with empty rows later) so nothing is dropped.

  Args:
    order: int [n] example indices in (shuffled) epoch order.
    buckets: int [n] bucket index of each example in `order`'s index space (by example).
    num_buckets: number of buckets.
    rows_per_bucket: int [num_buckets] rows of a full batch per bucket.
    rng: np.random.Generator used to shuffle the order of batches.

  Returns:
    List of (bucket index, int array of example indices) in epoch order.
  """
  of_order = buckets[order]
  batches = []
  for k in range(num_buckets):
    members = order[of_order == k]  # keeps the shuffled order within the bucket
    rows = rows_per_bucket[k]
    batches += [(k, members[i:i + rows]) for i in range(0, len(members), rows)]
  return [batches[i] for i in rng.permutation(len(batches))]


def plan_packed_epoch(order, input_lengths, target_lengths, length, rows):
  """First-fit packing of examples (in `order`) into batches of `rows` rows of `length`.

  An example goes to the first open row where both of its sides fit; when none fits
  and all `rows` rows are open, the batch is closed and a new one begins.

  Args:
    order: int [n] example indices in epoch order.
    input_lengths: int [num_examples] input lengths (EOS included), all <= length.
    target_lengths: int [num_examples] target lengths.
    length: row length.
    rows: rows per batch.

  Returns:
    List of batches; a batch is a list of rows; a row is a list of example indices.
  """
  batches, bins = [], []
  free_in, free_tg = np.empty(rows, np.int64), np.empty(rows, np.int64)
  for i in order:
    n_in, n_tg = input_lengths[i], target_lengths[i]
    fits = np.flatnonzero((free_in[:len(bins)] >= n_in) & (free_tg[:len(bins)] >= n_tg))
    if fits.size:
      row = fits[0]
    else:
      if len(bins) == rows:
        batches.append(bins)
        bins = []
      row = len(bins)
      bins.append([])
      free_in[row], free_tg[row] = length, length
    bins[row].append(i)
    free_in[row] -= n_in
    free_tg[row] -= n_tg
  if bins:
    batches.append(bins)
  return batches


def pad_batch(inputs, targets, rows, length):
  """Pads examples into a batch of fixed shape; rows beyond the examples are all pad.

  Args:
    inputs: list of 1-D int arrays, each at most `length` long.
    targets: list of 1-D int arrays, same count.
    rows: rows of the batch (>= number of examples).
    length: padded length.

  Returns:
    {'inputs', 'targets'}: int32 [rows, length].
  """
  batch = {}
  for key, seqs in (('inputs', inputs), ('targets', targets)):
    array = np.full((rows, length), PAD_ID, np.int32)
    for r, seq in enumerate(seqs):
      array[r, :len(seq)] = seq
    batch[key] = array
  return batch


def pack_batch(inputs, targets, packed_rows, rows, length):
  """Concatenates the examples of each packed row, with segment ids and positions.

  Args:
    inputs: indexable of 1-D int arrays (all examples).
    targets: indexable of 1-D int arrays.
    packed_rows: list of rows, each a list of example indices.
    rows: rows of the batch (>= len(packed_rows)); extra rows are all pad.
    length: row length.

  Returns:
    {'inputs', 'targets', 'inputs_position', 'inputs_segmentation', 'targets_position',
    'targets_segmentation'}: int32 [rows, length]; segment 0 and position 0 on padding.
  """
  # One pass over all the batch's examples at once (no loop over rows): every token's row,
  # column, segment (its example's rank in the row, from 1) and position in its example.
  members = [i for row in packed_rows for i in row]
  row_sizes = np.fromiter((len(row) for row in packed_rows), np.int64, len(packed_rows))
  example_row = np.repeat(np.arange(len(packed_rows)), row_sizes)
  first_in_row = np.cumsum(row_sizes) - row_sizes
  rank = np.arange(len(members)) - first_in_row[example_row]          # 0-based, in its row
  batch = {}
  for key, seqs in (('inputs', inputs), ('targets', targets)):
    tokens = np.full((rows, length), PAD_ID, np.int32)
    segmentation = np.zeros((rows, length), np.int32)
    position = np.zeros((rows, length), np.int32)
    if members:
      pieces = [seqs[i] for i in members]
      sizes = np.fromiter((len(p) for p in pieces), np.int64, len(pieces))
      starts = np.cumsum(sizes) - sizes                                 # in the flat stream
      row_starts = starts[first_in_row[example_row]]                    # its row's first token
      token_row = np.repeat(example_row, sizes)
      offset = np.arange(int(sizes.sum())) - np.repeat(starts, sizes)  # within its example
      column = np.repeat(starts - row_starts, sizes) + offset
      tokens[token_row, column] = np.concatenate(pieces)
      segmentation[token_row, column] = np.repeat(rank + 1, sizes)
      position[token_row, column] = offset
    batch[key] = tokens
    batch[key + '_segmentation'] = segmentation
    batch[key + '_position'] = position
  return batch


def unpack_batch(batch):
  """Inverse of `pack_batch` (for tests and inspection): list of (inputs, targets) per row.

  Args:
    batch: a packed batch dict.

  Returns:
    List over rows of lists of (inputs, targets) 1-D arrays, one pair per segment.
  """
  rows = []
  for r in range(batch['inputs'].shape[0]):
    pairs = []
    for segment in range(1, int(batch['inputs_segmentation'][r].max(initial=0)) + 1):
      pairs.append(tuple(batch[key][r][batch[key + '_segmentation'][r] == segment]
                         for key in ('inputs', 'targets')))
    rows.append(pairs)
  return rows
