"""The command line's experiment config: the --experiment flag, its overrides, and the one
place that decides which config a command uses (an experiment file, or a run's config.json).

Every mistake becomes one `error:` line naming the problem and the fix (exit code 2): a
missing or broken experiment file, an unknown key, a value of the wrong type. Paths resolve
as transformer_jax/base/paths.py says. Nothing here imports jax.
"""
import os
import re
import sys
import traceback

from absl import flags
import ml_collections
from ml_collections import config_flags

from transformer_jax.base.errors import UserError
from transformer_jax.base import paths
from transformer_jax.run import arguments
from transformer_jax.run import exit_codes

_EXPERIMENT_FLAG = re.compile(r'-{1,2}experiment(=|$)')


def resolve_experiment_flag(argv):
  """`argv` with the path of `--experiment=<path>[:variant]` (or `--experiment <path>`)
  resolved by paths.resolve_experiment: a shipped `experiments/...` file that is not in the
  current directory gets its full path; anything else stays as given."""
  argv = list(argv)
  for i, arg in enumerate(argv[1:], start=1):
    match = _EXPERIMENT_FLAG.match(arg)
    if not match:
      continue
    if match.group(1) == '=':
      flag, _, value = arg.partition('=')
      argv[i] = f'{flag}={paths.resolve_experiment(value)}'
    elif i + 1 < len(argv):
      argv[i + 1] = paths.resolve_experiment(argv[i + 1])
  return argv


def _experiment_file_error(error: Exception, experiment: str):
  """'<file> line N: <error>' when `error` was raised by the experiment file's own code
  (a syntax error, an undefined name, a get_config that raises), else None."""
  path = _experiment_path(experiment)
  if isinstance(error, SyntaxError) and error.filename and os.path.abspath(error.filename) == path:
    return f'{experiment}: syntax error at line {error.lineno} ({error.msg}): fix the experiment file'
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == path]
  if frames:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ''
    return (f'{experiment} line {frames[-1].lineno}: {type(error).__name__}: {message}: '
            'fix the experiment file')
  if isinstance(error, AttributeError) and 'get_config' not in open(path, errors='replace').read():
    return f'{experiment} has no get_config(): define get_config(arg=None) returning a ConfigDict'
  return None


def _given_experiment(argv) -> str:
  """The `path[:variant]` of `--experiment=<path>` (or `--experiment <path>`) in `argv`, else ''."""
  for i, arg in enumerate(argv[1:], start=1):
    match = _EXPERIMENT_FLAG.match(arg)
    if match and match.group(1) == '=':
      return arg.split('=', 1)[1]
    if match and i + 1 < len(argv):
      return argv[i + 1]
  return ''


def _experiment_path(experiment: str) -> str:
  return os.path.abspath(experiment.partition(':')[0] or paths.default_experiment())


def not_a_config_message(experiment: str, returned: str) -> str:
  """The one line for a get_config() that returned `returned` ('None', 'a dict') instead of
  a ConfigDict."""
  return (f'{experiment or paths.DEFAULT_EXPERIMENT}: get_config() returned {returned}, not an '
          'ml_collections.ConfigDict: start from the defaults and return them, e.g. '
          '`from transformer_jax.run import defaults` then `config = defaults.get_base_config()`, change fields, '
          '`return config`')


def _returned(value) -> str:
  return 'None' if value is None else f'a {type(value).__name__}'


def _exit_in_experiment(error: SystemExit, argv):
  """The one line for an experiment file that exits while it loads, else None (an exit that
  is not the file's own, e.g. --help's, goes on as an exit)."""
  experiment = _given_experiment(argv)
  path = _experiment_path(experiment)
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if os.path.abspath(f.filename) == path]
  if not frames:
    return None
  return (f'{experiment or path} line {frames[-1].lineno} exits (SystemExit({error.code!r})) '
          'while the experiment loads: an experiment file only defines get_config(); remove '
          'the exit, or guard it with `if __name__ == "__main__":`')


# Names other codebases give our flags (`--config` holds the experiment in ml_collections'
# and big_vision's examples; t5x and Hugging Face write to --model_dir / --output_dir).
FLAG_ALIASES = {'config': 'experiment', 'model_dir': 'workdir', 'output_dir': 'workdir'}


def _unknown_flag(error: flags.UnrecognizedFlagError) -> str:
  """'unknown flag --x: did you mean --y?': the nearest defined flag (or FLAG_ALIASES), by
  spelling; `--config.model.num_layers` becomes `--experiment.model.num_layers`."""
  name = error.flagname
  known = sorted({'experiment', *(n for n in flags.FLAGS
                                  if len(n) > 1 and not n.startswith('experiment.'))})
  head, dot, field = name.partition('.')
  close = arguments.nearest(head if dot else name, known, FLAG_ALIASES)
  where = ('(--help lists the flags; experiment fields are '
           '--experiment.<section>.<field>=<value>)')
  if close is None or (dot and close != 'experiment'):
    return f'unknown flag --{name}: fix its spelling {where}'
  return f'unknown flag --{name}: did you mean --{close}{dot}{field}? {where}'


