"""The workdir guard and the NaN stop."""
import math

import ml_collections
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.evaluation import metric_sums
from transformer_jax.train import metrics_writer


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
  out = metric_sums.reduce_sums({'loss': 6.0, 'nll': 4.0, 'accuracy': 1.0, 'weight': 2.0,
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


def test_check_path_refuses_names_too_long_and_symlink_loops(tmp_path):
  import os
  with pytest.raises(UserError, match=r"name 'wwww.*' of 300 bytes, longer than the 255 bytes"):
    workdir_lib.check_path(str(tmp_path / ('w' * 300) / 'run'), writes=True)
  with pytest.raises(UserError, match='bytes a path may have'):
    workdir_lib.check_path(str(tmp_path / '/'.join(['d' * 200] * 20)), writes=False)
  os.symlink('loop', tmp_path / 'loop')
  for path in (tmp_path / 'loop', tmp_path / 'loop' / 'run'):
    with pytest.raises(UserError, match=f'{tmp_path / "loop"} is a symlink loop'):
      workdir_lib.check_path(str(path), writes=False)
  os.symlink('real', tmp_path / 'link')               # a link to a folder is fine
  (tmp_path / 'real').mkdir()
  workdir_lib.check_path(str(tmp_path / 'link' / 'run'), writes=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ['link', 'loop', 'real']


def test_training_files_that_cannot_be_written_are_refused_before_any_write(tmp_path):
  import os
  workdir = tmp_path / 'run'
  workdir_lib.check_training_files(str(workdir))       # absent workdir: nothing to check
  workdir.mkdir()
  for name in ('train.lock', 'metrics.jsonl'):
    (workdir / name).mkdir()
    with pytest.raises(UserError, match=f'{name} is a folder, not the'):
      workdir_lib.check_training_files(str(workdir))
    with pytest.raises(UserError, match=f'{name} is a folder'):
      with workdir_lib.training_lock(str(workdir)):
        pass
    (workdir / name).rmdir()
    os.symlink(name, workdir / name)
    with pytest.raises(UserError, match=f'{name} is a symlink loop'):
      workdir_lib.check_training_files(str(workdir))
    (workdir / name).unlink()
    assert list(workdir.iterdir()) == []
  (workdir / 'tensorboard').write_text('x')
  with pytest.raises(UserError, match='tensorboard is a file, not the folder'):
    workdir_lib.check_training_files(str(workdir))
  (workdir / 'tensorboard').unlink()
  (workdir / 'metrics.jsonl').write_text('{"step": 1}\n')
  with workdir_lib.training_lock(str(workdir)):        # regular files: fine, left as they were
    pass
  assert (workdir / 'metrics.jsonl').read_text() == '{"step": 1}\n'


def test_an_immutable_metrics_file_is_refused(tmp_path):
  import os
  import subprocess
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 1}\n')
  if os.system(f'chattr +i {path} 2>/dev/null') != 0:
    pytest.skip('chattr +i is not available here')
  try:
    with pytest.raises(UserError, match=r'metrics.jsonl is not writable \(Operation not '):
      workdir_lib.check_training_files(str(tmp_path))
  finally:
    subprocess.run(['chattr', '-i', str(path)], check=False)
