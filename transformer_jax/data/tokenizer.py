"""Tokenizers with one interface: sentencepiece subwords and identity ids.

The paper (Vaswani et al., 2017, Section 5.1) uses a shared source-target subword
vocabulary (BPE for en-de); `train_tokenizer` trains one joint sentencepiece model on
both sides of the training split. Ids are fixed across both tokenizers so model and
decoding code never ask which one they got: 0 = pad, 1 = EOS (appended by `encode`,
where decoding stops), 2 = UNK, and no BOS (the decoder starts from a shifted target).
"""
import os
import re
import tempfile

import numpy as np
import sentencepiece as spm

from transformer_jax.base.errors import UserError

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
MODEL_TYPES = ('bpe', 'unigram')


def _strip(ids):
  """Ids up to (not including) the first EOS, pads dropped; ids: 1-D ints."""
  ids = [int(i) for i in np.asarray(ids).reshape(-1)]
  if EOS_ID in ids:
    ids = ids[:ids.index(EOS_ID)]
  return [i for i in ids if i != PAD_ID]


class Tokenizer:
  """A sentencepiece model with EOS appended on encode and stripped on decode."""

  pad_id = PAD_ID
  eos_id = EOS_ID
  unk_id = UNK_ID

  def __init__(self, model_path):
    self.model_path = os.fspath(model_path)
    self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
    # A model trained elsewhere with other special ids would silently corrupt
    # padding and decoding, so refuse it here.
    if (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id()) != (PAD_ID, EOS_ID, UNK_ID):
      raise UserError(
          f'sentencepiece model {self.model_path} has pad/eos/unk ids {self._sp.pad_id()}/'
          f'{self._sp.eos_id()}/{self._sp.unk_id()}, expected 0/1/2: delete it so it is retrained')

  @property
  def vocab_size(self):
    return self._sp.vocab_size()

  def encode(self, texts):
    """list[str] -> list[list[int]], each ending in EOS."""
    return [ids + [EOS_ID] for ids in self._sp.encode(list(texts))]

  def decode(self, ids):
    """One sequence of ids (list or 1-D array) -> str, stopping at the first EOS."""
    return self._sp.decode(_strip(ids))

  def pieces(self, ids):
    """The sentencepiece piece of each id (for plots and debugging)."""
    return [self._sp.id_to_piece(int(i)) for i in ids]

  def decode_batch(self, batch):
    """[batch, length] ids -> list[str]."""
    return [self.decode(ids) for ids in batch]


class IdentityTokenizer:
  """For synthetic tasks whose tokens already are ids; text is space-separated ids."""

  pad_id = PAD_ID
  eos_id = EOS_ID
  unk_id = UNK_ID

  def __init__(self, vocab_size):
    self._vocab_size = int(vocab_size)

  @property
  def vocab_size(self):
    return self._vocab_size

  def encode(self, texts):
    """list[str] of space-separated ids -> list[list[int]], each ending in EOS.

    Raises:
      UserError naming the first text (as line number) that is not ids in
      [UNK_ID + 1, vocab_size): the ids a synthetic task draws its tokens from.
    """
    encoded = []
    for number, text in enumerate(texts, start=1):
      tokens = text.split()
      if not all(t.isascii() and t.isdigit() and UNK_ID < int(t) < self._vocab_size
                 for t in tokens):
        first = UNK_ID + 1
        example = ' '.join(str(first + k % max(self._vocab_size - first, 1)) for k in (2, 6, 9))
        raise UserError(f'line {number} ({text[:40]!r}) is not a sequence of token ids: this '
                        f'copy-task run takes space-separated integer ids from {first} to '
                        f'{self._vocab_size - 1}, e.g. {example!r}')
      encoded.append([int(t) for t in tokens] + [EOS_ID])
    return encoded

  def decode(self, ids):
    """One sequence of ids -> space-joined ids before the first EOS, pads dropped."""
    return ' '.join(str(i) for i in _strip(ids))

  def pieces(self, ids):
    """Each id as text (for plots), with sentencepiece's names for pad and EOS."""
    names = {PAD_ID: '<pad>', EOS_ID: '</s>'}
    return [names.get(int(i), str(int(i))) for i in ids]

  def decode_batch(self, batch):
    """[batch, length] ids -> list[str]."""
    return [self.decode(ids) for ids in batch]


def train_tokenizer(sentences, vocab_size, model_type, path_prefix):
  """Trains a sentencepiece model on `sentences` and saves `<path_prefix>.model`.

  Training writes to a temporary prefix first and then links the finished file into
  place, so a crash never leaves half a model behind, and when several processes
  train at once the first to finish wins and all load that same file.

  Args:
    sentences: iterable of str (for a joint vocabulary: source and target lines).
    vocab_size: size of the vocabulary, special ids included.
    model_type: 'bpe' or 'unigram'.
    path_prefix: where to save; `.model` and `.vocab` are appended.

  Returns:
    A Tokenizer over the saved model.
  """
  if model_type not in MODEL_TYPES:
    raise UserError(f'unknown tokenizer type {model_type!r}: set '
                    f'--experiment.data.tokenizer_type to one of {", ".join(MODEL_TYPES)}')
  folder = os.path.dirname(os.path.abspath(path_prefix))
  os.makedirs(folder, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder) as tmp:
    tmp_prefix = os.path.join(tmp, 'spm')
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(sentences), model_prefix=tmp_prefix, vocab_size=vocab_size,
          model_type=model_type, character_coverage=1.0, pad_id=PAD_ID, eos_id=EOS_ID,
          unk_id=UNK_ID, bos_id=-1, num_threads=2, minloglevel=2)
    except RuntimeError as e:
      limit = re.search(r'value <= (\d+)', str(e))
      if limit is None:
        raise
      raise UserError(
          f'vocab_size={vocab_size} is too big for the tokenizer training text (sentencepiece '
          f'allows at most {limit.group(1)} for {model_type}): set --experiment.data.vocab_size '
          f'to {limit.group(1)} or less') from e
    _publish(tmp_prefix + '.model', path_prefix + '.model')
    os.replace(tmp_prefix + '.vocab', path_prefix + '.vocab')  # human-readable, informative
  return Tokenizer(path_prefix + '.model')


def _publish(src, dst):
  """Moves `src` to `dst` unless `dst` already exists (then the existing file wins)."""
  try:
    os.link(src, dst)  # atomic and fails if dst exists, unlike os.replace
  except FileExistsError:
    pass


def get_or_train_tokenizer(path_prefix, *, vocab_size, model_type, sentences_fn):
  """Loads `<path_prefix>.model` if present, else trains it from `sentences_fn()`.

  Reusing the file is what keeps a resumed run and a later eval on the same ids.

  Args:
    path_prefix: model file prefix; name it after the settings (vocab size, type) so a
      changed setting trains a new model instead of reusing a mismatched one.
    vocab_size: vocabulary size for training.
    model_type: 'bpe' or 'unigram'.
    sentences_fn: zero-argument callable returning the training sentences; only
      called when training is needed.

  Returns:
    A Tokenizer.
  """
  if os.path.exists(path_prefix + '.model'):
    return Tokenizer(path_prefix + '.model')
  return train_tokenizer(sentences_fn(), vocab_size, model_type, path_prefix)
