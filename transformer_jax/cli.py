"""The command line: train (default), evaluate a checkpoint, translate, sample an LM, draw a
Transformer's attention maps, or run and report a sweep.

  transformer-jax train --experiment=experiments/multi30k.py --workdir=runs/m30k
  transformer-jax eval --workdir=runs/m30k --experiment.eval.split=test
  python launch.py --experiment=experiments/multi30k.py --workdir=runs/m30k --mode=eval \
      --experiment.eval.split=test
  python -m transformer_jax translate --workdir=runs/m30k < sentences.txt

The installed `transformer-jax` command (and `python -m transformer_jax`) takes the mode as
its first word; `python launch.py` in the checkout takes `--mode=`; every other flag is the
same. Every `--experiment.<section>.<field>=<value>` overrides a field of the experiment's
get_config(); `--print_config` lists every field with its value and type. The modes that read
a trained run (eval, translate, sample, visualize) take the run's own config.json when
--experiment is not given, so `--workdir` is enough:

  transformer-jax translate --workdir=runs/m30k --experiment.decode.beam_size=8

Relative paths start in the current directory (transformer_jax/base/paths.py). Mistakes in flags,
configs or data end with one line naming the problem and the fix (exit code 2). Only this
module (with cli_config.py) reads flags or calls `jax.config.update`.
"""
import functools
import os
import sys
import threading

from absl import app
from absl import flags
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import paths
from transformer_jax.base import process_exit
from transformer_jax.run import overrides as cli_config

_WORKDIR = flags.DEFINE_string('workdir', None, 'run folder; default runs/<experiment>[_<variant>] '
                               'in the current directory')
_MODE = flags.DEFINE_enum('mode', 'train',
                          ['train', 'eval', 'translate', 'sample', 'visualize', 'report',
                           'archive', 'export'],
                          'what to do (visualize: attention maps and the position table as '
                          'PNGs; report: a sweep\'s table and plot; archive: a sweep\'s results '
                          'without checkpoints, to --sweep_archive); the transformer-jax '
                          'command takes it as its first word')


class _StepParser(flags.ArgumentParser):
  """--step: an integer, or 'best' (the step train.keep_best kept; restored.BEST_STEP)."""

  def parse(self, argument):
    text = str(argument).strip()
    if text == 'best':
      return text
    try:
      return int(text)
    except ValueError:
      raise ValueError(f"{argument!r} is neither a step number nor 'best'") from None

  def flag_type(self):
    return "int or 'best'"


_STEP = flags.DEFINE(_StepParser(), 'step', None, "eval/translate/sample/visualize/export: "
                     "checkpoint step, or 'best' (the step train.keep_best kept); default: the "
                     'latest')
_INPUT = flags.DEFINE_string('input', '-', 'translate: file of source sentences, - for stdin; '
                             'sample: prompts to continue (without it: decode.num_samples); '
                             'visualize: sentences to draw (without it: 2 of eval.split)')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'join a multi-process run (jax.distributed)')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'multihost: host:port of process 0')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'multihost: number of processes')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'multihost: this process\'s index')
_SWEEP = flags.DEFINE_string('sweep', None, 'sweep file, optionally with a variant: '
                             'experiments/ablations/<name>.py[:variant]; runs its members')
_SWEEP_PARALLEL = flags.DEFINE_integer('sweep_parallel', 1, 'sweep: members run at once (one '
                                       'GPU each where there are GPUs)')
_SWEEP_PIN_CORES = flags.DEFINE_bool(
    'sweep_pin_cores', False, 'sweep on a CPU: pin each of the --sweep_parallel members to its '
    'own share of the cores (more members per hour; their floats then differ from unpinned runs)')
_SWEEP_LIST = flags.DEFINE_bool('sweep_list', False, 'sweep: print index, name, status and '
                                'command of every member, then exit')
_SWEEP_MEMBER = flags.DEFINE_integer('sweep_member', None, 'sweep: run only member K (for a '
                                     'cluster job array)')
_SWEEP_ARCHIVE = flags.DEFINE_string(
    'sweep_archive', None, 'sweep, --mode=archive: folder that receives every done member\'s '
    'results (no checkpoints); itself a sweep folder to report from or resume with')
