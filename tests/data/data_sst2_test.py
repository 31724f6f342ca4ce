"""Tests for transformer_jax.data.sources.sst2 (TFDS builder over GLUE SST-2 and its batches)."""
import gzip
import os

import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data import pipeline
from transformer_jax.data.sources import sst2
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.run import defaults as base

FIRST_TRAIN = ('hide new secretions from the parental units ', 0)


def _data_config(raw_dir, **changes):
  config = base.get_base_config().data
  config.update(**{**dict(dataset='sst2', raw_dir=str(raw_dir), vocab_size=8000, max_len=64,
                          tokens_per_batch=512), **changes})
  return config


def _write(folder, name, lines):
  os.makedirs(folder, exist_ok=True)
  with gzip.open(os.path.join(folder, name), 'wt', encoding='utf-8') as f:
    f.write(''.join(line + '\n' for line in lines))


def _tiny_raw(folder, train=None, dev=None):
  """SST-2-shaped files: 'w<i> good' rows are positive, 'w<i> bad' rows negative."""
  rows = [f'w{i} {"good" if i % 2 else "bad"} film\t{i % 2}' for i in range(40)]
  _write(folder, 'train.tsv.gz', [sst2.HEADER] + (train or rows))
  _write(folder, 'dev.tsv.gz', [sst2.HEADER] + (dev or rows[:11]))
  return folder


@pytest.fixture(scope='module')
def real(shared_data, tmp_path_factory):
  """(data config, workdir, tokenizer) over the real files."""
  workdir = str(tmp_path_factory.mktemp('sst2'))
  config = _data_config(shared_data / 'sst2', vocab_size=2000, tokens_per_batch=1024)
  return config, workdir, sst2.get_tokenizer(config, workdir)


@pytest.fixture(scope='module')
def real_train(real):
  """(texts, labels) of the real train split, read once."""
  config, workdir, _ = real
  return sst2.load_split(config, 'train', workdir)


def test_builder_reads_the_real_files(real, real_train, shared_data):
  config, workdir, _ = real
  texts, labels = real_train
  assert len(texts) == len(labels) == 67349
  assert (texts[0], labels[0]) == FIRST_TRAIN
  assert 0.5 < np.mean(labels) < 0.6            # 55.8% positive
  dev_texts, dev_labels = sst2.load_split(config, 'validation', workdir)
  assert len(dev_texts) == 872 and 0.45 < np.mean(dev_labels) < 0.55
  # The builder keeps file order: the same as reading the raw file directly.
  assert (dev_texts, dev_labels) == sst2.read_tsv(str(shared_data / 'sst2' / 'dev.tsv.gz'))


def test_test_split_and_unknown_split_are_user_errors(real):
  config, workdir, _ = real
  with pytest.raises(UserError, match='GLUE test labels are not public') as e:
    sst2.load_split(config, 'test', workdir)
  assert '\n' not in str(e.value)
  with pytest.raises(UserError, match="no split 'dev'"):
    sst2.load_split(config, 'dev', workdir)


def test_eval_batches_are_in_order_with_pad_rows_at_the_end(real):
  config, workdir, tokenizer = real
  data = pipeline.make_eval_batches(config, tokenizer, 'validation', workdir=workdir,
                                    batch_multiple=8, rows_per_batch=128)
  assert data.num_examples == 872 and len(data.batches) == 7        # 7 * 128 = 896 rows
  inputs = [row for b in data.batches for row in b['inputs']]
  labels = np.concatenate([b['label'] for b in data.batches])
  assert all(b['inputs'].dtype == b['label'].dtype == np.int32 for b in data.batches)
  assert all(b['label'].shape == (128,) for b in data.batches)
  texts, expected = sst2.load_split(config, 'validation', workdir)
  np.testing.assert_array_equal(labels[:872], expected)
  assert not labels[872:].any() and not np.any(inputs[872:])
  ids = tokenizer.encode(texts)
  for row, want in zip(inputs, ids):
    assert list(row[:len(want)]) == want and not row[len(want):].any()
  assert data.references[:2] == [sst2.LABELS[expected[0]], sst2.LABELS[expected[1]]]