def _bad_choice(text: str):
  """'bad value --mode=translat: did you mean translate? ...' for an enum flag's value absl
  refused (`text` is its message), else None."""
  match = re.match(r'flag --([\w.]+)=(.*?): value should be one of <', text)
  if not match or match.group(1) not in flags.FLAGS:
    return None
  name, value = match.groups()
  choices = getattr(flags.FLAGS[name].parser, 'enum_values', None)
  if not choices:
    return None
  listed = ', '.join(choices)
  close = arguments.nearest(value, choices)
  if close is None:
    return f'bad value --{name}={value}: give one of {listed}'
  return f'bad value --{name}={value}: did you mean {close}? (--{name} takes one of {listed})'


def describe_flag_error(error: Exception, argv) -> str:
  """One line for a flag/config mistake, with the fix."""
  text = str(error).replace("\\'", "'").replace('\\n', '\n').strip()
  experiment = _given_experiment(argv)
  in_file = (_experiment_file_error(error.__cause__ or error.__context__ or error, experiment)
             if os.path.isfile(experiment.partition(':')[0] or paths.default_experiment())
             else None)
  if in_file:
    return in_file
  if isinstance(error, flags.UnrecognizedFlagError) and not error.flagname.startswith(
      'experiment.'):
    return _unknown_flag(error)
  choice = _bad_choice(text) if isinstance(error, flags.IllegalFlagValueError) else None
  if choice:
    return choice
  # An override applied to what get_config() returned, when that was not a ConfigDict.
  root = re.search(r"Attribute <class '([\w.]+)'>\.(\w+) does not exist.*lookup: (\w+)", text)
  if root and root.group(2) == root.group(3) and 'ConfigDict' not in root.group(1):
    kind = root.group(1).rpartition('.')[2]
    return not_a_config_message(experiment, 'None' if kind == 'NoneType' else f'a {kind}')
  if 'No such file' in text or 'Failed loading config file' in text:
    return (f'unknown experiment file {experiment!r} (relative paths start in the current '
            f'directory {os.getcwd()}): choose one of {paths.shipped_experiments()}')
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
            'get_config() (see transformer_jax/run/defaults.py, or list them with --print_config)')
  text = ' '.join(text.split())
  return (f'bad flag value: {text}; give a value of the right type (--print_config lists '
          'every field with its type)')


def fail_on_flag_error(fn, argv):
  """`fn()`; a mistake in the flags or the experiment file becomes one `error:` line (exit 2).

  This also runs while absl parses the flags, outside the mode's own UserError handling, so
  a UserError is printed here too; so is an experiment file that exits while it loads (a
  SystemExit, which is no Exception).
  """
  try:
    return fn()
  except UserError as e:
    message = str(e)
  except SystemExit as e:
    message = _exit_in_experiment(e, argv)
    if message is None:
      raise
  except Exception as e:  # pylint: disable=broad-except  (turned into one line, exit 2)
    message = describe_flag_error(e, argv)
  print(f'error: {message}', file=sys.stderr)
  sys.exit(exit_codes.USER_ERROR)


def define_experiment_flag(argv):
  """--experiment; ml_collections loads the default file (and applies overrides) right here.

  Without --experiment the overrides are held back (see `split_overrides`): they may be
  meant for a run's config.json rather than the default experiment, so `resolve_config`
  applies them once the mode is known.
  """
  from transformer_jax.run import saved_config as run_config
  for name in [n for n in flags.FLAGS if n == 'experiment' or n.startswith('experiment.')]:
    delattr(flags.FLAGS, name)      # an earlier command in this process defined its own
  given = experiment_given(argv)
  holder = fail_on_flag_error(lambda: config_flags.DEFINE_config_file(
      'experiment', paths.default_experiment(),
      'experiment file, optionally with a variant: experiments/<name>.py[:variant] (relative '
      'to the current directory; a shipped experiments/... file is found from anywhere); '
      'override any field with --experiment.<section>.<field>=<value> (--print_config lists '
      'every field, its value and type); eval/translate/sample/visualize without it use the '
      'config.json of --workdir',
      lock_config=True, sys_argv=None if given else split_overrides(argv)[0]), argv)
  default = flags.FLAGS['experiment'].value      # loaded already when no file was given
  if not given and hasattr(default, 'keys'):
    flags.FLAGS['experiment'].help += (f'. Fields of {paths.DEFAULT_EXPERIMENT}: '
                                       f'{run_config.field_names(default)}')
  return holder


def experiment_given(argv) -> bool:
  """Whether --experiment itself (not only overrides of it) is on the command line."""
  argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  return any(_EXPERIMENT_FLAG.match(arg) for arg in argv)


