"""Dataset 'word2vec_text': (center, context, negatives) rows for word2vec (Mikolov et al., 2013).

Text: the English side of Multi30k train (`data.raw_dir`) and the SST-2 train sentences
(`data.sst2_dir`, `train.tsv.gz` with header `text<TAB>label`), lowercased and split into
words by WORD_PATTERN. SST-2's 67,349 training rows are phrases of ~7k parsed sentences, most
of them inside a longer row; `outermost_rows` keeps each sentence once (6,854 rows, 118k of
the 584k words), so a rare word is not seen over and over in the same context. Words seen
fewer than `data.min_count` times are dropped from the text, as in the word2vec tool. The
tokenizer (`WordTokenizer`) is saved as `<workdir>/tokenizer/word_vocab.txt`
(`word<TAB>count`, id = line number) and reloaded.

Each epoch, from `(shuffle_seed, epoch)` alone:
  * subsampling of frequent words (Mikolov et al., 2013b, §2.3, as the C tool computes it):
    a word of corpus frequency f is kept with probability min(1, (sqrt(f / t) + 1) t / f),
    t = `data.subsample` (0 keeps every word);
  * a dynamic window: each kept word draws b uniformly from 1..`data.window` and sees the
    b kept words on each side within its sentence;
  * skip-gram rows (center [1], context [1]) for every (word, neighbour), or CBOW rows
    (center [1], context [2 * window] padded with 0) for every word with a neighbour, in a
    shuffled order, `data.pairs_per_batch` rows a batch (the last partial batch is dropped);
  * `data.num_negatives` noise words a row from the unigram^0.75 distribution, drawn per
    batch from (shuffle_seed, epoch, index).
The iterator state is (epoch, index, fingerprint), so resuming is bitwise. Eval rows are made
the same way from Multi30k validation/test English with a fixed seed.
"""
import hashlib
import json
import os
import re
from typing import List, Sequence

import numpy as np

from transformer_jax.base.errors import UserError
from transformer_jax.data import pipeline
from transformer_jax.data import raw_text
from transformer_jax.data.sources import multi30k
from transformer_jax.data.sources import sst2

PAD_ID = 0
UNK_ID = 1
SPECIALS = ('<pad>', '<unk>')
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")
VOCAB_FILE = 'word_vocab.txt'
SST2_FILE = 'train.tsv.gz'
UNIGRAM_POWER = 0.75
EVAL_SEED = 1234          # eval rows are a fixed sample: the held-out loss is comparable


def words(text: str) -> List[str]:
  """Lowercased words of `text` (letters/digits, inner apostrophes and hyphens kept)."""
  return WORD_PATTERN.findall(text.lower())


