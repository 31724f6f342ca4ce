"""What the trainer calls: tokenizer, resumable training batches, and eval batches.

Data flow: a TFDS builder (array_record, prepared once under `data_dir`) -> the
split read in one batched call of its grain-compatible data source -> token ids
held in memory (Multi30k is 29k pairs; tokenizing it takes ~0.1 s) -> batches planned
per epoch with numpy from `(shuffle_seed, epoch)` alone. A batch is therefore a pure
function of (epoch, index in epoch), which is all the iterator state holds: resuming
replays exactly the batches the uninterrupted run would have seen.

Multi-host: every process plans the same global batches and materialises only its
own contiguous slice of rows, so all processes get equal shapes at every step.
"""
import dataclasses
import hashlib
import importlib
import json
import os

import numpy as np

from transformer_jax.data import batching
from transformer_jax.data import copy_task
from transformer_jax.data import multi30k
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.errors import UserError

COPY_TASKS = copy_task.TASKS
# Datasets of other layouts than (inputs, targets) translation pairs live in their own
# modules, each with check_available, get_tokenizer, make_train_iterator and
# make_eval_batches of the same signatures as the functions here.
OTHER_LAYOUTS = {
    'multi30k_mono': 'transformer_jax.data.monolingual',   # sentences of one language (LM)
    'sst2': 'transformer_jax.data.sst2',                   # sentence + label (classifier)
    'word2vec_text': 'transformer_jax.data.word_pairs',    # (center, context, negatives)
}
DATASETS = COPY_TASKS + ('multi30k', 'wmt14') + tuple(OTHER_LAYOUTS)
# WMT 2014 en-de as TFDS prepares it (the paper's data); read only where already prepared.
WMT14_NAME = 'wmt14_translate/de-en'
# Sentences the WMT tokenizer is trained on (sentencepiece needs no more to learn 37k pieces).
WMT14_TOKENIZER_PAIRS = 1_000_000
SPLITS = ('train', 'validation', 'test')
# The sides of an example a batch carries (with their _position/_segmentation twins);
# a language model's batches carry only ('targets',).
SIDES = ('inputs', 'targets')


@dataclasses.dataclass
class Examples:
  """One split in memory, in the builder's (original) order.

  Attributes:
    inputs: list of int32 [input_length] arrays, each ending in EOS.
    targets: list of int32 [target_length] arrays, each ending in EOS.
    sources: the source side as text (original sentences, or id strings).
    references: the target side as text, for BLEU.
  """
  inputs: list
  targets: list
  sources: list
  references: list

  def __len__(self):
    return len(self.inputs)


def _data_dir(data_config, workdir):
  return os.path.abspath(data_config.data_dir or os.path.join(workdir, 'tfds'))


def _check_dataset(data_config):
  if data_config.dataset not in DATASETS:
    raise UserError(f'unknown dataset {data_config.dataset!r}: set --experiment.data.dataset '
                    f'to one of {", ".join(DATASETS)}')


def _other_layout(data_config):
  """The module of a dataset listed in OTHER_LAYOUTS, or None for translation pairs."""
  _check_dataset(data_config)
  path = OTHER_LAYOUTS.get(data_config.dataset)
  return importlib.import_module(path) if path else None


def check_available(data_config, workdir):
  """Raises UserError, before anything is written, if the data named by the config cannot be had."""
  if _other_layout(data_config):
    return _other_layout(data_config).check_available(data_config, workdir)
  if data_config.dataset == 'multi30k':
    pair = multi30k.pair_name(data_config.source_lang, data_config.target_lang)
    if not os.path.isdir(os.path.join(_data_dir(data_config, workdir), 'multi30k', pair)):
      multi30k.check_raw_dir(data_config.raw_dir, (data_config.source_lang, data_config.target_lang))
  elif data_config.dataset == 'wmt14':
    _wmt14_source(data_config, 'validation', workdir)


def _copy_config(data_config):
  return copy_task.make_config(
      data_config.dataset, min_len=data_config.copy_min_len, max_len=data_config.copy_max_len,
      vocab_size=data_config.copy_vocab_size, num_train=data_config.copy_num_train,
      num_eval=data_config.copy_num_eval, seed=data_config.copy_seed)


def _read_records(data_config, split, workdir):
  """All records of a split as a list of dicts (bytes for text, arrays for ids)."""
  if split not in SPLITS:
    raise UserError(f'unknown split {split!r}: use one of {", ".join(SPLITS)}')
  if data_config.dataset == 'wmt14':
    return read_all(_wmt14_source(data_config, split, workdir))
  if data_config.dataset in COPY_TASKS:
    builder = copy_task.prepare(_data_dir(data_config, workdir), _copy_config(data_config))
  else:
    builder = multi30k.prepare(_data_dir(data_config, workdir), data_config.source_lang,
                               data_config.target_lang, data_config.raw_dir)
  return read_all(builder.as_data_source(split))