_SWEEP_ALLOW_MIXED = flags.DEFINE_bool(
    'sweep_allow_mixed', False, 'sweep: resume members, and pool them in the report, although '
    'they ran with other code or library versions (provenance.json); the report marks them')
_SWEEP_RERUN = flags.DEFINE_string(
    'sweep_rerun', None, 'sweep: members to run again from scratch, by index or name, comma '
    'separated (their old folders are moved aside to <name>.old-<time>, never deleted)')
_SWEEP_PER_DEVICE = flags.DEFINE_integer(
    'sweep_per_device', 1, 'sweep with GPUs: members sharing one GPU (each gets 1/M of its '
    'memory); --sweep_parallel may then be up to GPUs x M')
_SWEEP_RESAMPLES = flags.DEFINE_integer(
    'sweep_resamples', 10000, 'sweep report: resamples of the two-level bootstrap')
_SWEEP_ALSO = flags.DEFINE_list(
    'sweep_also', [], 'sweep report: more sweep folders whose rows join this report (they share '
                      'its baseline row and evaluation split)')
_MULTIHOST_TIMEOUT = flags.DEFINE_integer(
    'multihost_timeout', 300, 'multihost: seconds to wait for every process to join')
_PRINT_CONFIG = flags.DEFINE_bool(
    'print_config', False, 'print every field of the config this command would use (the '
    'experiment with its overrides; without --experiment, the run\'s config.json in --workdir) '
    'as `section.field = value  # type`, then exit without writing anything')
_BUFFER_LINES = flags.DEFINE_integer(
    'buffer_lines', 16, 'translate from stdin: lines translated together as they arrive (a '
    'group also ends after a short pause in the input); a file is translated whole')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None, 'export: the new (or empty) folder to write '
                                  'the model to, for transformer_jax.load_pretrained; default '
                                  '<workdir>/export')

# Modes that read a trained run: without --experiment they use its config.json.
RUN_MODES = ('eval', 'translate', 'sample', 'visualize', 'export')
# How sweep members are started when nothing else is said (launch.py passes itself).
DEFAULT_LAUNCHER = (sys.executable, '-m', 'transformer_jax')


def start_multihost():
  """Joins the multi-process run, saying what it waits for; gives up after --multihost_timeout.

  jax aborts the whole process (a C++ fatal error, no Python exception) when its own
  initialization timeout passes, so a watchdog thread gives up first with one line.
  """
  import jax
  if _MULTIHOST_TIMEOUT.value < 1:
    raise UserError(f'--multihost_timeout={_MULTIHOST_TIMEOUT.value} must be at least 1 second')
  if jax.config.jax_platforms in (None, '', 'cpu') and os.environ.get('JAX_PLATFORMS', 'cpu') == 'cpu':
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  where = _COORDINATOR.value or 'the coordinator the cluster names'
  logging.warning('multihost: joining the processes at %s (waiting up to %d s for all of them; '
                  '--multihost_timeout)', where, _MULTIHOST_TIMEOUT.value)
  joined = threading.Event()

  def give_up():
    if not joined.wait(_MULTIHOST_TIMEOUT.value):
      print(f'error: --multihost: not all {_NUM_PROCESSES.value or ""} processes joined at '
            f'{where} within {_MULTIHOST_TIMEOUT.value} s: start every process with the same '
            '--coordinator_address and --num_processes (and its own --process_id), or raise '
            '--multihost_timeout', file=sys.stderr, flush=True)
      os._exit(2)   # pylint: disable=protected-access  (the main thread is blocked in C++)

  threading.Thread(target=give_up, daemon=True).start()
  try:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                               initialization_timeout=_MULTIHOST_TIMEOUT.value + 60)
  except (ValueError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'--multihost could not start ({first}): give --coordinator_address=host:port, '
                    '--num_processes and --process_id, or run under a cluster that provides them '
                    '(Slurm, TPU)') from None
  finally:
    joined.set()


class _OwnInfoOnly:
  """Lets INFO records through only from this project; libraries (orbax, tfds) say only
  warnings, and without the tracebacks they attach (orbax logs one per failed write thread
  before the error reaches us, which then says what failed in one line)."""

  def filter(self, record) -> bool:
    if paths.is_own_source(record.pathname):
      return True
    if record.exc_info or record.exc_text:
      record.exc_info, record.exc_text = None, None
    return record.levelno >= 30


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  process_exit.exit_within(2)      # a thread left blocked (orbax's, after a failed write) must
                                   # not keep the process alive after its error line


