"""A damaged newest checkpoint in a whole run: evaluation skips it, training moves it aside and
then saves its own steps (checkpoint_damaged_steps_test.py covers each kind of damage on its own)."""
import logging
import pathlib

import jax
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import checkpoint
from transformer_jax.experiments import copy_task
from transformer_jax.pretrained import restored
from transformer_jax.train import components
from transformer_jax.train import trainer

# Reads of a damaged step leave orbax coroutines that complain when collected; noise.
# Two trainings end to end (about a minute on 2 cores): `python -m pytest -m slow`.
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')]


def _snapshot(directory):
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in pathlib.Path(directory).rglob('*') if p.is_file()}


def _truncate_array_files(step_dir):
  """Cuts every data file of the step's state to half, wherever orbax put the arrays (in
  state/d/ after merging the per-process database, or in state/ocdbt.process_0/d/)."""
  for path in (step_dir / 'state').rglob('*'):
    if path.is_file() and path.parent.name == 'd':
      with open(path, 'r+b') as f:
        f.truncate(path.stat().st_size // 2)


def _warnings(caplog):
  return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_eval_skips_a_damaged_newest_step_and_training_moves_it_aside(tmp_path, caplog):
  config = copy_task.get_config('smoke')
  config.train.update(num_steps=4, checkpoint_every_steps=2, eval_every_steps=100)
  config.eval.bleu = False         # no decoding: seconds less to compile
  workdir, checkpoints = str(tmp_path), tmp_path / 'checkpoints'
  trainer.train_and_evaluate(config, workdir)
  _truncate_array_files(checkpoints / '4')
  before = _snapshot(checkpoints)

  parts = components.build(config, workdir)
  with caplog.at_level(logging.WARNING):
    _, step, chosen = restored.restore_params(config, workdir, parts, None)
  assert (step, chosen) == (2, [2])
  assert any('checkpoint step 4' in w and 'skipping it' in w for w in _warnings(caplog))
  with pytest.raises(UserError) as info:
    restored.restore_params(config, workdir, parts, 4)
  message = str(info.value)
  assert message.startswith(f'checkpoint step 4 in {checkpoints} is damaged (')
  assert '--step=2' in message and '\n' not in message
  assert _snapshot(checkpoints) == before          # evaluation writes nothing

  caplog.clear()
  config.train.num_steps = 6
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(config, workdir)
  assert any(f'moved damaged checkpoint step 4 to {checkpoints}/damaged/4' in w
             for w in _warnings(caplog))
  assert _snapshot(checkpoints / 'damaged' / '4') == {
      k[len('4/'):]: v for k, v in before.items() if k.startswith('4/')}
  template = jax.eval_shape(lambda: components.init_state(parts, config.train.seed))
  with checkpoint.Checkpointer(workdir, read_only=True) as ckpt:
    assert ckpt.all_steps() == [2, 4, 6]            # a new step 4, and the final step 6
    for saved in (4, 6):
      state, _, _, step = ckpt.restore(template, step=saved)
      assert step == int(state.step) == saved
