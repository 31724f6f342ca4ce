"""Where a relative path leads: one rule for the command line and for every config field.

A relative path is relative to the current directory, as with any command-line tool. That
holds for --workdir, --input, and the config's paths: data.raw_dir, data.data_dir,
data.tokenizer_dir, data.sst2_dir, eval.simlex_path and train.init_embeddings. The default
workdir, `runs/<experiment>[_<variant>]`, is made there too. The shipped defaults
(`data.raw_dir='../shared/data/multi30k'`, ...) are written for a command started in the
checkout's root, where `../shared` sits beside the checkout; from anywhere else, set them.

Experiment and sweep files are the one addition: `experiments/<name>.py` (or
`experiments/ablations/<name>.py`) that is not found in the current directory means the file
shipped with the package, so `--experiment=experiments/multi30k.py` works from any directory
once the package is installed. A path that exists where it points always wins.

A run's config.json keeps its paths as they were given: start eval/translate/sample of a run
from the directory it was trained from. Nothing here imports jax.
"""
import os
import pathlib
from typing import Optional

PACKAGE_DIR = pathlib.Path(__file__).resolve().parents[1]
# The experiment files ship inside the package (transformer_jax/experiments), so installing it
# claims no top-level `experiments` name of a user's own project.
EXPERIMENTS_DIR = PACKAGE_DIR / 'experiments'
EXPERIMENTS_PREFIX = 'experiments'
DEFAULT_EXPERIMENT = 'experiments/copy_task.py'
RUNS_DIR = 'runs'


def shipped_file(path: str) -> Optional[str]:
  """The shipped file that the relative `experiments/...` path names, else None."""
  parts = pathlib.PurePath(path).parts
  if pathlib.PurePath(path).is_absolute() or len(parts) < 2 or parts[0] != EXPERIMENTS_PREFIX:
    return None
  candidate = EXPERIMENTS_DIR.joinpath(*parts[1:])
  return str(candidate) if candidate.is_file() else None


def resolve_experiment(spec: str) -> str:
  """`path[:variant]` as given when the path exists from here, else with the path of the
  shipped file it names; unchanged when neither exists (the caller reports it)."""
  path, sep, variant = spec.partition(':')
  if not path or os.path.exists(path):
    return spec
  shipped = shipped_file(path)
  return f'{shipped}{sep}{variant}' if shipped else spec


def default_experiment() -> str:
  """The absolute path of the default experiment (the shipped copy task)."""
  return str(EXPERIMENTS_DIR / pathlib.PurePath(DEFAULT_EXPERIMENT).name)


def shipped_experiments() -> str:
  """'experiments/a.py, experiments/b.py, ...': the shipped experiment files, for messages."""
  names = sorted(p.name for p in EXPERIMENTS_DIR.glob('*.py')
                 if p.name not in ('__init__.py', 'base.py'))
  return ', '.join(f'{EXPERIMENTS_PREFIX}/{n}' for n in names)


def default_workdir(experiment: str) -> str:
  """`<current directory>/runs/<stem>[_<variant>]` for the experiment `path[:variant]`."""
  path, _, variant = experiment.partition(':')
  stem = pathlib.PurePath(path).stem
  return os.path.abspath(os.path.join(RUNS_DIR, f'{stem}_{variant}' if variant else stem))


def is_own_source(filename: str) -> bool:
  """Whether `filename` is this package's or a shipped experiment's code (for log filters)."""
  path = os.path.abspath(filename)
  return any(path.startswith(str(folder) + os.sep) for folder in (PACKAGE_DIR, EXPERIMENTS_DIR))


def shown(path: str) -> str:
  """`path` as a command to paste should name it: relative to the working directory when it
  lies below it (a report written here, read on another machine), else as given."""
  relative = os.path.relpath(os.path.abspath(path))
  return path if relative == '..' or relative.startswith('..' + os.sep) else relative
