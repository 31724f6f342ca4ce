"""The copy task measurably learns (fast) and reaches >= 99% held-out token accuracy (slow)."""
import importlib

import pytest

from transformer_jax.train import trainer


def copy_config(num_steps):
  config = importlib.import_module('transformer_jax.experiments.copy_task').get_config()
  config.train.update(num_steps=num_steps, log_every_steps=num_steps, eval_every_steps=num_steps,
                      checkpoint_every_steps=num_steps)
  return config


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_copy_task_learns_within_150_steps(tmp_path):
  config = copy_config(150)
  config.data.copy_num_train = 4000
  config.eval.update(bleu=False, max_batches=4)
  metrics = trainer.train_and_evaluate(config, str(tmp_path))
  # Chance is 1/28 per token (ids 3..31 plus EOS); 150 steps already beat it by far.
  assert metrics['accuracy'] > 0.25, metrics
  assert metrics['loss'] < 2.8, metrics


@pytest.mark.slow
def test_copy_task_reaches_99_percent_on_held_out_sequences(tmp_path):
  metrics = trainer.train_and_evaluate(copy_config(1500), str(tmp_path))
  assert metrics['accuracy'] >= 0.99, metrics
  assert metrics['exact_match'] >= 0.9, metrics