def read_all(source, chunk: int = 65536) -> list:
  """Every record of a grain-compatible random-access source (TFDS `as_data_source`), in
  stored order, read with its batched `__getitems__`: ~10x less CPU than item by item
  (1.4 s against 12 s for SST-2 train). Batching then works on numpy from memory."""
  records = []
  for start in range(0, len(source), chunk):
    records.extend(source.__getitems__(range(start, min(start + chunk, len(source)))))
  return records


def _wmt14_source(data_config, split, workdir):
  """The prepared array_record source of WMT14 de-en (never downloaded or built here)."""
  import tensorflow_datasets as tfds
  data_dir = _data_dir(data_config, workdir)
  try:
    return tfds.data_source(WMT14_NAME, data_dir=data_dir, split=split, download=False)
  except Exception as e:  # pylint: disable=broad-except  (tfds raises several kinds)
    raise UserError(
        f'{WMT14_NAME} is not prepared as array_record in {data_dir} ({type(e).__name__}): set '
        '--experiment.data.data_dir to a TFDS folder holding it, prepared on a machine with the '
        'data by `tfds build wmt14_translate/de-en --file_format=array_record`') from None


def _text_pair(data_config, split, workdir):
  """(sources, targets) as lists of str, for Multi30k."""
  records = _read_records(data_config, split, workdir)
  return ([r[data_config.source_lang].decode('utf-8') for r in records],
          [r[data_config.target_lang].decode('utf-8') for r in records])


def get_tokenizer(data_config, workdir):
  """The tokenizer of the experiment.

  Multi30k: a joint sentencepiece model trained on source + target of the train
  split, saved as `<workdir>/tokenizer/multi30k_<pair>_<type><vocab>.model` and reused
  when present. Copy tasks: an IdentityTokenizer over `copy_vocab_size` ids.

  Multi-host: every process may call this at once; the first finished model wins and
  all load it (see tokenizer.train_tokenizer).
  """
  if _other_layout(data_config):
    return _other_layout(data_config).get_tokenizer(data_config, workdir)
  if data_config.dataset in COPY_TASKS:
    return tokenizer_lib.IdentityTokenizer(_copy_config(data_config).vocab_size)
  if data_config.dataset == 'wmt14':
    pair, limit = 'de-en', WMT14_TOKENIZER_PAIRS
  else:
    pair, limit = multi30k.pair_name(data_config.source_lang, data_config.target_lang), None
  prefix = os.path.join(workdir, 'tokenizer', f'{data_config.dataset}_{pair}_'
                        f'{data_config.tokenizer_type}{data_config.vocab_size}')

  def sentences_fn():
    sources, targets = _text_pair(data_config, 'train', workdir)
    return sources[:limit] + targets[:limit]

  return tokenizer_lib.get_or_train_tokenizer(
      prefix, vocab_size=data_config.vocab_size, model_type=data_config.tokenizer_type,
      sentences_fn=sentences_fn)


def load_examples(data_config, tokenizer, split, *, workdir):
  """Reads and tokenizes one split, in original order; nothing is dropped here."""
  _check_dataset(data_config)
  if data_config.dataset in COPY_TASKS:
    records = _read_records(data_config, split, workdir)
    inputs = [np.asarray(r['inputs'], np.int32) for r in records]
    targets = [np.asarray(r['targets'], np.int32) for r in records]
    return Examples(inputs, targets, [tokenizer.decode(x) for x in inputs],
                    [tokenizer.decode(y) for y in targets])
  sources, references = _text_pair(data_config, split, workdir)
  inputs = [np.asarray(ids, np.int32) for ids in tokenizer.encode(sources)]
  targets = [np.asarray(ids, np.int32) for ids in tokenizer.encode(references)]
  return Examples(inputs, targets, sources, references)


def _slice_rows(batch, process_index, process_count):
  """This process's contiguous share of the rows of a global batch."""
  rows = next(iter(batch.values())).shape[0]
  if rows % process_count:
    raise ValueError(f'{rows} rows do not split over {process_count} processes')
  per = rows // process_count
  return {k: v[process_index * per:(process_index + 1) * per] for k, v in batch.items()}


def _keep_sides(batch, sides):
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
    return _keep_sides(batch, self._sides)

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


