"""Every experiment file builds with :smoke and trains two steps; stopping and resuming
reproduces an uninterrupted run bit for bit."""
import importlib
import pathlib

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np
import pytest

from transformer_jax.base import paths
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.checkpoints import checkpoint
from transformer_jax.experiments import multi30k
from transformer_jax.train import components
from transformer_jax.train import trainer

EXPERIMENTS = sorted(p.stem for p in paths.EXPERIMENTS_DIR.glob('*.py')
                     if p.stem not in ('__init__', 'base'))


SHARED_PREFIX = '../shared/data/'


def smoke_config(name, shared=None):
  """The :smoke config, with every '../shared/data/...' path pointed at `shared`."""
  config = importlib.import_module(f'transformer_jax.experiments.{name}').get_config('smoke')
  if shared is not None:
    for section in config.values():
      if hasattr(section, 'items'):
        for key, value in section.items():
          if isinstance(value, str) and value.startswith(SHARED_PREFIX):
            section[key] = str(shared / value[len(SHARED_PREFIX):])
  return config


# The three slowest smoke trainings (about a minute each on 2 cores) run with `-m slow`.
# Slow twins: copy_task trains in many default tests (launch, catalogue, trainer), the LM in
# lm_test; the others are minutes each.
SLOW_SMOKE = ('copy_task', 'multi30k_lm', 'rnn_seq2seq', 'sst2_classifier', 'wmt14')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SMOKE else n
                                  for n in EXPERIMENTS])
def test_experiment_smoke_trains_two_steps(name, tmp_path, shared_data):
  config = smoke_config(name, shared_data)
  assert config.train.num_steps == 2
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(metrics['loss'])
  assert checkpoint.Checkpointer(str(tmp_path)).all_steps() == [2]
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert any('"split": "train"' in line for line in lines)
  assert list((tmp_path / 'tensorboard').iterdir())


def final_params(config, workdir):
  parts = components.build(config, str(workdir))
  template = components.init_state(parts, config.train.seed)
  ckpt = checkpoint.Checkpointer(str(workdir))
  state = ckpt.restore(template)[0]
  ckpt.close()
  return state


# jit is the slow twin (over 3 minutes each on 2 cores): `pytest -m slow`.
@pytest.mark.parametrize('parallelism', ['pmap', pytest.param('jit', marks=pytest.mark.slow)])
def test_stop_and_resume_is_bitwise_equal_to_uninterrupted(parallelism, tmp_path):
  config = smoke_config('copy_task')
  config.model.dropout_rate = 0.1        # resumed dropout keys must match too
  config.train.update(num_steps=6, checkpoint_every_steps=100, eval_every_steps=100,
                      parallelism=parallelism)
  trainer.train_and_evaluate(config, str(tmp_path / 'straight'))
  config.train.num_steps = 3
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  config.train.num_steps = 6
  trainer.train_and_evaluate(config, str(tmp_path / 'resumed'))
  a = final_params(config, tmp_path / 'straight')
  b = final_params(config, tmp_path / 'resumed')
  assert int(a.step) == int(b.step) == 6
  for x, y in zip(jax.tree_util.tree_leaves((a.params, a.opt_state)),
                  jax.tree_util.tree_leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('flag, value', [('model.mode', 'cbow'), ('data.word2vec_mode', 'cbow')])
def test_word2vec_row_layout_and_model_mode_are_one_setting(flag, value):
  """data.word2vec_mode (the data's row layout) is a reference to model.mode."""
  values = flags.FlagValues()
  path = paths.EXPERIMENTS_DIR / 'word2vec.py'
  argv = ['launch.py', f'--experiment={path}', f'--experiment.{flag}={value}']
  config_flags.DEFINE_config_file('experiment', flag_values=values, sys_argv=argv)
  values(argv)
  config = values.experiment
  assert config.model.mode == config.data.word2vec_mode == value


def test_multi30k_preln_variant_changes_only_the_norm_order():
  """The pre-LN result is the full recipe with only the layer-norm placement changed, so its
  number is comparable with the post-LN one."""
  recipe, variant = (workdir_lib.as_json(multi30k.get_config(arg)) for arg in (None, 'preln'))
  changed = {(section, key) for section in recipe for key in recipe[section]
             if recipe[section][key] != variant[section][key]}
  assert changed == {('model', 'norm_order')}
  assert (recipe['model']['norm_order'], variant['model']['norm_order']) == ('post', 'pre')
