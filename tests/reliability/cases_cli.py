"""Catalogue cases for the command line and the run modes: flags a mode does not use, experiment files that exit or return the wrong thing, translate without input, misspelled flags and values (see catalogue.py and runner.py)."""
from tests.reliability.runner import Case  # pylint: disable=unused-import

SMOKE = '--experiment=experiments/copy_task.py:smoke'


def _experiment_file(text: str):
  """Writes `text` to {tmp}/exp.py (catalogue.experiment_file, kept here to avoid a cycle)."""
  def setup(tmp, workdir):
    (tmp / 'exp.py').write_text(text)
  return setup


def _input_file(tmp, workdir):
  (tmp / 'in.txt').write_text('5 6 7\n9 8\n')


CASES = [
    # --- flags the mode does not use (cli.FLAG_MODES) ---------------------------------------
    Case('step_in_train', [SMOKE, '--step=2'], '--step does not apply to --mode=train'),
    Case('input_in_train', [SMOKE, '--input={tmp}/in.txt'], '--input does not apply to --mode=train',
         setup=_input_file),
    Case('export_dir_in_train', [SMOKE, '--export_dir={tmp}/out'],
         '--export_dir does not apply to --mode=train'),
    Case('buffer_lines_in_train', [SMOKE, '--buffer_lines=4'],
         '--buffer_lines does not apply to --mode=train'),
    Case('input_in_eval', [SMOKE, '--mode=eval', '--input={tmp}/in.txt'],
         '--input does not apply to --mode=eval', workdir='run', setup=_input_file),
    Case('export_dir_in_eval', [SMOKE, '--mode=eval', '--export_dir={tmp}/out'],
         '--export_dir does not apply to --mode=eval', workdir='run'),
    Case('export_dir_in_translate', [SMOKE, '--mode=translate', '--export_dir={tmp}/out'],
         '--export_dir does not apply to --mode=translate', workdir='run', stdin='5 6 7\n'),
    Case('buffer_lines_in_sample', [SMOKE, '--mode=sample', '--buffer_lines=4'],
         '--buffer_lines does not apply to --mode=sample', workdir='run'),
    Case('input_in_export', [SMOKE, '--mode=export', '--input={tmp}/in.txt'],
         '--input does not apply to --mode=export', workdir='run', setup=_input_file),
    Case('buffer_lines_with_input_file', [SMOKE, '--mode=translate', '--input={tmp}/in.txt',
                                          '--buffer_lines=4'],
         '--buffer_lines applies to standard input only', workdir='run', setup=_input_file),
    Case('multihost_in_translate', [SMOKE, '--mode=translate', '--multihost'],
         '--multihost does not apply to --mode=translate', workdir='run', stdin='5 6 7\n'),
    Case('coordinator_without_multihost', [SMOKE, '--coordinator_address=127.0.0.1:1'],
         '--coordinator_address only applies to --multihost'),

    # --- experiment files that exit, or whose get_config() returns no ConfigDict -----------
    Case('experiment_calls_sys_exit', ['--experiment={tmp}/exp.py'],
         'exp.py line 2 exits (SystemExit(0)) while the experiment loads',
         setup=_experiment_file('import sys\nsys.exit(0)\n')),
    Case('get_config_raises_system_exit', ['--experiment={tmp}/exp.py'],
         'exp.py line 2 exits (SystemExit(None))',
         setup=_experiment_file('def get_config(arg=None):\n  raise SystemExit\n')),
    Case('get_config_returns_none', ['--experiment={tmp}/exp.py'],
         'get_config() returned None, not an ml_collections.ConfigDict',
         setup=_experiment_file('def get_config(arg=None):\n  pass\n')),
    Case('get_config_returns_dict', ['--experiment={tmp}/exp.py'],
         'get_config() returned a dict, not an ml_collections.ConfigDict',
         setup=_experiment_file('def get_config(arg=None):\n  return {"train": {"num_steps": 2}}\n')),
    Case('get_config_returns_none_with_override',
         ['--experiment={tmp}/exp.py', '--experiment.train.num_steps=3'],
         'get_config() returned None', setup=_experiment_file('def get_config(arg=None):\n  pass\n')),

    # --- settings this machine cannot run -----------------------------------------------------
    Case('cudnn_attention_without_gpu', [SMOKE, '--experiment.model.attention_impl=cudnn'],
         "model.attention_impl='cudnn' needs"),

    # --- misspelled flags -------------------------------------------------------------------
    Case('misspelled_workdir_flag', [SMOKE, '--workdirr={workdir}'], 'did you mean --workdir'),
    Case('misspelled_buffer_lines_flag', [SMOKE, '--mode=translate', '--bufer_lines=4'],
         'did you mean --buffer_lines', workdir='run'),
    Case('misspelled_mode_value', [SMOKE, '--mode=translat'],
         'bad value --mode=translat: did you mean translate?'),
    Case('config_flag_for_the_experiment', ['--config=experiments/copy_task.py:smoke'],
         'unknown flag --config: did you mean --experiment?'),
    Case('config_override_for_the_experiment', [SMOKE, '--config.train.num_steps=3'],
         'did you mean --experiment.train.num_steps?'),
]