def split_overrides(argv):
  """(argv without the `--experiment.<key>` overrides, the overrides).

  A value given as the next argument (`--experiment.train.num_steps 10`) goes with its flag,
  joined to it: the overrides come back as `--experiment.<key>=<value>` (or a bare boolean).
  """
  argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  rest, overrides = [], []
  i = 0
  while i < len(argv):
    if i > 0 and re.match(r'-{1,2}(no)?experiment\.', argv[i]):
      takes_next = ('=' not in argv[i] and i + 1 < len(argv)
                    and not argv[i + 1].startswith('-'))
      overrides.append('='.join(argv[i:i + 1 + takes_next]))
      i += 1 + takes_next
    else:
      rest.append(argv[i])
      i += 1
  return rest, overrides


def apply_overrides(config, overrides):
  """A copy of `config` with `overrides` applied, parsed by ml_collections against the
  config's field types exactly as it parses them against an experiment file."""
  if not overrides:
    return config
  values = flags.FlagValues()
  argv = [sys.argv[0], *overrides]

  def parse():
    config_flags.DEFINE_config_dict('experiment', config, flag_values=values, sys_argv=argv,
                                    lock_config=True)
    return values(argv)
  rest = fail_on_flag_error(parse, sys.argv)
  if len(rest) > 1:
    raise UserError(f'unexpected argument {rest[1]!r}: give the override as '
                    '--experiment.<section>.<field>=<value>')
  return values['experiment'].value


def _loaded(config):
  """ml_collections reads the experiment file lazily; touch it so errors surface here.

  Raises:
    UserError: get_config() returned something other than a ConfigDict (None, a dict).
  """
  if not isinstance(config, ml_collections.ConfigDict):
    try:      # ml_collections' stand-in for a file it could not load raises that error here
      config.to_dict()
    except AttributeError as e:
      if getattr(e, 'obj', None) is not config:
        raise
    raise UserError(not_a_config_message(_given_experiment(sys.argv), _returned(config)))
  config.to_dict()
  return config


def parse_flags(argv):
  if not experiment_given(argv):      # the overrides wait for resolve_config
    argv = split_overrides(argv)[0]
  return fail_on_flag_error(lambda: flags.FLAGS(argv), argv)


def default_workdir() -> str:
  """runs/<experiment>[_<variant>] in the current directory (paths.py)."""
  return paths.default_workdir(config_flags.get_config_filename(flags.FLAGS['experiment']))


def resolve_config(workdir: str, *, mode: str, run_modes, print_config: bool):
  """(the config this command uses, where it comes from): one place for every mode.

  With --experiment, the experiment file's config with the overrides ml_collections applied
  while parsing flags (a run's config.json is checked against it later). Without it, a mode
  that reads a trained run (`run_modes`), or --print_config with a --workdir holding a run,
  takes that run's config.json with the overrides; any other mode takes the default
  experiment with them, as training always has.
  """
  from transformer_jax.base import workdir as workdir_lib
  experiment = fail_on_flag_error(lambda: _loaded(flags.FLAGS['experiment'].value), sys.argv)
  name = config_flags.get_config_filename(flags.FLAGS['experiment'])
  if flags.FLAGS['experiment'].present:
    return experiment, name
  overrides = split_overrides(sys.argv)[1]
  has_run = os.path.isfile(os.path.join(workdir, workdir_lib.CONFIG_FILE))
  if mode in run_modes or (print_config and flags.FLAGS['workdir'].present and has_run):
    return run_config_with_overrides(workdir, overrides), f'the run in {workdir} (config.json)'
  return apply_overrides(experiment, overrides), name


def run_config_with_overrides(workdir: str, overrides):
  """The config of the run in `workdir`, with overrides of the settings that may change after
  training (eval.*, decode.*, train.num_steps, ...); an override of a pinned one is refused."""
  from transformer_jax.base import workdir as workdir_lib
  from transformer_jax.run import defaults
  from transformer_jax.run import saved_config as run_config
  workdir_lib.check_path(workdir, writes=False)
  if not os.path.isfile(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
    raise UserError(f'no trained run in {workdir} (no {workdir_lib.CONFIG_FILE}): train one first '
                    f'(python launch.py --experiment=experiments/<name>.py --workdir={workdir}), '
                    'or give the --workdir of a trained run')
  saved = workdir_lib.load_config(workdir)
  config = apply_overrides(run_config.from_saved(saved, defaults.get_base_config()), overrides)
  changed = workdir_lib.pinned_differences(saved, workdir_lib.as_json(config))
  if changed:
    key = changed[0].split(':')[0]
    raise UserError(f'--experiment.{key} would change how the run in {workdir} was trained '
                    f'({changed[0]}): drop it (only settings such as eval.* and decode.* may '
                    'change after training), or train a new run with --experiment=<file> and '
                    'another --workdir')
  return config
