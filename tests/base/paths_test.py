"""transformer_jax/base/paths.py: relative paths start in the current directory; a shipped
`experiments/...` file is found from anywhere."""
import os
import pathlib
import subprocess
import sys

from transformer_jax.base import paths

REPO = pathlib.Path(__file__).resolve().parents[2]
SHIPPED_COPY_TASK = str(paths.EXPERIMENTS_DIR / 'copy_task.py')


def test_shipped_experiment_is_found_from_another_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  shipped = paths.resolve_experiment('experiments/copy_task.py:smoke')
  assert shipped == SHIPPED_COPY_TASK + ':smoke'
  assert paths.resolve_experiment('experiments/ablations/table3.py') == str(
      paths.EXPERIMENTS_DIR / 'ablations' / 'table3.py')


def test_a_file_where_the_path_points_wins_over_the_shipped_one(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'experiments').mkdir()
  (tmp_path / 'experiments' / 'copy_task.py').write_text('# my own\n')
  mine = 'experiments/copy_task.py:smoke'
  assert paths.resolve_experiment(mine) == mine


def test_unknown_and_non_experiment_paths_stay_as_given(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  for spec in ('experiments/no_such.py', 'mine/copy_task.py', 'copy_task.py', '/abs/x.py:v', ''):
    assert paths.resolve_experiment(spec) == spec


def test_from_the_checkout_root_the_shipped_files_are_found(monkeypatch):
  monkeypatch.chdir(REPO)        # the checkout has no experiments/ of its own: they ship inside
  assert not (REPO / 'experiments').exists()
  assert paths.resolve_experiment('experiments/multi30k.py:smoke') == (
      str(paths.EXPERIMENTS_DIR / 'multi30k.py') + ':smoke')
  assert paths.default_experiment() == SHIPPED_COPY_TASK


def test_default_workdir_is_runs_in_the_current_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.default_workdir(SHIPPED_COPY_TASK) == str(tmp_path / 'runs' / 'copy_task')
  assert paths.default_workdir('x/multi30k.py:smoke') == str(tmp_path / 'runs' / 'multi30k_smoke')


def test_a_path_below_the_current_directory_is_shown_relative_and_others_as_given(
    tmp_path, monkeypatch):
  (tmp_path / 'here' / 'runs').mkdir(parents=True)
  monkeypatch.chdir(tmp_path / 'here')
  assert paths.shown(str(tmp_path / 'here' / 'runs')) == 'runs'
  assert paths.shown('runs') == 'runs'
  assert paths.shown(str(tmp_path / 'elsewhere')) == str(tmp_path / 'elsewhere')
  assert paths.shown('../elsewhere') == '../elsewhere'


def test_is_own_source_covers_the_package_and_the_experiments_only():
  assert paths.is_own_source(str(REPO / 'transformer_jax' / 'trainer.py'))
  assert paths.is_own_source(SHIPPED_COPY_TASK)
  assert not paths.is_own_source(os.__file__)


def launch_from(cwd, *args):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  return subprocess.run([sys.executable, str(REPO / 'launch.py'), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=300)


def test_launch_from_another_directory_resolves_experiments_and_data_paths_there(tmp_path):
  """One process from a directory outside the checkout: a shipped experiment by its
  `experiments/...` name, a user's own experiment relative to that directory, and a
  config path (data.raw_dir) relative to it too."""
  mine = tmp_path / 'mine'
  mine.mkdir()
  (mine / 'exp.py').write_text(
      'from transformer_jax.experiments import copy_task\n\n'
      'def get_config(arg=None):\n'
      '  config = copy_task.get_config("smoke")\n'
      '  config.train.num_steps = 3\n'
      '  return config\n')
  shipped = launch_from(tmp_path, '--experiment=experiments/copy_task.py:smoke', '--print_config')
  assert shipped.returncode == 0, shipped.stderr[-2000:]
  assert shipped.stdout.splitlines()[0] == f'# {SHIPPED_COPY_TASK}:smoke'
  own = launch_from(tmp_path, '--experiment=mine/exp.py', '--print_config')
  assert own.returncode == 0, own.stderr[-2000:]
  assert own.stdout.splitlines()[0] == '# mine/exp.py'
  assert 'train.num_steps = 3  # int' in own.stdout
  data = launch_from(tmp_path, '--experiment=experiments/multi30k.py:smoke',
                     '--experiment.data.raw_dir=no_such_data', f'--workdir={tmp_path / "run"}')
  assert data.returncode == 2, data.stderr[-2000:]
  last = data.stderr.strip().splitlines()[-1]
  assert str(tmp_path / 'no_such_data') in last and 'set --experiment.data.raw_dir' in last, last
  assert not (tmp_path / 'runs').exists() and not (tmp_path / 'run').exists()
