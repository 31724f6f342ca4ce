"""Tests for transformer_jax.data.pipeline: tokenizer choice, train iterator, eval batches."""
import collections
import json
import os
import sys

import ml_collections
import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax import data
from transformer_jax.data import pipeline


def _data_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      dataset='copy', raw_dir='', data_dir='', source_lang='en', target_lang='de',
      vocab_size=8000, tokenizer_type='bpe', max_len=24, tokens_per_batch=384,
      bucket_lengths=(), pack=False, shuffle_seed=0, num_workers=0,
      copy_min_len=1, copy_max_len=20, copy_vocab_size=16, copy_num_train=600,
      copy_num_eval=50, copy_seed=0))
  config.update(overrides)
  return config


def _rows(batch):
  """(inputs, targets) of every non-pad row of an unpacked batch, pads stripped."""
  return [(tuple(x[x != 0]), tuple(y[y != 0])) for x, y in zip(batch['inputs'], batch['targets'])
          if y.any()]


def _packed_rows(batch):
  return [(tuple(x), tuple(y)) for row in data.unpack_batch(batch) for x, y in row]


def _pairs(examples, max_len=None):
  return collections.Counter(
      (tuple(x), tuple(y)) for x, y in zip(examples.inputs, examples.targets)
      if max_len is None or max(len(x), len(y)) <= max_len)


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('run'))


@pytest.fixture(scope='module')
def copy_examples(workdir):
  config = _data_config()
  return pipeline.load_examples(config, data.get_tokenizer(config, workdir), 'train',
                                workdir=workdir)


def _iterator(config, workdir, **kwargs):
  kwargs.setdefault('batch_multiple', 4)
  return data.make_train_iterator(config, data.get_tokenizer(config, workdir), workdir=workdir,
                                  **kwargs)


def test_copy_task_uses_identity_tokenizer(workdir):
  tok = data.get_tokenizer(_data_config(dataset='reverse'), workdir)
  assert isinstance(tok, data.IdentityTokenizer) and tok.vocab_size == 16


@pytest.mark.parametrize('pack', [False, True])
def test_every_example_once_per_epoch(workdir, copy_examples, pack):
  config = _data_config(pack=pack, max_len=16)  # drops the longer copy examples
  it = _iterator(config, workdir)
  expected = _pairs(copy_examples, max_len=16)
  assert it.num_dropped == len(copy_examples) - sum(expected.values()) > 0
  for epoch in range(2):
    assert it.epoch == epoch
    batches = [next(it) for _ in range(it.batches_in_epoch())]
    seen = [row for b in batches for row in (_packed_rows(b) if pack else _rows(b))]
    assert collections.Counter(seen) == expected
    for b in batches:
      rows, length = b['inputs'].shape
      assert rows % 4 == 0 and rows * length <= config.tokens_per_batch and length <= 16
      assert all(v.dtype == np.int32 and v.shape == (rows, length) for v in b.values())
    if epoch == 0:
      first_epoch = batches
  assert it.epoch == 2
  # Reshuffled: the second epoch is not the first again.
  assert any(a['inputs'].shape != b['inputs'].shape or (a['inputs'] != b['inputs']).any()
             for a, b in zip(first_epoch, batches))


@pytest.mark.parametrize('pack', [False, True])
def test_resume_from_state_replays_the_same_batches(workdir, pack):
  config = _data_config(pack=pack)
  it = _iterator(config, workdir)
  for _ in range(it.batches_in_epoch() + 3):  # cross an epoch boundary first
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # as a checkpoint would store it
  expected = [next(it) for _ in range(it.batches_in_epoch())]
  fresh = _iterator(config, workdir)
  fresh.set_state(state)
  _assert_batches_equal([next(fresh) for _ in range(len(expected))], expected)


def test_same_seed_same_batches_other_seed_other_order(workdir):
  a = [next(_iterator(_data_config(), workdir)) for _ in range(1)]
  b = [next(_iterator(_data_config(), workdir)) for _ in range(1)]
  _assert_batches_equal(a, b)
  it, other = _iterator(_data_config(), workdir), _iterator(_data_config(shuffle_seed=1), workdir)
  n = it.batches_in_epoch()
  assert any(x['inputs'].shape != y['inputs'].shape or (x['inputs'] != y['inputs']).any()
             for x, y in zip([next(it) for _ in range(n)], [next(other) for _ in range(n)]))


def test_state_from_other_settings_is_refused(workdir):
  state = _iterator(_data_config(), workdir).get_state()
  with pytest.raises(UserError, match='--workdir'):
    _iterator(_data_config(tokens_per_batch=768), workdir).set_state(state)


@pytest.mark.parametrize('pack', [False, True])
def test_process_slices_concatenate_to_the_global_batch(workdir, pack):
  config = _data_config(pack=pack)
  whole = _iterator(config, workdir)
  parts = [_iterator(config, workdir, process_index=p, process_count=4) for p in range(4)]
  for _ in range(whole.batches_in_epoch() + 2):
    expected = next(whole)
    slices = [next(part) for part in parts]
    assert len({tuple(s['inputs'].shape) for s in slices}) == 1  # same shapes everywhere
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([s[key] for s in slices]), expected[key])


def test_batch_too_small_for_devices_is_a_user_error(workdir):
  with pytest.raises(UserError) as e:
    _iterator(_data_config(tokens_per_batch=64), workdir, batch_multiple=8)
  message = str(e.value)
  assert 'tokens_per_batch=64' in message and 'batch_multiple=8' in message
  assert '--experiment.data.tokens_per_batch to at least 192' in message


