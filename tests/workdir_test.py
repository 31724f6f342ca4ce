"""The workdir guard and the NaN stop."""
import math

import ml_collections
import pytest

from transformer_jax import metrics_writer
from transformer_jax import workdir as workdir_lib
from transformer_jax.errors import UserError


def config(**train):
  return ml_collections.ConfigDict({'model': {'model_dim': 16}, 'data': {'bucket_lengths': (8, 16)},
                                    'optim': {'warmup_steps': 10},
                                    'train': {'seed': 0, 'num_steps': 5, **train}})


def test_free_and_pinned_keys(tmp_path):
  workdir_lib.check_config(str(tmp_path), config())
  workdir_lib.record_config(str(tmp_path), config())
  workdir_lib.check_config(str(tmp_path), config(num_steps=50))       # more steps: fine
  with pytest.raises(UserError, match=r'train.seed: 0 -> 1'):
    workdir_lib.check_config(str(tmp_path), config(seed=1))
  changed = config()
  changed.model.model_dim = 32
  with pytest.raises(UserError, match=r'model.model_dim: 16 -> 32.*new --workdir'):
    workdir_lib.check_config(str(tmp_path), changed)


def test_checkpoints_without_config_are_refused(tmp_path):
  (tmp_path / 'checkpoints' / '10').mkdir(parents=True)
  with pytest.raises(UserError, match='no config.json'):
    workdir_lib.check_config(str(tmp_path), config())


def test_nan_loss_stops_with_the_step_and_the_kept_checkpoint():
  metrics_writer.check_finite(7, {'loss': 1.0, 'grad_norm': 2.0}, None)
  with pytest.raises(UserError, match=r'loss became nan by step 7 \(checkpoint step 5 is kept\)'):
    metrics_writer.check_finite(7, {'loss': math.nan}, 5)


def test_reduce_sums_divides_by_weight_and_step_count():
  out = metrics_writer.reduce_sums({'loss': 6.0, 'nll': 4.0, 'accuracy': 1.0, 'weight': 2.0,
                                    'grad_norm': 9.0, 'num_steps': 3.0})
  assert out['loss'] == 3.0 and out['accuracy'] == 0.5 and out['grad_norm'] == 3.0
  assert out['perplexity'] == pytest.approx(math.exp(2.0))


def test_check_path_refuses_files_and_empty_paths(tmp_path):
  (tmp_path / 'afile').write_text('x')
  with pytest.raises(UserError, match='is a file, not a folder'):
    workdir_lib.check_path(str(tmp_path / 'afile'), writes=False)
  with pytest.raises(UserError, match='lies below the file'):
    workdir_lib.check_path(str(tmp_path / 'afile' / 'run'), writes=True)
  with pytest.raises(UserError, match='--workdir is empty'):
    workdir_lib.check_path('', writes=True)
  workdir_lib.check_path(str(tmp_path / 'new' / 'run'), writes=True)   # creatable: fine
  assert not (tmp_path / 'new').exists()


def test_corrupt_config_json_is_a_user_error(tmp_path):
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(UserError, match='is not a readable JSON config'):
    workdir_lib.load_config(str(tmp_path))


def test_training_lock_refuses_a_second_holder_and_names_the_first(tmp_path):
  import os
  with workdir_lib.training_lock(str(tmp_path)):
    with pytest.raises(UserError, match=f'is being trained by pid {os.getpid()} on '):
      with workdir_lib.training_lock(str(tmp_path)):
        pass
  with workdir_lib.training_lock(str(tmp_path)):     # released on exit: free again
    pass


def test_failed_setup_takes_back_only_what_it_added(tmp_path):
  (tmp_path / 'notes.txt').write_text('mine')
  before = workdir_lib.top_level_entries(str(tmp_path))
  with pytest.raises(UserError):
    with workdir_lib.removed_on_setup_failure(str(tmp_path), before):
      (tmp_path / 'tokenizer').mkdir()
      (tmp_path / 'config.json').write_text('{}')
      raise UserError('data says no')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['notes.txt']
  fresh = tmp_path / 'fresh'
  with pytest.raises(UserError):
    with workdir_lib.removed_on_setup_failure(str(fresh), workdir_lib.top_level_entries(str(fresh))):
      fresh.mkdir()
      raise UserError('data says no')
  assert not fresh.exists()
  with pytest.raises(RuntimeError):                  # a bug keeps its files for inspection
    with workdir_lib.removed_on_setup_failure(str(tmp_path), before):
      (tmp_path / 'debug').mkdir()
      raise RuntimeError('bug')
  assert (tmp_path / 'debug').exists()