class WordTokenizer:
  """Whole words -> ids: 0 = pad, 1 = unknown, then words by falling count.

  `eos_id` is the pad id: nothing here ends in EOS (decoding is never asked for).
  """

  pad_id = PAD_ID
  unk_id = UNK_ID
  eos_id = PAD_ID

  def __init__(self, vocab: Sequence[str], counts: Sequence[int]):
    self.vocab = list(vocab)
    self.counts = np.asarray(counts, np.int64)
    self._ids = {w: i for i, w in enumerate(self.vocab)}

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  def id_of(self, word: str) -> int:
    return self._ids.get(word, UNK_ID)

  def encode(self, texts):
    """list[str] -> list[list[int]] (unknown words map to UNK_ID)."""
    return [[self.id_of(w) for w in words(text)] for text in texts]

  def decode(self, ids):
    """Ids -> space-joined words, pads dropped."""
    return ' '.join(self.vocab[int(i)] for i in np.asarray(ids).reshape(-1) if int(i) != PAD_ID)

  def decode_batch(self, batch):
    return [self.decode(ids) for ids in batch]

  def save(self, path: str) -> None:
    """`word<TAB>count` per line, written to a temporary file first and renamed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(f'{w}\t{c}\n' for w, c in zip(self.vocab, self.counts))
    os.replace(tmp, path)

  @classmethod
  def load(cls, path: str) -> 'WordTokenizer':
    with open(path, encoding='utf-8') as f:
      rows = [line.rstrip('\n').split('\t') for line in f]
    return cls([r[0] for r in rows], [int(r[1]) for r in rows])

  @classmethod
  def build(cls, sentences: Sequence[str], min_count: int) -> 'WordTokenizer':
    """Words seen at least `min_count` times, most frequent first (ties alphabetical)."""
    counts = {}
    for sentence in sentences:
      for w in words(sentence):
        counts[w] = counts.get(w, 0) + 1
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return cls(list(SPECIALS) + kept, [0, 0] + [counts[w] for w in kept])


def read_sst2_sentences(path: str) -> List[str]:
  """The `text` column of an SST-2 `text<TAB>label` tsv.gz file (malformed lines: UserError)."""
  return sst2.read_tsv(path)[0]


def outermost_rows(rows: Sequence[str]) -> List[str]:
  """The rows whose words are not a contiguous part of a longer (or earlier equal) row.

  Longest first, each row is looked up only in the kept rows that hold its rarest word so
  far (an inverted index), so the 67k SST-2 rows take about a second.

  Args:
    rows: texts; compared as their `words`.

  Returns:
    The kept rows, unchanged, in their original order (rows without words are dropped).
  """
  texts = [' '.join(words(row)) for row in rows]
  order = sorted(range(len(rows)), key=lambda i: -len(texts[i]))
  kept, index = [], {}               # index: word -> numbers of the kept rows holding it
  for i in order:
    vocabulary = set(texts[i].split())
    if not vocabulary:
      continue
    holders = min((index.get(w, ()) for w in vocabulary), key=len)
    padded = f' {texts[i]} '
    if any(padded in kept[j][1] for j in holders):
      continue
    for w in vocabulary:
      index.setdefault(w, []).append(len(kept))
    kept.append((i, padded))
  return [rows[i] for i, _ in sorted(kept)]


def _sst2_path(data_config) -> str:
  return os.path.join(data_config.sst2_dir, SST2_FILE)


def check_available(data_config, workdir):
  """Raises UserError, before anything is written, unless every file the text is read from
  is there and well formed (read whole: the iterator reads them again each run anyway)."""
  del workdir
  multi30k.check_raw_files(data_config.raw_dir, ('en', 'de'))   # as _multi30k_english reads
  raw_text.check_folder(data_config.sst2_dir, 'data.sst2_dir', SST2_FILE)
  if not os.path.isfile(_sst2_path(data_config)):
    raise UserError(f'no SST-2 file {os.path.abspath(_sst2_path(data_config))}: set '
                    '--experiment.data.sst2_dir to the folder holding train.tsv.gz '
                    '(GLUE SST-2, header "text<TAB>label")')
  read_sst2_sentences(_sst2_path(data_config))


def _multi30k_english(data_config, split) -> List[str]:
  return multi30k.load_text_split(data_config.raw_dir, split, 'en', 'de')[0]


def train_sentences(data_config) -> List[str]:
  """Multi30k train English, then the SST-2 train rows not inside a longer row."""
  sst2 = outermost_rows(read_sst2_sentences(_sst2_path(data_config)))
  return _multi30k_english(data_config, 'train') + sst2


def get_tokenizer(data_config, workdir) -> WordTokenizer:
  """The word vocabulary of the training text, built once and reloaded from the workdir."""
  path = os.path.join(workdir, 'tokenizer', VOCAB_FILE)
  if os.path.exists(path):
    return WordTokenizer.load(path)
  tokenizer = WordTokenizer.build(train_sentences(data_config), data_config.min_count)
  if tokenizer.vocab_size <= len(SPECIALS):
    raise UserError(f'no word occurs min_count={data_config.min_count} times in the training '
                    'text: lower --experiment.data.min_count')
  tokenizer.save(path)
  return tokenizer


class Corpus:
  """Known-word ids of a list of sentences, flattened, with each word's sentence number."""

  def __init__(self, tokenizer: WordTokenizer, sentences: Sequence[str]):
    ids = [[i for i in s if i != UNK_ID] for s in tokenizer.encode(sentences)]
    self.ids = np.fromiter((i for s in ids for i in s), np.int32)
    self.sentence = np.repeat(np.arange(len(ids)), [len(s) for s in ids]).astype(np.int32)
    self.vocab_size = tokenizer.vocab_size


