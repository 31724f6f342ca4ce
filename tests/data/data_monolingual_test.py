"""Tests for transformer_jax.data.sources.monolingual: one Multi30k language as LM `targets` batches."""
import collections

import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax import data
from transformer_jax.data.sources import monolingual
from transformer_jax.data.sources import multi30k
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.experiments import multi30k_lm


def _config(shared_data, **overrides):
  config = multi30k_lm.get_config().data
  config.update({'raw_dir': str(shared_data / 'multi30k'), 'vocab_size': 500,
                 'tokens_per_batch': 2048, **overrides})
  return config


def _raw(shared_data, split, lang):
  name = {'train': 'train', 'validation': 'val', 'test': 'test_2016_flickr'}[split]
  return multi30k.read_lines(str(shared_data / 'multi30k' / f'{name}.{lang}.gz'))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('mono'))


@pytest.fixture(scope='module')
def tokenizer(shared_data, workdir):
  return data.get_tokenizer(_config(shared_data), workdir)


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_sentences_are_the_raw_english_lines_in_order(shared_data, workdir, split):
  sentences = monolingual.load_sentences(_config(shared_data), split, workdir=workdir)
  assert sentences == _raw(shared_data, split, 'en')
  assert len(sentences) == {'train': 29000, 'validation': 1014, 'test': 1000}[split]


def test_same_source_and_target_language_picks_another_pair(shared_data, workdir):
  config = _config(shared_data, source_lang='de', target_lang='de')
  assert monolingual.load_sentences(config, 'validation', workdir=workdir) == _raw(
      shared_data, 'validation', 'de')


def test_tokenizer_is_trained_on_the_train_sentences_of_one_language(shared_data, tmp_path,
                                                                     monkeypatch):
  seen = {}
  real = tokenizer_lib.get_or_train_tokenizer

  def spy(prefix, *, sentences_fn, **kwargs):
    seen['prefix'], seen['sentences'] = prefix, list(sentences_fn())
    return real(prefix, sentences_fn=lambda: seen['sentences'], **kwargs)
  monkeypatch.setattr(tokenizer_lib, 'get_or_train_tokenizer', spy)
  tok = data.get_tokenizer(_config(shared_data, vocab_size=300), str(tmp_path))
  assert seen['sentences'] == _raw(shared_data, 'train', 'en')
  assert seen['prefix'].endswith('multi30k_mono_en_bpe300')
  assert tok.vocab_size == 300 and tok.eos_id == 1 and tok.pad_id == 0


def _rows(batch):
  return [tuple(row[row != 0]) for row in batch['targets'] if row.any()]


@pytest.mark.parametrize('pack', [False, True])
def test_one_epoch_holds_every_sentence_once_as_targets_only(shared_data, workdir, tokenizer,
                                                             pack):
  config = _config(shared_data, pack=pack)
  it = data.make_train_iterator(config, tokenizer, workdir=workdir, batch_multiple=4)
  expected = collections.Counter(
      tuple(x) for x in tokenizer.encode(_raw(shared_data, 'train', 'en'))
      if len(x) <= config.max_len)
  keys = {'targets', 'targets_position', 'targets_segmentation'} if pack else {'targets'}
  seen = collections.Counter()
  for _ in range(it.batches_in_epoch()):
    batch = next(it)
    assert set(batch) == keys
    assert batch['targets'].shape[0] % 4 == 0
    if pack:
      seen.update(tuple(seq) for row in data.unpack_batch(
          {**batch, 'inputs': batch['targets'],
           'inputs_segmentation': batch['targets_segmentation']}) for seq, _ in row)
    else:
      seen.update(_rows(batch))
  assert seen == expected
  assert it.epoch == 1


def test_resume_replays_the_same_batches(shared_data, workdir, tokenizer):
  config = _config(shared_data, pack=True)
  make = lambda: data.make_train_iterator(config, tokenizer, workdir=workdir, batch_multiple=2)
  a = make()
  for _ in range(3):
    next(a)
  b = make()
  b.set_state(a.get_state())
  for _ in range(3):
    x, y = next(a), next(b)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_eval_batches_cover_the_split_in_order(shared_data, workdir, tokenizer):
  config = _config(shared_data)
  eval_data = data.make_eval_batches(config, tokenizer, 'validation', workdir=workdir,
                                     batch_multiple=4)
  sentences = _raw(shared_data, 'validation', 'en')
  assert eval_data.references == eval_data.sources == sentences
  assert eval_data.num_examples == 1014
  assert all(set(b) == {'targets'} for b in eval_data.batches)
  rows = [row for b in eval_data.batches for row in b['targets']]
  for row, ids in zip(rows, tokenizer.encode(sentences)):
    np.testing.assert_array_equal(row[:len(ids)], ids)
    assert not row[len(ids):].any()
  assert not any(row.any() for row in rows[1014:])        # pad rows only at the end


def test_eval_batches_slice_per_process(shared_data, workdir, tokenizer):
  config = _config(shared_data)
  make = lambda **kw: data.make_eval_batches(config, tokenizer, 'test', workdir=workdir,
                                             batch_multiple=4, **kw)
  whole = make()
  halves = [make(process_index=i, process_count=2) for i in range(2)]
  for b, first, second in zip(whole.batches, halves[0].batches, halves[1].batches):
    np.testing.assert_array_equal(b['targets'],
                                  np.concatenate([first['targets'], second['targets']]))


def test_missing_raw_files_are_a_user_error(tmp_path):
  config = multi30k_lm.get_config().data
  config.raw_dir = str(tmp_path / 'nothing')
  with pytest.raises(UserError, match='raw_dir'):
    data.check_available(config, str(tmp_path))
