"""Stopping on a validation plateau (early_stop.py): the rule by hand, its state rebuilt from
metrics.jsonl, and a real training run that stops where the rule says, is marked finished,
and stops at the same step when it was interrupted before the plateau."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.train import early_stop

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_rule_counts_evaluations_without_improvement():
  plateau = early_stop.Plateau(patience=2, min_delta=0.05)
  assert not plateau.update(100, 3.0)
  assert not plateau.update(200, 2.5)          # improved
  assert not plateau.update(300, 2.47)         # less than min_delta: not an improvement
  assert plateau.update(400, 2.49)             # the second evaluation in a row without one
  assert (plateau.best_step, plateau.best_loss) == (200, 2.5)
  never = early_stop.Plateau(patience=0)
  assert not any(never.update(s, 5.0) for s in range(1, 10))


def test_state_rebuilt_from_records_ignores_steps_after_the_checkpoint():
  records = [{'step': 2, 'split': 'validation', 'loss': 3.0},
             {'step': 2, 'split': 'train', 'loss': 1.0},
             {'step': 4, 'split': 'validation', 'loss': 3.5},
             {'step': 6, 'split': 'validation', 'loss': 9.0},      # after the resume point
             {'step': 4, 'split': 'validation', 'loss': 2.0}]      # logged again on resume
  plateau = early_stop.from_records(records, patience=3, min_delta=0.0, split='validation',
                                    up_to=4)
  assert (plateau.best_step, plateau.best_loss, plateau.since_best) == (4, 2.0, 0)


def test_damaged_marker_is_a_one_line_error(tmp_path):
  (tmp_path / early_stop.MARKER).write_text('{"step": ')
  with pytest.raises(UserError, match='early_stop.json is unreadable'):
    early_stop.read_marker(str(tmp_path))
  assert early_stop.finished_step(str(tmp_path / 'none'), 10) is None


def _train(workdir, num_steps):
  flags = ['--experiment=experiments/copy_task.py:smoke', f'--workdir={workdir}',
           f'--experiment.train.num_steps={num_steps}', '--experiment.train.eval_every_steps=2',
           '--experiment.train.checkpoint_every_steps=2', '--experiment.train.log_every_steps=2',
           '--experiment.train.early_stop_patience=2',
           # Any loss change below 100 is "no improvement": the plateau starts at step 2.
           '--experiment.train.early_stop_min_delta=100']
  return subprocess.run([sys.executable, 'launch.py', *flags], cwd=REPO, capture_output=True,
                        text=True, timeout=600)


def _validation_losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  return {r['step']: r['loss'] for r in records if r['split'] == 'validation'}


def test_training_stops_on_the_plateau_and_resumes_to_the_same_stop(tmp_path):
  whole = tmp_path / 'whole'
  done = _train(whole, 20)
  assert done.returncode == 0, done.stderr[-2000:]
  marker = json.loads((whole / early_stop.MARKER).read_text())
  assert marker['step'] == 6 and marker['best_step'] == 2     # evaluations at 2, 4, 6
  assert sorted(int(p.name) for p in (whole / 'checkpoints').iterdir() if p.name.isdigit())[-1] == 6
  assert early_stop.finished_step(str(whole), 20) == 6
  again = _train(whole, 20)                                   # finished: trains nothing
  assert again.returncode == 0 and 'nothing to train' in again.stderr
  assert max(_validation_losses(whole)) == 6
  # Interrupted before the plateau (a budget of 4 steps), then resumed with the cap:
  # the count of evaluations without improvement survives, so it stops at step 6 too.
  split = tmp_path / 'split'
  first = _train(split, 4)
  assert first.returncode == 0 and not (split / early_stop.MARKER).exists()
  second = _train(split, 20)
  assert second.returncode == 0, second.stderr[-2000:]
  assert json.loads((split / early_stop.MARKER).read_text()) == marker
  assert _validation_losses(split) == pytest.approx(_validation_losses(whole))
