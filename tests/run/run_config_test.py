"""run_config: a run's config.json turned back into its experiment's ConfigDict, and printed."""
import importlib
import pathlib

import pytest
from ml_collections import config_dict

from transformer_jax.base import paths
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.run import defaults as base
from transformer_jax.run import saved_config as run_config

EXPERIMENTS = sorted(p.stem for p in paths.EXPERIMENTS_DIR.glob('*.py')
                     if p.stem not in ('__init__', 'base'))


def leaves(config):
  """{'section.field': (value, type, value's own type)} of a one-level ConfigDict."""
  return {f'{s}.{name}': (config[s][name], config[s].get_type(name), type(config[s][name]))
          for s in config.keys() for name in config[s].keys()}


@pytest.mark.parametrize('name', EXPERIMENTS)
@pytest.mark.parametrize('variant', [None, 'smoke'])
def test_a_saved_config_comes_back_with_the_experiment_s_structure_and_types(name, variant):
  try:
    config = importlib.import_module(f'transformer_jax.experiments.{name}').get_config(variant)
  except ValueError:
    pytest.skip(f'{name} has no {variant} variant')
  restored = run_config.from_saved(workdir_lib.as_json(config), base.get_base_config())
  assert leaves(restored) == leaves(config)
  assert restored.is_locked


def test_overrides_parse_against_the_restored_types():
  config = importlib.import_module('transformer_jax.experiments.copy_task').get_config('smoke')
  restored = run_config.from_saved(workdir_lib.as_json(config), base.get_base_config())
  restored.model.head_dim = 8                      # a placeholder took its int type back
  with pytest.raises(TypeError):
    restored.model.head_dim = 'eight'
  assert isinstance(restored.data.bucket_lengths, tuple)
  with pytest.raises(AttributeError):
    restored.decode.nosuch = 1                     # locked, like the experiment's


def test_a_run_that_predates_a_field_gets_only_the_unpinned_ones():
  saved = workdir_lib.as_json(base.get_base_config())
  del saved['eval']['max_batches'], saved['data']['pack']
  restored = run_config.from_saved(saved, base.get_base_config())
  assert restored.eval.max_batches == 0            # may change after training: the default
  assert 'pack' not in restored.data               # pinned: left as the run was trained


def test_describe_writes_one_typed_line_per_field():
  config = base.get_base_config()
  lines = run_config.describe(config).splitlines()
  assert len(lines) == len(leaves(config))
  assert 'train.num_steps = 2000  # int' in lines
  assert 'optim.learning_rate = None  # float or None' in lines
  assert "decode.method = 'beam'  # str" in lines
  assert 'data.bucket_lengths = ()  # tuple' in lines
  assert lines == sorted(lines, key=lambda line: line.split(' = ')[0].split('.'))


def test_placeholders_of_an_unknown_type_take_any_literal():
  restored = run_config.from_saved({'decode': {'mystery': None}})
  assert isinstance(restored.decode._fields['mystery'], config_dict.FieldReference)
  restored.decode.mystery = 3
  assert restored.decode.mystery == 3
