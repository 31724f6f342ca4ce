"""TrainIterator: endless, resumable training batches planned per epoch from
(shuffle_seed, epoch) alone, bucketed or packed, each process taking its rows; and the
feed of the training loop: `group_batches` (K same-shape batches per compiled call, each
with the iterator state after it) and `Prefetcher` (that work done ahead on a thread).
"""
import hashlib
import json
import queue
import threading

import numpy as np
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.data import batching

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


def _leading_same_shape(drawn):
  """How many of the (batch, state) pairs `drawn` share the first one's shapes, from the front."""
  shapes = [{k: np.shape(v) for k, v in batch.items()} for batch, _ in drawn]
  return next((i for i, s in enumerate(shapes) if s != shapes[0]), len(shapes))


def group_batches(batches, size_fn, start_step, num_steps):
  """Cuts `batches` into the units the loop trains by one call each, steps start..num_steps.

  A unit holds `size_fn(step)` batches of one shape (stackable for `steps.train_steps`),
  or one batch: when the next `size_fn(step)` batches change shape (bucketing) the batches
  before the change come one per unit. The order of the batches is kept, and no batch
  beyond step `num_steps` is drawn (a size that would reach past it is taken as 1).

  Args:
    batches: a TrainIterator (any iterator with `get_state()`).
    size_fn: step -> the number of steps wanted in the unit that starts there.
    start_step: steps already trained.
    num_steps: the last step.

  Yields:
    (list of host batches, the iterator state after its last batch): the position a
    checkpoint taken after the unit records, although the iterator itself may be ahead.
  """
  step, drawn, warned = start_step, [], False     # drawn: (batch, state) not yet yielded
  while step < num_steps:
    size = size_fn(step)
    size = size if step + size <= num_steps else 1
    while len(drawn) < size and _leading_same_shape(drawn) == len(drawn):
      batch = next(batches)
      drawn.append((batch, batches.get_state()))
    count = size if _leading_same_shape(drawn) >= size else 1
    if count < size and not warned:
      logging.info('batches of different shapes (bucketing) cannot share one compiled call: '
                   'those run one step per call (data.pack=True or one data.bucket_lengths '
                   'keeps every call at train.steps_per_loop steps)')
      warned = True
    unit, drawn = drawn[:count], drawn[count:]
    yield [batch for batch, _ in unit], unit[-1][1]
    step += count


class Prefetcher:
  """Iterates `items` on a background thread, keeping up to `depth` items ready.

  `next()` returns the items in order; an exception raised by `items` is raised by
  `next()` in its place (after the items before it). `close()`, or leaving the `with`
  block on any path, stops the thread and waits for it.
  """

  _END = object()

  def __init__(self, items, depth):
    self._queue = queue.Queue(maxsize=depth)
    self._stopping = threading.Event()
    self._ended = None          # set by next(): the StopIteration or error seen last
    self._thread = threading.Thread(target=self._produce, args=(items,), daemon=True,
                                    name='Prefetcher')
    self._thread.start()

  def _produce(self, items):
    try:
      for item in items:
        if not self._offer((item, None)):
          return
      self._offer((self._END, None))
    except BaseException as error:  # pylint: disable=broad-except  # raised again by next()
      self._offer((None, error))
    finally:
      if hasattr(items, 'close'):   # a generator runs its finally blocks in this thread
        items.close()

  def _offer(self, entry):
    """Puts `entry` when there is room; False once close() was called."""
    while not self._stopping.is_set():
      try:
        self._queue.put(entry, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def __iter__(self):
    return self

  def __next__(self):
    if self._ended is not None:
      raise self._ended
    item, error = self._queue.get()
    if error is None and item is self._END:
      error = StopIteration()
    if error is not None:
      self._ended = error
      raise error
    return item

  def close(self):
    self._stopping.set()
    self._thread.join()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