def test_eval_batches_cover_the_split_in_order(workdir):
  config = _data_config(dataset='reverse', copy_num_eval=45, max_len=12)  # some longer than 12
  tok = data.get_tokenizer(config, workdir)
  examples = pipeline.load_examples(config, tok, 'validation', workdir=workdir)
  ev = data.make_eval_batches(config, tok, 'validation', workdir=workdir, batch_multiple=4)
  assert ev.num_examples == 45 and ev.num_longer_than_max_len > 0
  assert len({b['inputs'].shape[0] for b in ev.batches}) == 1
  rows = [row for b in ev.batches for row in zip(b['inputs'], b['targets'])]
  assert len(rows) >= 45 and len(rows) % 4 == 0
  for (x, y), want_x, want_y in zip(rows, examples.inputs, examples.targets):
    np.testing.assert_array_equal(x[:len(want_x)], want_x)
    np.testing.assert_array_equal(y[:len(want_y)], want_y)
    assert not x[len(want_x):].any() and not y[len(want_y):].any()
  assert all(not x.any() and not y.any() for x, y in rows[45:])  # pad rows weigh nothing
  # Text sides line up with the batches: id strings for copy tasks.
  assert ev.sources == [tok.decode(x) for x in examples.inputs]
  assert ev.references[0] == ' '.join(reversed(ev.sources[0].split()))
  assert tok.decode_batch(ev.batches[0]['targets'])[:3] == ev.references[:3]


def test_eval_batches_cut_examples_to_the_model_and_count_them(workdir):
  config = _data_config(dataset='reverse', copy_num_eval=45, max_len=12)   # up to 21 tokens
  tok = data.get_tokenizer(config, workdir)
  examples = pipeline.load_examples(config, tok, 'validation', workdir=workdir)
  ev = data.make_eval_batches(config, tok, 'validation', workdir=workdir, batch_multiple=4,
                              max_input_len=16)
  longer = [max(len(x), len(y)) > 16 for x, y in zip(examples.inputs, examples.targets)]
  assert ev.num_truncated == sum(longer) > 0 and ev.num_examples == 45
  assert max(b['inputs'].shape[1] for b in ev.batches) == 16      # no bucket past the table
  rows = [row for b in ev.batches for row in zip(b['inputs'], b['targets'])]
  for (x, y), want_x, cut in zip(rows, examples.inputs, longer):
    if cut and len(want_x) > 16:
      np.testing.assert_array_equal(x, np.append(want_x[:15], want_x[-1]))   # EOS kept
    else:
      np.testing.assert_array_equal(x[:len(want_x)], want_x)
  assert ev.sources == [tok.decode(x) for x in examples.inputs]              # text stays whole
  whole = data.make_eval_batches(config, tok, 'validation', workdir=workdir, batch_multiple=4)
  assert whole.num_truncated == 0 and whole.num_longer_than_max_len == ev.num_longer_than_max_len


def test_eval_batches_slice_per_process(workdir):
  config = _data_config()
  tok = data.get_tokenizer(config, workdir)
  whole = data.make_eval_batches(config, tok, 'test', workdir=workdir, batch_multiple=4)
  parts = [data.make_eval_batches(config, tok, 'test', workdir=workdir, batch_multiple=4,
                                  process_index=p, process_count=2) for p in range(2)]
  for i, batch in enumerate(whole.batches):
    np.testing.assert_array_equal(
        np.concatenate([p.batches[i]['inputs'] for p in parts]), batch['inputs'])


def test_unknown_dataset_is_a_user_error(workdir):
  with pytest.raises(UserError, match='--experiment.data.dataset'):
    data.get_tokenizer(_data_config(dataset='wmt19'), workdir)


def test_multi30k_missing_raw_dir_is_a_user_error(tmp_path):
  config = _data_config(dataset='multi30k', raw_dir=str(tmp_path / 'missing'))
  with pytest.raises(UserError, match='--experiment.data.raw_dir'):
    data.get_tokenizer(config, str(tmp_path))


def test_multi30k_end_to_end(shared_data, tmp_path):
  config = _data_config(dataset='multi30k', raw_dir=os.path.join(shared_data, 'multi30k'),
                        max_len=64, tokens_per_batch=2048)
  workdir = str(tmp_path)
  tok = data.get_tokenizer(config, workdir)
  assert tok.vocab_size == 8000
  assert os.path.exists(os.path.join(workdir, 'tokenizer', 'multi30k_de-en_bpe8000.model'))
  assert data.get_tokenizer(config, workdir).model_path == tok.model_path  # reused
  it = data.make_train_iterator(config, tok, workdir=workdir, batch_multiple=8)
  assert it.num_examples + it.num_dropped == 29000
  rows = sum(int(next(it)['targets'].any(axis=1).sum()) for _ in range(it.batches_in_epoch()))
  assert rows == it.num_examples
  ev = data.make_eval_batches(config, tok, 'test', workdir=workdir, batch_multiple=8)
  en, de = data.load_text_split(config.raw_dir, 'test', 'en', 'de')
  assert (ev.sources, ev.references, ev.num_examples) == (en, de, 1000)
  decoded = [s for b in ev.batches for s in tok.decode_batch(b['targets'])][:1000]
  assert sum(d == r for d, r in zip(decoded, de)) >= 990
  assert 'tensorflow' not in sys.modules