def mode_words():
  """The first words the transformer-jax command takes: the values of --mode."""
  return tuple(flags.FLAGS['mode'].parser.enum_values)


def subcommand_argv(argv):
  """`transformer-jax <mode> [flags]` as `[prog, --mode=<mode>, flags...]`; argv without a
  leading word is returned as it is (the mode then comes from --mode, default train)."""
  argv = list(argv)
  if len(argv) < 2 or argv[1].startswith('-'):
    return argv
  word, rest = argv[1], argv[2:]
  if word not in mode_words():
    raise UserError(f'unknown command {word!r}: give one of {", ".join(mode_words())} first, '
                    'e.g. transformer-jax train --experiment=experiments/copy_task.py')
  given = [a for a in rest if a.startswith(('--mode=', '-mode='))]
  if any(a.split('=', 1)[1] != word for a in given) or any(a in ('--mode', '-mode') for a in rest):
    raise UserError(f'the command {word!r} and a --mode flag both name the mode: drop --mode')
  return [argv[0], f'--mode={word}', *rest]


def console_main():
  """The `transformer-jax` console script (and `python -m transformer_jax`)."""
  try:
    argv = subcommand_argv(sys.argv)
  except UserError as e:
    _fail(str(e))
  program = sys.modules['__main__']
  if not getattr(program, '__doc__', None):   # --help prints the program's docstring
    program.__doc__ = __doc__
  main(argv)


def main(argv=None, launcher=DEFAULT_LAUNCHER):
  """Parses `argv` (default sys.argv; flags only) and runs the mode; `launcher` starts a
  sweep's members (launch.py passes `python launch.py`)."""
  argv = cli_config.resolve_experiment_flag(sys.argv if argv is None else argv)
  sys.argv = argv           # overrides are read back from sys.argv once the mode is known
  cli_config.define_experiment_flag(argv)
  _show_in_help(argv[0])
  app.run(functools.partial(_run_or_fail, launcher=tuple(launcher)), argv=argv,
          flags_parser=cli_config.parse_flags)


def _show_in_help(program: str) -> None:
  """--help lists the key flags of the program that runs (launch.py, transformer-jax), and
  ours are defined here, so they are made its key flags."""
  by_module = flags.FLAGS.flags_by_module_dict()
  for module in (__name__, cli_config.__name__):
    for flag in by_module.get(module, ()):
      flags.FLAGS.register_key_flag_for_module(program, flag)


# Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT = 130


def _run_or_fail(argv, launcher):
  """`run`, with a UserError as one `error:` line (exit 2) and Ctrl-C as a quiet exit 130.

  Training turns its first SIGINT into a save-and-stop (trainer.py); anywhere else, e.g.
  translate waiting for the next line of stdin, Ctrl-C stops the command without a traceback.
  """
  try:
    run(argv, launcher)
  except UserError as e:
    _fail(str(e))
  except KeyboardInterrupt:
    sys.stderr.flush()
    sys.exit(INTERRUPTED_EXIT)


