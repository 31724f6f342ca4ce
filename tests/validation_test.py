"""Range checks of experiment configs: each bad value is refused with its key and its fix;
every shipped experiment passes."""
import math
import pathlib

import ml_collections
import pytest

from experiments import base
from transformer_jax import validation
from transformer_jax.errors import UserError

EXPERIMENTS = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / 'experiments').glob('*.py')
                     if p.name not in ('__init__.py', 'base.py'))


def base_config():
  return base.get_base_config()


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.stem)
def test_every_shipped_experiment_passes(path):
  import importlib
  module = importlib.import_module(f'experiments.{path.stem}')
  for variant in (None, 'smoke'):
    validation.check_config(module.get_config(variant))


@pytest.mark.parametrize('key, value, words', [
    ('train.num_steps', 0, 'an integer >= 1'),
    ('train.keep_checkpoints', 0, 'would delete every checkpoint'),
    ('optim.learning_rate', -1e-3, 'a value > 0'),
    ('optim.learning_rate', math.nan, 'not a finite number'),
    ('model.dropout_rate', 1.5, 'in [0, 1)'),
    ('model.num_heads', 0, 'an integer >= 1'),
    ('model.head_dim', 0, 'an integer >= 1'),
    ('data.tokens_per_batch', -1, 'an integer >= 1'),
    ('decode.method', 'nope', 'one of greedy, beam, sample'),
    ('decode.beam_size', 0, 'an integer >= 1'),
    ('decode.top_p', 0.0, 'in (0, 1]'),
    ('eval.average_last', 0, 'an integer >= 1'),
    ('eval.split', 'dev', 'one of train, validation, test'),
])
def test_bad_value_names_key_value_and_fix(key, value, words):
  config = base_config()
  section, field = key.split('.')
  config[section][field] = value
  with pytest.raises(UserError) as error:
    validation.check_config(config)
  message = str(error.value)
  assert message.startswith(f'{key}=') and f'--experiment.{key}' in message, message
  assert words in message and '\n' not in message


def test_boundaries_are_inclusive_where_documented():
  config = base_config()
  config.model.dropout_rate = 0.0
  config.optim.warmup_steps = 0
  config.decode.top_p = 1.0
  config.decode.max_extra_len = 0
  config.model.head_dim = None            # optional fields may stay None
  validation.check_config(config)
  config.model.dropout_rate = 1.0
  with pytest.raises(UserError, match='model.dropout_rate=1.0'):
    validation.check_config(config)


def test_average_last_above_keep_checkpoints_only_matters_for_training():
  config = base_config()
  config.eval.average_last, config.train.keep_checkpoints = 10, 5
  with pytest.raises(UserError, match='keep_checkpoints to 10 or more'):
    validation.check_config(config)
  validation.check_config(config, training=False)    # eval counts what is on disk instead


def test_model_rules_cover_other_families_by_field_name():
  config = ml_collections.ConfigDict({'model': {'family': 'rnn_seq2seq', 'hidden_dim': 0}})
  with pytest.raises(UserError, match='model.hidden_dim=0'):
    validation.check_config(config)


def test_validation_does_not_import_jax():
  import subprocess
  import sys
  code = ('import sys; import transformer_jax.validation; '
          'sys.exit(1 if "jax" in sys.modules else 0)')
  assert subprocess.run([sys.executable, '-c', code],
                        cwd=pathlib.Path(__file__).resolve().parents[1]).returncode == 0


def test_float16_is_refused_for_want_of_loss_scaling():
  config = base_config()
  config.model.dtype = 'float16'
  with pytest.raises(UserError, match='model.dtype=float16 would train without loss scaling'):
    validation.check_config(config)
  config.model.dtype = 'bfloat16'
  validation.check_config(config)