def test_train_batches_align_inputs_and_labels(real, real_train):
  config, workdir, tokenizer = real
  it = pipeline.make_train_iterator(config, tokenizer, workdir=workdir, batch_multiple=8)
  texts, labels = real_train
  label_of = {}
  for ids, label in zip(tokenizer.encode(texts), labels):
    label_of.setdefault(tuple(ids), set()).add(label)
  for _ in range(5):
    batch = next(it)
    assert set(batch) == {'inputs', 'label'}
    rows, length = batch['inputs'].shape
    assert rows % 8 == 0 and rows * length <= 1024 and batch['label'].shape == (rows,)
    for row, label in zip(batch['inputs'], batch['label']):
      if row.any():
        ids = tuple(int(i) for i in row[row != 0])
        assert ids[-1] == tokenizer_lib.EOS_ID and label in label_of[ids]
      else:
        assert label == 0


def test_iterator_is_deterministic_and_resumes(tmp_path):
  config = _data_config(_tiny_raw(str(tmp_path / 'raw')), vocab_size=40, tokens_per_batch=64,
                        max_len=16)
  workdir = str(tmp_path / 'run')
  tokenizer = sst2.get_tokenizer(config, workdir)
  make = lambda: sst2.make_train_iterator(config, tokenizer, workdir=workdir, batch_multiple=2)
  first = make()
  assert first.num_examples == 40
  straight = [next(first) for _ in range(12)]            # crosses an epoch boundary
  resumed = make()
  for _ in range(5):
    next(resumed)
  state = resumed.get_state()
  again = make()
  again.set_state(state)
  for a, b in zip(straight[5:], [next(again) for _ in range(7)]):
    for key in ('inputs', 'label'):
      np.testing.assert_array_equal(a[key], b[key])
  # Every example once per epoch, each with its own label.
  epoch = [(tuple(r[r != 0]), l) for b in straight[:first.batches_in_epoch(0)]
           for r, l in zip(b['inputs'], b['label']) if r.any()]
  assert len(epoch) == 40
  texts, labels = sst2.read_tsv(os.path.join(config.raw_dir, 'train.tsv.gz'))
  assert sorted(epoch) == sorted((tuple(ids), l) for ids, l in
                                 zip(tokenizer.encode(texts), labels))
  other = _data_config(config.raw_dir, vocab_size=40, tokens_per_batch=64, max_len=16,
                       shuffle_seed=1)
  with pytest.raises(UserError, match='fingerprint'):
    sst2.make_train_iterator(other, tokenizer, workdir=workdir, batch_multiple=2).set_state(state)


@pytest.mark.parametrize('line, what', [
    ('a fine film\t2', 'label'), ('no label here', 'columns'), ('a\tb\t1', 'columns')])
def test_malformed_line_is_a_user_error_naming_file_and_line(tmp_path, line, what):
  del what
  rows = [f'sentence {i}\t{i % 2}' for i in range(5)]
  raw = _tiny_raw(str(tmp_path / 'raw'), train=rows[:3] + [line] + rows[3:])
  with pytest.raises(UserError) as e:
    sst2.prepare(str(tmp_path / 'tfds'), raw)
  message = str(e.value)
  assert message.startswith(os.path.join(raw, 'train.tsv.gz') + ':5:') and '\n' not in message


def test_missing_folder_is_a_user_error(tmp_path):
  missing = tmp_path / 'nothing_here'
  config = _data_config(missing)
  for call in (lambda: pipeline.check_available(config, str(tmp_path / 'run')),
               lambda: sst2.prepare(str(tmp_path / 'tfds'), str(missing))):
    with pytest.raises(UserError) as e:
      call()
    message = str(e.value)
    assert str(missing) in message and 'GLUE SST-2' in message
    assert '--experiment.data.raw_dir' in message and '\n' not in message


def test_packing_is_refused(tmp_path):
  config = _data_config(_tiny_raw(str(tmp_path / 'raw')), pack=True)
  with pytest.raises(UserError, match='pack=False'):
    pipeline.check_available(config, str(tmp_path / 'run'))
