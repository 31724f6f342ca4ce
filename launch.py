"""Runs an experiment: train (default), evaluate a checkpoint, translate, or sample an LM.

  python launch.py                                      # the default experiment (copy task)
  python launch.py --experiment=experiments/multi30k.py --workdir=runs/m30k
  python launch.py --experiment=experiments/multi30k.py:smoke --experiment.train.num_steps=10
  python launch.py --experiment=experiments/multi30k.py --workdir=runs/m30k --mode=eval \
      --experiment.eval.split=test

Every `--experiment.<section>.<field>=<value>` overrides a field of the experiment's
get_config(). Mistakes in flags, configs or data end with one line naming the problem
and the fix (exit code 2).
"""
import os
import pathlib
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parent
DEFAULT_EXPERIMENT = 'experiments/copy_task.py'

_WORKDIR = flags.DEFINE_string('workdir', None, 'run folder; default runs/<experiment>[_<variant>]')
_MODE = flags.DEFINE_enum('mode', 'train', ['train', 'eval', 'translate', 'sample'], 'what to do')
_STEP = flags.DEFINE_integer('step', None, 'eval/translate: checkpoint step (default: latest)')
_INPUT = flags.DEFINE_string('input', '-', 'translate: file of source sentences, - for stdin; '
                             'sample: prompts to continue (without it: decode.num_samples)')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'join a multi-process run (jax.distributed)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'multihost: host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'multihost: number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'multihost: this process\'s index')


def _experiments_list() -> str:
  names = sorted(p.name for p in (REPO / 'experiments').glob('*.py')
                 if p.name not in ('__init__.py', 'base.py'))
  return ', '.join(f'experiments/{n}' for n in names)


def describe_flag_error(error: Exception, argv) -> str:
  """One line for a flag/config mistake, with the fix."""
  text = str(error).replace("\\'", "'").replace('\\n', '\n').strip()
  experiment = next((a.split('=', 1)[1] for a in argv if a.startswith('--experiment=')), '')
  if 'No such file' in text or 'Failed loading config file' in text:
    return f'unknown experiment file {experiment!r}: choose one of {_experiments_list()}'
  if 'Error whilst parsing config file' in text:   # get_config raised: keep its last line
    last = [line for line in text.splitlines() if re.match(r'\s*\w*Error: ', line)][-1:]
    cause = last[0].strip() if last else text.splitlines()[-1]
    return f'{experiment}: {cause}'
  if isinstance(error, (AttributeError, KeyError)):
    key = re.findall(r"'([^'\n]+)'", text)
    key = key[0] if key else text.splitlines()[0]
    override = next((a for a in argv if a.startswith('--experiment.') and key in a), key)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    hint = f' (did you mean {hint.group(1)}?)' if hint else ''
    return (f'unknown config key in {override}{hint}: use a field of the experiment\'s '
            'get_config() (see experiments/base.py)')
  text = ' '.join(text.split())
  return f'bad flag value: {text}; give a value of the right type (see python launch.py --helpfull)'


def _fail_on_flag_error(fn, argv):
  try:
    return fn()
  except Exception as e:  # pylint: disable=broad-except  (turned into one line, exit 2)
    print(f'error: {describe_flag_error(e, argv)}', file=sys.stderr)
    sys.exit(2)


def define_experiment_flag(argv):
  """--experiment; ml_collections loads the default file (and applies overrides) right here."""
  return _fail_on_flag_error(lambda: config_flags.DEFINE_config_file(
      'experiment', str(REPO / DEFAULT_EXPERIMENT),
      'experiment file, optionally with a variant: experiments/<name>.py[:variant]',
      lock_config=True), argv)


def _loaded(config):
  """ml_collections reads the experiment file lazily; touch it so errors surface here."""
  config.to_dict()
  return config


def parse_flags(argv):
  return _fail_on_flag_error(lambda: flags.FLAGS(argv), argv)


def default_workdir() -> str:
  path, _, variant = config_flags.get_config_filename(flags.FLAGS['experiment']).partition(':')
  stem = pathlib.Path(path).stem
  return str(REPO / 'runs' / (f'{stem}_{variant}' if variant else stem))


def start_multihost():
  import jax
  if jax.config.jax_platforms in (None, '', 'cpu') and os.environ.get('JAX_PLATFORMS', 'cpu') == 'cpu':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                             num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)


class _OwnInfoOnly:
  """Lets INFO records through only from this project; libraries (orbax, tfds) say only warnings."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or str(REPO) in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  if _MULTIHOST.value:
    start_multihost()
  import jax
  from transformer_jax.errors import UserError
  from transformer_jax import modes
  config = _fail_on_flag_error(lambda: _loaded(flags.FLAGS['experiment'].value), sys.argv)
  workdir = _WORKDIR.value or default_workdir()
  logging.info('JAX %s: process %d/%d, %d local / %d global devices (%s)', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  try:
    if _MODE.value == 'train':
      modes.train(config, workdir)
    elif _MODE.value == 'eval':
      modes.evaluate(config, workdir, step=_STEP.value)
    elif _MODE.value == 'sample':
      prompts = _INPUT.value if flags.FLAGS['input'].present else None
      modes.sample(config, workdir, step=_STEP.value, input_path=prompts)
    else:
      modes.translate(config, workdir, step=_STEP.value, input_path=_INPUT.value)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  define_experiment_flag(sys.argv)
  app.run(main, flags_parser=parse_flags)
