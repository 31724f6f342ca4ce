"""Catalogue cases for the checkpoints folder, the run's recorded model and memory: a
checkpoints path that is a file or cannot be written, a config.json edited to build another
model, a model too big for the memory there is (see catalogue.py and runner.py;
integrity_test.py covers the tampering that is skipped as damage)."""
import json
import os
import shutil

from tests.reliability.runner import Case

SMOKE = '--experiment=experiments/copy_task.py:smoke'
RESUME = '--experiment.train.num_steps=4'           # resumes the 2-step smoke run of 'run'


def _checkpoints_file(tmp, workdir):
  shutil.rmtree(workdir / 'checkpoints')
  (workdir / 'checkpoints').write_text('not a folder\n')


def _immutable_checkpoints(tmp, workdir):
  from tests.reliability import catalogue  # pylint: disable=import-outside-toplevel
  path = workdir / 'checkpoints'
  if os.system(f'chattr +i {path} 2>/dev/null') != 0:
    raise NotImplementedError('chattr +i is not available here')
  catalogue.IMMUTABLE.append(path)             # released by the test


def _edited_config(field, value):
  def setup(tmp, workdir):
    config = json.loads((workdir / 'config.json').read_text())
    config['model'][field] = value
    (workdir / 'config.json').write_text(json.dumps(config, indent=2))
  return setup


CASES = [
    Case('checkpoints_is_a_file_on_resume', [SMOKE, RESUME], 'checkpoints is not a folder',
         workdir='run', setup=_checkpoints_file),
    Case('checkpoints_is_a_file_on_eval', [SMOKE, '--mode=eval'], 'checkpoints is not a folder',
         workdir='run', setup=_checkpoints_file),
    Case('checkpoints_not_writable_on_resume', [SMOKE, RESUME], 'checkpoints cannot be written',
         workdir='run', setup=_immutable_checkpoints),
    Case('config_json_edited_to_another_model', ['--mode=eval'],
         "model.positional='sinusoidal' but the config gives 'none'", workdir='run',
         setup=_edited_config('positional', 'none')),
    Case('override_builds_another_model_on_eval', [SMOKE, '--mode=eval',
                                                   '--experiment.model.norm_order=pre'],
         'another config', workdir='run'),
    Case('model_too_big_for_memory', [SMOKE, '--experiment.model.model_dim=200000'],
         'skip_memory_check=True', workdir='absent'),
]