def run(argv, launcher=DEFAULT_LAUNCHER):
  """Everything checkable from the flags and the config alone is checked before jax loads."""
  from transformer_jax.base import workdir as workdir_lib
  from transformer_jax.train import validation
  if len(argv) > 1:
    raise UserError(f'unexpected argument {argv[1]!r}: every option is a flag, e.g. '
                    '--experiment=experiments/multi30k.py --workdir=runs/m30k (see --help)')
  _check_sweep_flags()
  if _SWEEP.value is not None:
    from transformer_jax.sweep import commands
    commands.main(_SWEEP.value, _WORKDIR.value, _MODE.value, parallel=_SWEEP_PARALLEL.value,
                  pin_cores=_SWEEP_PIN_CORES.value,
                  list_only=_SWEEP_LIST.value, member=_SWEEP_MEMBER.value,
                  extra=cli_config.split_overrides(sys.argv)[1],
                  launcher=list(launcher), archive_to=_SWEEP_ARCHIVE.value,
                  allow_mixed=_SWEEP_ALLOW_MIXED.value, rerun=_SWEEP_RERUN.value,
                  per_device=_SWEEP_PER_DEVICE.value, resamples=_SWEEP_RESAMPLES.value,
                  also=list(_SWEEP_ALSO.value))
    return
  if _MODE.value in ('report', 'archive'):
    raise UserError(f'--mode={_MODE.value} works on a sweep: give '
                    '--sweep=experiments/ablations/<name>.py')
  check_mode_flags(_MODE.value)
  workdir = cli_config.default_workdir() if _WORKDIR.value is None else _WORKDIR.value
  config, source = cli_config.resolve_config(workdir, mode=_MODE.value, run_modes=RUN_MODES,
                                             print_config=_PRINT_CONFIG.value)
  if _PRINT_CONFIG.value:
    from transformer_jax.run import saved_config as run_config
    print(f'# {source}\n{run_config.describe(config)}')
    return
  validation.check_config(config, training=_MODE.value == 'train')
  workdir_lib.check_path(workdir, writes=_MODE.value in ('train', 'eval', 'visualize'))
  if isinstance(_STEP.value, int) and _STEP.value < 0:
    raise UserError(f'--step={_STEP.value} is negative: give a saved checkpoint step, or omit it '
                    'for the latest')
  if _BUFFER_LINES.value < 1:
    raise UserError(f'--buffer_lines={_BUFFER_LINES.value} must be at least 1: give the number '
                    'of lines to translate together (default 16)')
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  if _MULTIHOST.value:
    start_multihost()
  import jax
  logging.info('JAX %s: process %d/%d, %d local / %d global devices (%s)', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  check_attention_impl(config, _MODE.value, jax.default_backend())
  dispatch(_MODE.value, config, workdir)


# Flags of one run that a sweep has no use for: its members get theirs from the sweep file.
_RUN_ONLY_FLAGS = ('step', 'input', 'print_config', 'buffer_lines', 'export_dir', 'multihost',
                   'coordinator_address', 'num_processes', 'process_id', 'multihost_timeout')
_SWEEP_ONLY_FLAGS = ('sweep_parallel', 'sweep_pin_cores', 'sweep_list', 'sweep_member',
                     'sweep_archive', 'sweep_allow_mixed', 'sweep_rerun', 'sweep_per_device',
                     'sweep_resamples', 'sweep_also')


# The modes that use each flag that not every mode uses (--workdir, --experiment and
# --print_config apply to all); given to any other mode, it is an error, not a silent no-op.
# Keep it in step with `dispatch` (and modes.py): a flag is listed for a mode that reads it.
FLAG_MODES = {
    'step': ('eval', 'translate', 'sample', 'visualize', 'export'),
    'input': ('translate', 'sample', 'visualize'),
    'buffer_lines': ('translate',),
    'export_dir': ('export',),
    'multihost': ('train', 'eval'),    # the others refuse more than one process
}
# Flags that only tune --multihost.
_MULTIHOST_FLAGS = ('coordinator_address', 'num_processes', 'process_id', 'multihost_timeout')


def _given(name: str) -> bool:
  """Whether --name is on the command line (a boolean only when it is switched on)."""
  flag = flags.FLAGS[name]
  return flag.present and not (isinstance(flag.value, bool) and not flag.value)


def check_mode_flags(mode: str) -> None:
  """A flag that `mode` would ignore is an error (FLAG_MODES), as sweep flags without --sweep
  are; so is reading a closed standard input. Only flags are looked at: nothing is loaded."""
  for name, users in FLAG_MODES.items():
    if _given(name) and mode not in users:
      raise UserError(f'--{name} does not apply to --mode={mode}: it is for --mode='
                      f'{"|".join(users)} only; drop it, or give the mode that uses it')
  if not _MULTIHOST.value:
    for name in _MULTIHOST_FLAGS:
      if _given(name):
        raise UserError(f'--{name} only applies to --multihost: add --multihost to join a '
                        f'multi-process run, or drop --{name}')
  if mode == 'translate' and _given('buffer_lines') and _INPUT.value != '-':
    raise UserError(f'--buffer_lines applies to standard input only: --input={_INPUT.value} is '
                    'a file and is translated whole; drop --buffer_lines')
  reads_stdin = _INPUT.value == '-' and (mode == 'translate' or _given('input'))
  if reads_stdin and mode in FLAG_MODES['input'] and stdin_is_closed():
    raise UserError(f'--mode={mode} reads standard input, but it is closed: give --input=FILE, '
                    'or pipe the lines in (e.g. `< lines.txt` or `cat lines.txt |`)')


def stdin_is_closed() -> bool:
  """Whether there is no standard input at all (`<&-` in a shell, a daemon): not an empty one
  (/dev/null), which simply ends at once."""
  if sys.stdin is None or sys.stdin.closed:
    return True
  try:
    fd = sys.stdin.fileno()
  except (AttributeError, OSError, ValueError):     # a StringIO (tests): not closed
    return False
  try:
    os.fstat(fd)
  except OSError:
    return True
  return False


def check_attention_impl(config, mode: str, backend: str) -> None:
  """model.attention_impl='cudnn' needs a GPU and bfloat16/float16: refused before the mode
  writes anything (a run trained with it is refused where it cannot be evaluated, too)."""
  model = config.get('model', {})
  if model.get('attention_impl') != 'cudnn':
    return
  fix = ('set --experiment.model.attention_impl=auto (cuDNN where it applies, else explicit) '
         'or xla' if mode == 'train' else
         'run it on a machine with a GPU (model settings cannot change after training)')
  if backend != 'gpu':
    raise UserError(f"model.attention_impl='cudnn' needs a GPU (cuDNN flash attention), and "
                    f'JAX runs on {backend} here: {fix}')
  if model.get('dtype') not in ('bfloat16', 'float16'):
    raise UserError(f"model.attention_impl='cudnn' needs model.dtype=bfloat16 (cuDNN flash "
                    f"attention takes no {model.get('dtype')}): set "
                    '--experiment.model.dtype=bfloat16, or model.attention_impl=auto')


def _check_sweep_flags() -> None:
  """A flag the command would ignore is an error, not a silent no-op."""
  if _SWEEP.value is None:
    for name in _SWEEP_ONLY_FLAGS:
      if _given(name):
        raise UserError(f'--{name} needs --sweep=experiments/ablations/<name>.py: it only '
                        'applies to a sweep')
    return
  if _given('experiment'):
    raise UserError('--experiment does not go with --sweep: the sweep file names its base '
                    'experiment; change its fields for every member with '
                    '--experiment.<section>.<field>=<value>')
  for name in _RUN_ONLY_FLAGS:
    if _given(name):
      raise UserError(f'--{name} does not apply to --sweep: run it on one member\'s folder '
                      '(<workdir>/<row>_seed<k>) without --sweep')
  if _SWEEP_MEMBER.value is not None and (_given('sweep_parallel') or _SWEEP_LIST.value):
    other = '--sweep_parallel' if _given('sweep_parallel') else '--sweep_list'
    raise UserError(f'--sweep_member and {other} do not go together: --sweep_member runs one '
                    'member; drop one of them')


def dispatch(mode: str, config, workdir: str) -> None:
  """Runs one mode on a checked config: one line per mode."""
  from transformer_jax.run import modes
  if mode == 'train':
    modes.train(config, workdir)
  elif mode == 'eval':
    modes.evaluate(config, workdir, step=_STEP.value)
  elif mode == 'sample':
    prompts = _INPUT.value if flags.FLAGS['input'].present else None
    modes.sample(config, workdir, step=_STEP.value, input_path=prompts)
  elif mode == 'visualize':
    from transformer_jax.analysis import visualize
    sentences = _INPUT.value if flags.FLAGS['input'].present else None
    visualize.visualize(config, workdir, step=_STEP.value, input_path=sentences)
  elif mode == 'translate':
    modes.translate(config, workdir, step=_STEP.value, input_path=_INPUT.value,
                    buffer_lines=_BUFFER_LINES.value)
  elif mode == 'export':
    modes.export(config, workdir, export_dir=_EXPORT_DIR.value, step=_STEP.value)
  else:
    raise UserError(f'--mode={mode} has no runner here: use one of {", ".join(mode_words())}')
