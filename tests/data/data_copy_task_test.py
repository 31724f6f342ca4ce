"""Tests for transformer_jax.data.sources.copy_task (synthetic copy / reverse builder)."""
import os

import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data.sources import copy_task


def _config(task='copy', **overrides):
  settings = dict(min_len=2, max_len=9, vocab_size=12, num_train=200, num_eval=20, seed=0)
  settings.update(overrides)
  return copy_task.make_config(task, **settings)


def test_name_encodes_every_parameter():
  base = _config()
  assert base.name == _config().name
  others = [_config('reverse'), _config(min_len=3), _config(max_len=10), _config(vocab_size=13),
            _config(num_train=201), _config(num_eval=21), _config(seed=1)]
  assert len({base.name} | {c.name for c in others}) == 1 + len(others)


def test_deterministic_by_seed():
  a_in, a_tg = copy_task.generate(_config(seed=5), 'train')
  b_in, b_tg = copy_task.generate(_config(seed=5), 'train')
  c_in, _ = copy_task.generate(_config(seed=6), 'train')
  assert all(np.array_equal(x, y) for x, y in zip(a_in + a_tg, b_in + b_tg))
  assert not all(np.array_equal(x, y) for x, y in zip(a_in, c_in))
  # Splits are independent draws.
  v_in, _ = copy_task.generate(_config(seed=5), 'validation')
  assert not all(np.array_equal(x, y) for x, y in zip(a_in, v_in))


@pytest.mark.parametrize('task', ['copy', 'reverse'])
def test_targets_and_token_ranges(task):
  config = _config(task)
  inputs, targets = copy_task.generate(config, 'train')
  assert len(inputs) == 200 and len(copy_task.generate(config, 'test')[0]) == 20
  for x, y in zip(inputs, targets):
    assert x.dtype == y.dtype == np.int32
    assert x[-1] == y[-1] == 1 and 2 <= len(x) - 1 <= 9
    assert (x[:-1] >= 3).all() and (x[:-1] < 12).all()
    expected = x[:-1][::-1] if task == 'reverse' else x[:-1]
    np.testing.assert_array_equal(y[:-1], expected)
  lengths = {len(x) - 1 for x in inputs}
  assert lengths == set(range(2, 10))  # the whole range is drawn


def test_builder_writes_the_generated_data_in_order(tmp_path):
  config = _config('reverse', seed=3)
  builder = copy_task.prepare(str(tmp_path), config)
  for split, num in (('train', 200), ('validation', 20), ('test', 20)):
    source = builder.as_data_source(split)
    assert len(source) == num
    inputs, targets = copy_task.generate(config, split)
    for i in (0, 1, num - 1):
      np.testing.assert_array_equal(source[i]['inputs'], inputs[i])
      np.testing.assert_array_equal(source[i]['targets'], targets[i])


def test_prepared_data_is_reused_and_settings_coexist(tmp_path):
  builder = copy_task.prepare(str(tmp_path), _config())
  files = sorted(os.listdir(builder.data_dir))
  mtimes = [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files]
  again = copy_task.prepare(str(tmp_path), _config())
  assert again.data_dir == builder.data_dir
  assert [os.path.getmtime(os.path.join(builder.data_dir, f)) for f in files] == mtimes
  other = copy_task.prepare(str(tmp_path), _config(seed=1))
  assert other.data_dir != builder.data_dir
  assert len(other.as_data_source('train')) == len(builder.as_data_source('train')) == 200


@pytest.mark.parametrize('task, overrides, field', [
    ('copy', dict(min_len=0), 'copy_min_len'),
    ('copy', dict(min_len=5, max_len=4), 'copy_max_len'),
    ('copy', dict(vocab_size=3), 'copy_vocab_size'),
    ('copy', dict(num_train=0), 'copy_num_train'),
    ('sort', {}, 'dataset'),
])
def test_bad_parameters_are_user_errors(task, overrides, field):
  with pytest.raises(UserError, match=field):
    _config(task, **overrides)
