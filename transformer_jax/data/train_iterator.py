"""TrainIterator: endless, resumable training batches planned per epoch from
(shuffle_seed, epoch) alone, bucketed or packed, each process taking its rows.
"""
import hashlib
import json

import numpy as np

from transformer_jax.data import batching
from transformer_jax.errors import UserError

# The sides of an example a batch carries (with their _position/_segmentation twins);
# a language model's batches carry only ('targets',).
SIDES = ('inputs', 'targets')


def slice_rows(batch, process_index, process_count):
  """This process's contiguous share of the rows of a global batch."""
  rows = next(iter(batch.values())).shape[0]
  if rows % process_count:
    raise ValueError(f'{rows} rows do not split over {process_count} processes')
  per = rows // process_count
  return {k: v[process_index * per:(process_index + 1) * per] for k, v in batch.items()}


def keep_sides(batch, sides):
  """The keys of `batch` that belong to `sides` ('targets' keeps targets, targets_position, ...)."""
  return {k: v for k, v in batch.items() if k.split('_')[0] in sides}


class TrainIterator:
  """Endless training batches, reshuffled each epoch from (shuffle_seed, epoch).

  `next()` returns this process's rows of the global batch: a dict of int32
  [rows, length] arrays of the keys of `sides`. The state is {'epoch', 'index',
  'fingerprint'}; the fingerprint catches a resume with different data settings.
  """

  def __init__(self, examples, *, max_len, tokens_per_batch, batch_multiple, bucket_lengths=(),
               pack=False, shuffle_seed=0, process_index=0, process_count=1, sides=SIDES):
    if batch_multiple % process_count:
      raise ValueError(f'batch_multiple={batch_multiple} (global devices) is not a multiple of '
                       f'process_count={process_count}')
    lengths = batching.example_lengths(examples.inputs, examples.targets)
    keep = np.flatnonzero(lengths <= max_len)
    self.num_dropped = len(lengths) - len(keep)  # longer than max_len
    if not len(keep):
      raise UserError(f'all {len(lengths)} training examples are longer than max_len={max_len}: '
                      'raise --experiment.data.max_len')
    self._inputs = [examples.inputs[i] for i in keep]
    self._targets = [examples.targets[i] for i in keep]
    self._pack = pack
    self._sides = sides
    self._seed = shuffle_seed
    self._process = (process_index, process_count)
    if pack:
      self._length = max_len
      self._rows = batching.rows_for_length(tokens_per_batch, max_len, batch_multiple)
      self._input_lengths = np.array([len(x) for x in self._inputs])
      self._target_lengths = np.array([len(y) for y in self._targets])
    else:
      self._buckets = batching.normalize_bucket_lengths(bucket_lengths, max_len)
      # Longest bucket first, so an error names the length that needs the biggest budget.
      self._rows_per_bucket = [batching.rows_for_length(tokens_per_batch, b, batch_multiple)
                               for b in self._buckets[::-1]][::-1]
      self._bucket_of = batching.bucket_ids(lengths[keep], self._buckets)
    self.fingerprint = self._make_fingerprint(
        max_len=max_len, tokens_per_batch=tokens_per_batch, batch_multiple=batch_multiple,
        buckets=None if pack else list(self._buckets), pack=pack, shuffle_seed=shuffle_seed)
    self._epoch, self._index = 0, 0
    self._plan_epoch, self._batches = None, None  # the plan of one epoch, cached

  def _make_fingerprint(self, **settings):
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for x, y in zip(self._inputs, self._targets):
      digest.update(x.tobytes() + b'|' + y.tobytes() + b'#')
    return digest.hexdigest()[:16]

  @property
  def num_examples(self):
    """Training examples per epoch (after dropping those longer than max_len)."""
    return len(self._inputs)

  @property
  def epoch(self):
    return self._epoch

  def _plan(self, epoch):
    """The epoch's batches (cached): bucket mode (bucket, indices); pack mode rows."""
    if self._plan_epoch != epoch:
      rng = np.random.default_rng([self._seed, epoch])
      order = rng.permutation(len(self._inputs))
      if self._pack:
        self._batches = batching.plan_packed_epoch(
            order, self._input_lengths, self._target_lengths, self._length, self._rows)
      else:
        self._batches = batching.plan_bucketed_epoch(
            order, self._bucket_of, len(self._buckets), self._rows_per_bucket, rng)
      self._plan_epoch = epoch
    return self._batches

  def batches_in_epoch(self, epoch=None):
    """Number of batches of an epoch (the current one by default)."""
    return len(self._plan(self._epoch if epoch is None else epoch))

  def _materialise(self, planned):
    """This process's rows of one planned global batch."""
    process_index, process_count = self._process
    if self._pack:
      rows, length = self._rows, self._length
    else:
      bucket, planned = planned
      rows, length = self._rows_per_bucket[bucket], self._buckets[bucket]
    per = rows // process_count
    mine = planned[process_index * per:(process_index + 1) * per]  # may be short or empty
    if self._pack:
      batch = batching.pack_batch(self._inputs, self._targets, mine, per, length)
    else:
      batch = batching.pad_batch([self._inputs[i] for i in mine],
                                 [self._targets[i] for i in mine], per, length)
    return keep_sides(batch, self._sides)

  def __iter__(self):
    return self

  def __next__(self):
    batches = self._plan(self._epoch)
    batch = self._materialise(batches[self._index])
    self._index += 1
    if self._index == len(batches):
      self._epoch, self._index = self._epoch + 1, 0
    return batch

  def get_state(self):
    """JSON-serialisable position: the next batch is batch `index` of `epoch`."""
    return {'epoch': self._epoch, 'index': self._index, 'fingerprint': self.fingerprint}

  def set_state(self, state):
    """Continues from a `get_state()` of an iterator over the same data and settings."""
    if state.get('fingerprint') != self.fingerprint:
      raise UserError(
          'the data iterator state in the checkpoint was saved with other data or data settings '
          f'(fingerprint {state.get("fingerprint")} != {self.fingerprint}): resume with the '
          'original --experiment.data settings, or start a new --workdir')
    epoch, index = int(state['epoch']), int(state['index'])
    if not 0 <= index < self.batches_in_epoch(epoch):
      raise UserError(f'data iterator state {state} is out of range: start a new --workdir')
    self._epoch, self._index = epoch, index
