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
