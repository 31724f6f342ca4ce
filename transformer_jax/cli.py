r"""The command line: train (default), evaluate a checkpoint, translate, sample an LM, draw a
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
configs or data end with one line naming the problem and the fix (exit code 2). --help (or -h)
lists the flags; --version prints the versions of transformer-jax, jax and flax.
"""
# Only this module (with run/overrides.py, the --experiment flag) reads flags or calls
# `jax.config.update`; run/preflight.py knows which flags go together, run/arguments.py reads
# argv before absl does.
import functools
import os
import sys

from absl import app
from absl import flags
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import paths
from transformer_jax.evaluation import console
from transformer_jax.run import arguments
from transformer_jax.run import exit_codes
from transformer_jax.run import multihost
from transformer_jax.run import overrides as cli_config
from transformer_jax.run import preflight

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
# Listed in --help and known to the did-you-mean of a misspelt flag; main() answers it before
# anything else is parsed or loaded.
flags.DEFINE_bool('version', False, 'print the versions of transformer-jax, jax and flax, then '
                  'exit')


# Modes that read a trained run: without --experiment they use its config.json.
RUN_MODES = ('eval', 'translate', 'sample', 'visualize', 'export')
# How sweep members are started when nothing else is said (launch.py passes itself).
DEFAULT_LAUNCHER = (sys.executable, '-m', 'transformer_jax')
# The name the installed command (and `python -m transformer_jax`) gives itself in --help.
PROGRAM = 'transformer-jax'
# How an entry point ends its process with main's exit code: sys.exit(ready_to_exit(code)).
ready_to_exit = exit_codes.ready_to_exit


def main(argv=None, launcher=DEFAULT_LAUNCHER) -> int:
  """Runs one command and returns its exit code; the process ends only where a caller ends it.

  Args:
    argv: the program's name, then flags (default sys.argv); `--mode=` picks the mode.
    launcher: the command that starts a sweep's members (launch.py passes `python launch.py`).

  Returns:
    0 when done (also after --help or --version), 2 after a mistake's one `error:` line,
    130 when interrupted (Ctrl-C).
  """
  argv = list(sys.argv if argv is None else argv)
  if arguments.asks(argv, (arguments.VERSION_FLAG,)):
    import transformer_jax
    print(arguments.version_line(PROGRAM, transformer_jax.__version__))
    return exit_codes.DONE
  program_argv = sys.argv
  try:
    return _run_app(argv, launcher)
  finally:
    sys.argv = program_argv


def _run_app(argv, launcher) -> int:
  """`main` past --version: absl parses the flags (again, when called before) and runs the mode."""
  if flags.FLAGS.is_parsed():       # main() ran before in this process: start from the defaults,
    flags.FLAGS.unparse_flags()     # with INFO logs as app.run's first call has them
    flags.FLAGS.verbosity = logging.INFO
  argv = arguments.long_help(cli_config.resolve_experiment_flag(argv))
  sys.argv = argv           # overrides are read back from sys.argv once the mode is known
  try:
    cli_config.define_experiment_flag(argv)
    _show_in_help(argv[0])
    app.run(functools.partial(_run_or_fail, launcher=tuple(launcher)), argv=argv,
            flags_parser=cli_config.parse_flags)
  except SystemExit as e:   # app.run always ends in one; so does a mistake in the flags
    code = exit_codes.of_system_exit(e.code)
    helped = code == 1 and arguments.asks(argv, arguments.HELP_FLAGS)   # absl's help exits 1
    return exit_codes.DONE if helped else code
  except KeyboardInterrupt:
    return exit_codes.INTERRUPTED
  return exit_codes.DONE


def console_main() -> int:
  """The `transformer-jax` console script (and `python -m transformer_jax`): the mode is the
  first word. Returns the exit code for the script's `sys.exit` (see `ready_to_exit`)."""
  try:
    argv = [PROGRAM, *subcommand_argv(sys.argv)[1:]]
  except UserError as e:
    return ready_to_exit(_fail(str(e)))
  program = sys.modules['__main__']    # --help prints the program's docstring
  program.__doc__ = f'usage: {PROGRAM} <{"|".join(mode_words())}> [flags]\n\n{__doc__}'
  return ready_to_exit(main(argv))


def _fail(message: str) -> int:
  print(f'error: {message}', file=sys.stderr)
  return exit_codes.USER_ERROR


def mode_words():
  """The first words the transformer-jax command takes: the values of --mode."""
  return tuple(flags.FLAGS['mode'].parser.enum_values)


def subcommand_argv(argv):
  """`transformer-jax <mode> [flags]` as `[prog, --mode=<mode>, flags...]` (run/arguments.py)."""
  return arguments.subcommand_argv(argv, mode_words(), PROGRAM)


def _show_in_help(program: str) -> None:
  """--help lists the key flags of the program that runs (launch.py, transformer-jax), and
  ours are defined here, so they are made its key flags."""
  by_module = flags.FLAGS.flags_by_module_dict()
  for module in (__name__, cli_config.__name__):
    for flag in by_module.get(module, ()):
      flags.FLAGS.register_key_flag_for_module(program, flag)


def _run_or_fail(argv, launcher) -> int:
  """`run`'s exit code: a UserError is one `error:` line (2), and Ctrl-C a quiet 130.

  Training turns its first SIGINT into a save-and-stop (trainer.py); anywhere else, e.g.
  translate waiting for the next line of stdin, Ctrl-C stops the command without a traceback.
  """
  try:
    run(argv, launcher)
  except UserError as e:
    return _fail(str(e))
  except KeyboardInterrupt:
    sys.stderr.flush()
    return exit_codes.INTERRUPTED
  return exit_codes.DONE


def run(argv, launcher=DEFAULT_LAUNCHER):
  """Everything checkable from the flags and the config alone is checked before jax loads."""
  from transformer_jax.base import workdir as workdir_lib
  from transformer_jax.train import validation
  if len(argv) > 1:
    raise UserError(f'unexpected argument {argv[1]!r}: every option is a flag, e.g. '
                    '--experiment=experiments/multi30k.py --workdir=runs/m30k (see --help)')
  preflight.check_sweep_flags(_given_flags())
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
  logging.get_absl_handler().addFilter(console.OwnInfoOnly())
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  if _MULTIHOST.value:
    start_multihost()
  import jax
  logging.info('JAX %s: process %d/%d, %d local / %d global devices (%s)', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  preflight.check_attention_impl(config, _MODE.value, jax.default_backend())
  dispatch(_MODE.value, config, workdir)


def start_multihost():
  """--multihost: joins the processes (run/multihost.py), over gloo collectives on CPUs."""
  import jax
  on_cpu = os.environ.get('JAX_PLATFORMS', 'cpu') == 'cpu'
  if jax.config.jax_platforms in (None, '', 'cpu') and on_cpu:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  multihost.join(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                 _MULTIHOST_TIMEOUT.value)


def _given(name: str) -> bool:
  """Whether --name is on the command line (a boolean only when it is switched on)."""
  flag = flags.FLAGS[name]
  return flag.present and not (isinstance(flag.value, bool) and not flag.value)


def _given_flags() -> frozenset:
  """The names of the flags on the command line, as `_given` counts them."""
  return frozenset(name for name in flags.FLAGS if _given(name))


def check_mode_flags(mode: str) -> None:
  """A flag that `mode` would ignore is an error (preflight.FLAG_MODES), as is reading a closed
  standard input. Only flags are looked at: nothing is loaded."""
  preflight.check_mode_flags(mode, _given_flags(), _INPUT.value)


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
