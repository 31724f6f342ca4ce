"""Tests for transformer_jax.data.tokenizer."""
import os

import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data.sources import multi30k
from transformer_jax.data import tokenizer as tokenizer_lib

SENTENCES = [
    'a man rides a horse on the beach .',
    'two dogs play in the snow .',
    'ein mann reitet ein pferd am strand .',
    'zwei hunde spielen im schnee .',
    'a woman is reading a book in the park .',
    'eine frau liest ein buch im park .',
] * 20


@pytest.fixture(scope='module')
def bpe(tmp_path_factory):
  prefix = os.path.join(tmp_path_factory.mktemp('spm'), 'bpe')
  return tokenizer_lib.train_tokenizer(SENTENCES, 60, 'bpe', prefix)


def test_special_ids(bpe):
  assert (bpe.pad_id, bpe.eos_id, bpe.unk_id) == (0, 1, 2)
  assert bpe.vocab_size == 60
  assert os.path.exists(bpe.model_path)


def test_encode_appends_eos_and_round_trips(bpe):
  ids = bpe.encode(SENTENCES[:6])
  assert all(seq[-1] == 1 and 1 not in seq[:-1] and 0 not in seq for seq in ids)
  assert [bpe.decode(seq) for seq in ids] == SENTENCES[:6]


def test_decode_stops_at_eos_and_drops_pads(bpe):
  (ids,) = bpe.encode(['two dogs play'])
  padded = np.array(ids + [0, 0] + bpe.encode(['in the snow'])[0])
  assert bpe.decode(padded) == 'two dogs play'
  assert bpe.decode([0] + ids[:-1]) == 'two dogs play'  # no EOS: decode everything
  batch = np.zeros((2, 12), np.int32)
  batch[0, :len(ids)] = ids
  assert bpe.decode_batch(batch) == ['two dogs play', '']


def test_unigram_trains(tmp_path):
  tok = tokenizer_lib.train_tokenizer(SENTENCES, 50, 'unigram', str(tmp_path / 'uni'))
  assert tok.decode(tok.encode([SENTENCES[1]])[0]) == SENTENCES[1]


def test_too_big_vocab_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match=r'vocab_size=5000 is too big.*--experiment.data.vocab_size'):
    tokenizer_lib.train_tokenizer(SENTENCES, 5000, 'bpe', str(tmp_path / 'big'))
  assert not os.path.exists(tmp_path / 'big.model')


def test_unknown_model_type_is_a_user_error(tmp_path):
  with pytest.raises(UserError, match='tokenizer_type'):
    tokenizer_lib.train_tokenizer(SENTENCES, 50, 'wordpiece', str(tmp_path / 'x'))


def test_get_or_train_reuses_the_model_file(tmp_path):
  prefix = str(tmp_path / 'tok' / 'spm')
  first = tokenizer_lib.get_or_train_tokenizer(prefix, vocab_size=60, model_type='bpe',
                                               sentences_fn=lambda: SENTENCES)
  def fail():
    raise AssertionError('must not retrain')
  again = tokenizer_lib.get_or_train_tokenizer(prefix, vocab_size=60, model_type='bpe',
                                               sentences_fn=fail)
  assert again.encode(SENTENCES[:3]) == first.encode(SENTENCES[:3])


def test_existing_model_wins_over_a_concurrent_training(tmp_path):
  prefix = str(tmp_path / 'spm')
  first = tokenizer_lib.train_tokenizer(SENTENCES, 60, 'bpe', prefix)
  with open(prefix + '.model', 'rb') as f:
    before = f.read()
  # A second process finishing later (here with another vocab) must not replace it.
  second = tokenizer_lib.train_tokenizer(SENTENCES, 50, 'bpe', prefix)
  with open(prefix + '.model', 'rb') as f:
    assert f.read() == before
  assert second.vocab_size == first.vocab_size == 60


def test_identity_tokenizer():
  tok = tokenizer_lib.IdentityTokenizer(32)
  assert tok.vocab_size == 32 and (tok.pad_id, tok.eos_id, tok.unk_id) == (0, 1, 2)
  assert tok.encode(['5 7 9', '']) == [[5, 7, 9, 1], [1]]
  assert tok.decode(np.array([5, 7, 9, 1, 4, 0])) == '5 7 9'
  assert tok.decode_batch(np.array([[3, 1, 0], [0, 0, 0]])) == ['3', '']


def test_multi30k_joint_bpe_round_trip(shared_data, tmp_path):
  raw_dir = os.path.join(shared_data, 'multi30k')
  en, de = multi30k.load_text_split(raw_dir, 'train', 'en', 'de')
  tok = tokenizer_lib.train_tokenizer(en + de, 8000, 'bpe', str(tmp_path / 'm30k'))
  val_en, val_de = multi30k.load_text_split(raw_dir, 'validation', 'en', 'de')
  lines = val_en + val_de
  decoded = [tok.decode(ids) for ids in tok.encode(lines)]
  # Only NFKC normalisation and collapsed double spaces may change a line.
  same = sum(d == s for d, s in zip(decoded, lines))
  assert same >= 0.99 * len(lines)
  assert decoded[0] == 'A group of men are loading cotton onto a truck'
