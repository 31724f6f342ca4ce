"""Range checks of experiment configs: each bad value is refused with its key and its fix;
every shipped experiment passes."""
import math
import pathlib

import ml_collections
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.base import paths
from transformer_jax.run import defaults as base
from transformer_jax.train import validation

EXPERIMENTS = sorted(p for p in paths.EXPERIMENTS_DIR.glob('*.py')
                     if p.name != '__init__.py')


def base_config():
  return base.get_base_config()


@pytest.mark.parametrize('path', EXPERIMENTS, ids=lambda p: p.stem)
def test_every_shipped_experiment_passes(path):
  import importlib
  module = importlib.import_module(f'transformer_jax.experiments.{path.stem}')
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
  code = ('import sys; import transformer_jax.train.validation; '
          'sys.exit(1 if "jax" in sys.modules else 0)')
  assert subprocess.run([sys.executable, '-c', code],
                        cwd=pathlib.Path(__file__).resolve().parents[2]).returncode == 0


def test_float16_is_refused_for_want_of_loss_scaling():
  config = base_config()
  config.model.dtype = 'float16'
  with pytest.raises(UserError, match='model.dtype=float16 would train without loss scaling'):
    validation.check_config(config)
  config.model.dtype = 'bfloat16'
  validation.check_config(config)


@pytest.mark.parametrize('key, value, words', [
    ('train.num_steps', 2**31, 'step counters and the learning-rate schedule are int32'),
    ('optim.warmup_steps', 3_000_000_000, 'an integer <= 2147483647'),
    ('train.log_every_steps', 2**40, 'an integer <= 2147483647'),
    ('data.tokens_per_batch', 100_000_000_000, 'takes 373 GiB'),
    ('model.mlp_dim', 2**31, 'jax computes integers in int32'),
    ('train.seed', 2**64, 'an integer in [0, 4294967295]'),
    ('train.seed', 2**32, 'low 32 bits'),
    ('train.seed', -1, 'low 32 bits'),
    ('data.shuffle_seed', -1, 'an integer >= 0'),
    ('data.copy_seed', -3, 'numpy random generators take no negative seed'),
])
def test_integers_past_what_consumes_them_are_refused(key, value, words):
  config = base_config()
  section, field = key.split('.')
  config[section][field] = value
  with pytest.raises(UserError) as error:
    validation.check_config(config)
  message = str(error.value)
  assert message.startswith(f'{key}={value} is out of range'), message
  assert f'--experiment.{key}' in message and words in message and '\n' not in message


def test_integer_bounds_are_inclusive():
  config = base_config()
  config.train.num_steps = config.optim.warmup_steps = 2**31 - 1
  config.data.tokens_per_batch = 2**31 - 1
  config.train.seed = 2**32 - 1
  config.data.shuffle_seed = config.data.copy_seed = 2**70      # numpy seeds have no top
  validation.check_config(config)
  config.train.seed = 0
  validation.check_config(config)


def test_an_integer_list_is_bounded_too():
  config = base_config()
  config.data.bucket_lengths = (8, 2**31)
  with pytest.raises(UserError, match=r'data.bucket_lengths=\(8, 2147483648\) is out of range.*'
                                      'integers <= 2147483647'):
    validation.check_config(config)


def decode_seed_config(seed):
  return ml_collections.ConfigDict({'decode': {'method': 'sample', 'seed': seed}})


def test_decode_seed_is_a_32_bit_jax_seed():
  validation.check_config(decode_seed_config(2**32 - 1), training=False)
  with pytest.raises(UserError, match='decode.seed=4294967296 is out of range'):
    validation.check_config(decode_seed_config(2**32), training=False)


def vectors_config(tmp_path, text, model_dim=4):
  path = tmp_path / 'vectors.txt'
  path.write_bytes(text)
  config = base_config()
  config.model.model_dim = model_dim
  config.train.init_embeddings = str(path)
  return config


@pytest.mark.parametrize('text, words', [
    (b'2 4\ndog 1 2 3 4\ncat 1 two 3 4\n', r'vectors.txt:3: value 2 of .cat. is .two., not a '
                                           'number'),
    (b'2 four\ndog 1 2 3 4\ncat 1 2 3 4\n', r'vectors.txt:1: header .2 four. is not'),
    (b'', r'vectors.txt:1: header .. is not'),
    (b'2 4\ndog 1 2 3 4\ncat 1 2 nan 4\n', r'vectors.txt:3: value 3 of .cat. is nan, which would '
                                           'make the loss NaN'),
    (b'1 4\ndog 1 2 3 1e40\n', r'vectors.txt:2: value 4 of .dog. is inf'),
    (b'1 4\ncaf\xe9 1 2 3 4\n', r'vectors.txt:2: not UTF-8'),
    (b'1 4\ndog 1 2 3\n', r'vectors.txt:2: expected a word and 4 numbers, got 3'),
    (b'3 4\ndog 1 2 3 4\n', r'vectors.txt:1: header says 3 words, file has 1'),
    (b'1 5\ndog 1 2 3 4 5\n', r'have dim 5 but model.model_dim is 4'),
], ids=['not_numeric', 'bad_header', 'empty', 'nan', 'overflow', 'not_utf8', 'short_line',
        'count', 'dim'])
def test_a_bad_init_embeddings_file_is_refused_with_its_line(tmp_path, text, words):
  config = vectors_config(tmp_path, text)
  with pytest.raises(UserError, match=words) as error:
    validation.check_config(config)
  message = str(error.value)
  assert '\n' not in message and '--experiment.train.init_embeddings=""' in message, message


def test_init_embeddings_are_read_only_when_training(tmp_path):
  config = vectors_config(tmp_path, b'1 4\ndog 1 2 nan 4\n')
  validation.check_config(config, training=False)      # eval/translate do not read the file
  config.train.init_embeddings = str(tmp_path / 'none.txt')
  validation.check_config(config)                        # missing: components.preflight says so
  good = vectors_config(tmp_path, b'2 4\ndog 1 2 3 4\ncat -1 0.5 1e-3 4\n')
  validation.check_config(good)


def test_reading_init_embeddings_does_not_import_jax(tmp_path):
  import subprocess
  import sys
  path = tmp_path / 'vectors.txt'
  path.write_text('1 16\ndog ' + ' '.join(['0.5'] * 16) + '\n')
  code = ('import sys; from transformer_jax.experiments import copy_task; '
          'from transformer_jax.train import validation; '
          'config = copy_task.get_config("smoke"); '
          f'config.train.init_embeddings = {str(path)!r}; '
          'validation.check_config(config); '
          'sys.exit(1 if "jax" in sys.modules else 0)')
  assert subprocess.run([sys.executable, '-c', code],
                        cwd=pathlib.Path(__file__).resolve().parents[2]).returncode == 0