def make_train_iterator(data_config, tokenizer, *, workdir, batch_multiple, process_index=0,
                        process_count=1):
  """The training iterator of `data_config` (see TrainIterator).

  Args:
    data_config: the experiment's `data` ConfigDict.
    tokenizer: from `get_tokenizer`.
    workdir: run folder (tokenizer, default data_dir).
    batch_multiple: global device count; global rows are a multiple of it.
    process_index: this process (jax.process_index()).
    process_count: number of processes (jax.process_count()).

  Returns:
    A TrainIterator yielding this process's [global_rows / process_count, length] slices.
    Bucketed: length is a bucket length and global rows = tokens_per_batch // length,
    down to a multiple of batch_multiple. Packed (`pack=True`): length is max_len and
    bucket_lengths is unused.
  """
  if _other_layout(data_config):
    return _other_layout(data_config).make_train_iterator(
        data_config, tokenizer, workdir=workdir, batch_multiple=batch_multiple,
        process_index=process_index, process_count=process_count)
  examples = load_examples(data_config, tokenizer, 'train', workdir=workdir)
  return train_iterator_of(examples, data_config, batch_multiple=batch_multiple,
                           process_index=process_index, process_count=process_count)


def train_iterator_of(examples, data_config, *, batch_multiple, process_index=0,
                      process_count=1, sides=SIDES):
  """`make_train_iterator` for `examples` already in memory; batches carry `sides`."""
  return TrainIterator(
      examples, max_len=data_config.max_len, tokens_per_batch=data_config.tokens_per_batch,
      batch_multiple=batch_multiple, bucket_lengths=tuple(data_config.bucket_lengths),
      pack=data_config.pack, shuffle_seed=data_config.shuffle_seed,
      process_index=process_index, process_count=process_count, sides=sides)


@dataclasses.dataclass
class EvalData:
  """A whole split as fixed-shape batches, in original order.

  Attributes:
    batches: list of dicts of int32 [rows / process_count, length] arrays (this
      process's slice); pad rows (targets all 0) only at the end of the last batch.
    sources: the split's source sentences, in order (all processes get all of them).
    references: the split's target sentences, in order.
    num_examples: real examples; predictions of the gathered global batches,
      concatenated, line up with `references` for the first num_examples rows.
    num_longer_than_max_len: examples kept although longer than max_len.
  """
  batches: list
  sources: list
  references: list
  num_examples: int
  num_longer_than_max_len: int


def make_eval_batches(data_config, tokenizer, split, *, workdir, batch_multiple, process_index=0,
                      process_count=1, rows_per_batch=None):
  """Every example of `split` once, in order, in padded batches of one row count.

  Each batch is padded to the smallest bucket length holding its longest example, so
  there is at most one shape per bucket. Examples longer than max_len are kept (an
  eval set is never trimmed) and padded to a multiple of 8.

  Args:
    data_config: the experiment's `data` ConfigDict.
    tokenizer: from `get_tokenizer`.
    split: 'validation' or 'test' (or 'train').
    workdir: run folder.
    batch_multiple: global device count; rows are a multiple of it.
    process_index: this process.
    process_count: number of processes.
    rows_per_batch: global rows per batch; default: the token budget at the longest
      bucket the split needs (a multiple of batch_multiple).

  Returns:
    EvalData.
  """
  if _other_layout(data_config):
    return _other_layout(data_config).make_eval_batches(
        data_config, tokenizer, split, workdir=workdir, batch_multiple=batch_multiple,
        process_index=process_index, process_count=process_count, rows_per_batch=rows_per_batch)
  examples = load_examples(data_config, tokenizer, split, workdir=workdir)
  return eval_data_of(examples, data_config, split, batch_multiple=batch_multiple,
                      process_index=process_index, process_count=process_count,
                      rows_per_batch=rows_per_batch)


def eval_data_of(examples, data_config, split, *, batch_multiple, process_index=0,
                 process_count=1, rows_per_batch=None, sides=SIDES):
  """`make_eval_batches` for `examples` already in memory (any dataset module may call it);
  batches carry the keys of `sides`."""
  if not len(examples):
    raise UserError(f'split {split!r} of {data_config.dataset} is empty: check the data files')
  lengths = batching.example_lengths(examples.inputs, examples.targets)
  buckets, rows = batching.eval_layout(data_config.bucket_lengths, data_config.max_len,
                                       int(lengths.max()), data_config.tokens_per_batch,
                                       batch_multiple)
  rows = rows_per_batch or rows
  if rows % batch_multiple:
    raise UserError(f'eval rows_per_batch={rows} is not a multiple of batch_multiple='
                    f'{batch_multiple} (the global device count): choose a multiple')
  batches = []
  for start in range(0, len(examples), rows):
    stop = min(start + rows, len(examples))
    length = buckets[batching.bucket_ids(int(lengths[start:stop].max()), buckets)]
    batch = batching.pad_batch(examples.inputs[start:stop], examples.targets[start:stop],
                               rows, length)
    batches.append(_keep_sides(_slice_rows(batch, process_index, process_count), sides))
  return EvalData(batches, examples.sources, examples.references, len(examples),
                  int((lengths > data_config.max_len).sum()))