def keep_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
  """Probability of keeping each word id: min(1, (sqrt(f/t) + 1) t/f), f its frequency."""
  if t <= 0:
    return np.ones(len(counts))
  freq = counts / max(counts.sum(), 1)
  with np.errstate(divide='ignore', invalid='ignore'):
    keep = (np.sqrt(freq / t) + 1) * t / freq
  return np.where(freq > 0, np.minimum(keep, 1.0), 1.0)


def noise_distribution(counts: np.ndarray) -> np.ndarray:
  """Unigram^0.75 over word ids (pad and unknown get 0)."""
  weights = counts.astype(np.float64) ** UNIGRAM_POWER
  weights[:len(SPECIALS)] = 0
  return weights / weights.sum()


def context_windows(ids, sentence, window, rng):
  """Each word's neighbours within a dynamic window, inside its sentence.

  Args:
    ids: int32 [n] word ids (subsampled).
    sentence: [n] sentence number of each word.
    window: largest window W.
    rng: numpy Generator; draws each word's window b in 1..W.

  Returns:
    int32 [n, 2W]: ids at offsets -W..-1, 1..W, with 0 where the offset is outside the
    sentence or beyond b.
  """
  n = len(ids)
  reach = rng.integers(1, window + 1, size=n)
  offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
  where = np.arange(n)[:, None] + offsets[None, :]              # [n, 2W]
  inside = (where >= 0) & (where < n)
  where = np.clip(where, 0, max(n - 1, 0))
  valid = inside & (sentence[where] == sentence[:, None]) & (np.abs(offsets) <= reach[:, None])
  return np.where(valid, ids[where], PAD_ID).astype(np.int32)


def make_rows(corpus: Corpus, counts, *, mode, window, subsample, rng):
  """All (center, context) rows of one pass, shuffled: dict of center [R, 1], context [R, C]."""
  keep = rng.random(len(corpus.ids)) < keep_probabilities(counts, subsample)[corpus.ids]
  ids, sentence = corpus.ids[keep], corpus.sentence[keep]
  context = context_windows(ids, sentence, window, rng)
  if mode == 'cbow':
    rows = np.flatnonzero((context != PAD_ID).any(axis=1))
    center, context = ids[rows, None], context[rows]
  else:
    word, slot = np.nonzero(context != PAD_ID)
    center, context = ids[word, None], context[word, slot, None]
  order = rng.permutation(len(center))
  return {'center': center[order], 'context': context[order]}


def _negatives(noise, rows, k, seed):
  rng = np.random.default_rng(seed)
  return rng.choice(len(noise), size=(rows, k), p=noise).astype(np.int32)


def _global_rows(data_config, batch_multiple, process_count):
  rows = int(data_config.pairs_per_batch)
  if batch_multiple % process_count:
    raise ValueError(f'batch_multiple={batch_multiple} is not a multiple of '
                     f'process_count={process_count}')
  if rows <= 0 or rows % batch_multiple:
    raise UserError(f'data.pairs_per_batch={rows} is not a positive multiple of '
                    f'{batch_multiple} (the global device count): choose a multiple')
  return rows


class WordPairIterator:
  """Endless word2vec batches, replanned each epoch from (shuffle_seed, epoch).

  `next()` gives this process's rows: center int32 [rows, 1], context int32 [rows, 1]
  (skip-gram) or [rows, 2 * window] (CBOW), negatives int32 [rows, num_negatives].
  """

  def __init__(self, corpus, tokenizer, data_config, mode, *, batch_multiple, process_index=0,
               process_count=1):
    self._corpus = corpus
    self._counts = np.asarray(tokenizer.counts)
    self._noise = noise_distribution(tokenizer.counts)
    self._settings = dict(mode=mode, window=int(data_config.window),
                          subsample=float(data_config.subsample))
    self._k = int(data_config.num_negatives)
    self._rows = _global_rows(data_config, batch_multiple, process_count)
    self._seed = int(data_config.shuffle_seed)
    self._process = (process_index, process_count)
    digest = hashlib.sha256(json.dumps(dict(
        self._settings, k=self._k, rows=self._rows, seed=self._seed)).encode())
    digest.update(corpus.ids.tobytes() + corpus.sentence.tobytes())
    self.fingerprint = digest.hexdigest()[:16]
    self._epoch, self._index = 0, 0
    self._plan_epoch, self._plan = None, None

  @property
  def num_examples(self):
    """Words of the training text (before subsampling)."""
    return len(self._corpus.ids)

  def _rows_of(self, epoch):
    if self._plan_epoch != epoch:
      rng = np.random.default_rng([self._seed, epoch])
      self._plan = make_rows(self._corpus, self._counts, rng=rng, **self._settings)
      self._plan_epoch = epoch
      if len(self._plan['center']) < self._rows:
        raise UserError(f'one pass over the text gives {len(self._plan["center"])} rows, fewer '
                        f'than data.pairs_per_batch={self._rows}: lower pairs_per_batch')
    return self._plan

  def batches_in_epoch(self, epoch=None):
    plan = self._rows_of(self._epoch if epoch is None else epoch)
    return len(plan['center']) // self._rows

  def __iter__(self):
    return self

  def __next__(self):
    plan = self._rows_of(self._epoch)
    span = slice(self._index * self._rows, (self._index + 1) * self._rows)
    batch = {key: value[span] for key, value in plan.items()}
    batch['negatives'] = _negatives(self._noise, self._rows, self._k,
                                    [self._seed, self._epoch, self._index])
    self._index += 1
    if self._index == self.batches_in_epoch():
      self._epoch, self._index = self._epoch + 1, 0
    return pipeline.slice_rows(batch, *self._process)

  # Same position, fingerprint check and errors as the translation iterator.
  get_state = pipeline.TrainIterator.get_state
  set_state = pipeline.TrainIterator.set_state


def make_train_iterator(data_config, tokenizer, *, workdir, batch_multiple, process_index=0,
                        process_count=1):
  """WordPairIterator over the training text (see the module docstring)."""
  del workdir
  corpus = Corpus(tokenizer, train_sentences(data_config))
  return WordPairIterator(corpus, tokenizer, data_config, data_config.word2vec_mode,
                          batch_multiple=batch_multiple, process_index=process_index,
                          process_count=process_count)


def make_eval_batches(data_config, tokenizer, split, *, workdir, batch_multiple, process_index=0,
                      process_count=1, rows_per_batch=None, max_input_len=None):
  """Rows from Multi30k `split` English, made once with EVAL_SEED; pad rows only at the end."""
  del workdir, max_input_len       # word pairs, not sequences: nothing to cut
  sentences = _multi30k_english(data_config, split)
  corpus = Corpus(tokenizer, sentences)
  rng = np.random.default_rng(EVAL_SEED)
  rows = make_rows(corpus, np.asarray(tokenizer.counts), mode=data_config.word2vec_mode,
                   window=int(data_config.window),
                   subsample=float(data_config.subsample), rng=rng)
  per = rows_per_batch or _global_rows(data_config, batch_multiple, process_count)
  if per % batch_multiple:
    raise UserError(f'eval rows_per_batch={per} is not a multiple of batch_multiple='
                    f'{batch_multiple} (the global device count): choose a multiple')
  total = len(rows['center'])
  if not total:
    raise UserError(f'split {split!r} gives no word pairs: check data.raw_dir and min_count')
  noise = noise_distribution(tokenizer.counts)
  batches = []
  for number, start in enumerate(range(0, total, per)):
    batch = {key: _pad_rows(value[start:start + per], per) for key, value in rows.items()}
    batch['negatives'] = _negatives(noise, per, int(data_config.num_negatives),
                                    [EVAL_SEED, number])
    batches.append(pipeline.slice_rows(
        batch, process_index, process_count))
  return pipeline.EvalData(batches, sentences, sentences, total, 0)


def _pad_rows(array, rows):
  """`array` [r, ...] padded with zero rows to [rows, ...]."""
  return np.concatenate([array, np.zeros((rows - len(array),) + array.shape[1:], array.dtype)])
