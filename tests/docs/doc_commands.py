"""Checks the shell commands of the documentation: `python launch.py`, `transformer-jax <mode>`,
`python -m transformer_jax <mode>`, `python -m benchmarks.X` and `python benchmarks/X.py` (the
convention is in docs_commands_test.py's docstring).

Everything is checked with the command line's own code and nothing is run: the flags absl
knows once transformer_jax.cli is imported, their parsers, run/preflight.py's rules for flags
that go together, paths.resolve_experiment and ml_collections for `--experiment=`,
run/overrides.apply_overrides for `--experiment.<section>.<field>=<value>`, sweep.loading.load
for `--sweep=`.
"""
import contextlib
import difflib
import io
import pathlib
import re
import shlex
from typing import Iterator, List, Optional
from unittest import mock

from absl import flags
from ml_collections import config_flags

from transformer_jax import cli
from transformer_jax.base import paths
from transformer_jax.base.errors import UserError
from transformer_jax.run import overrides as cli_config
from transformer_jax.run import preflight

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
COMMAND_PREFIXES = ('python launch.py', 'transformer-jax ', 'python -m transformer_jax',
                    'python -m benchmarks.', 'python benchmarks/')
# absl defines these when a program runs (app.run); they are flags of every command line.
HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml')
_PLACEHOLDER = re.compile(r'<(?=[^\s<>])[^<>\n]*?(?<=[^\s<>])>')
_PLACEHOLDER_WORD = 'PLACEHOLDER'
_SEPARATORS = ('|', '||', '&&', ';', '&')


def _is_placeholder(text: str) -> bool:
  """`<...>`, `...` or a shell variable (`$SLURM_ARRAY_TASK_ID`): filled in by the reader."""
  return _PLACEHOLDER_WORD in text or '...' in text or '$' in text


def logical_lines(text: str) -> Iterator[tuple]:
  """(offset of the first line, the line with backslash-continued lines joined)."""
  lines = text.split('\n')
  i = 0
  while i < len(lines):
    start, joined = i, lines[i]
    while joined.endswith('\\') and i + 1 < len(lines):
      i += 1
      joined = joined[:-1] + ' ' + lines[i]
    yield start, joined
    i += 1


def simple_commands(line: str) -> List[List[str]]:
  """The words of each command of a shell line, redirections dropped."""
  lexer = shlex.shlex(_PLACEHOLDER.sub(_PLACEHOLDER_WORD, line), posix=True,
                      punctuation_chars=True)
  lexer.whitespace_split = True
  words = list(lexer)
  commands, current, skip_next = [], [], False
  for word in words:
    if skip_next:
      skip_next = False
    elif word in _SEPARATORS:
      commands.append(current)
      current = []
    elif set(word) <= set('<>&') or word in ('(', ')'):
      skip_next = set(word) <= set('<>&') and word != '&'
    else:
      current.append(word)
  commands.append(current)
  return [c for c in commands if c]


def check_shell(text: str) -> List[tuple]:
  """[(line offset inside `text`, message)] for every problem of a shell block."""
  problems = []
  for offset, line in logical_lines(text):
    try:
      commands = simple_commands(line)
    except ValueError as e:
      problems.append((offset, f'the shell cannot parse this line ({e})'))
      continue
    for words in commands:
      problems.extend((offset, message) for message in check_command(words))
  return problems


def check_command(words: List[str]) -> List[str]:
  """Problems of one simple command; words that are not ours (pip, echo, srun) are passed by."""
  problems = []
  for word in words:       # a quoted command inside an argument (gcloud --command="...")
    inner = word.split('=', 1)[1] if word.startswith('-') and '=' in word else word
    if ' ' in inner and any(prefix in inner for prefix in COMMAND_PREFIXES):
      problems.extend(message for _, message in check_shell(inner))
  for i, word in enumerate(words):
    rest = words[i + 1:]
    if word == 'transformer-jax':
      return problems + check_launch(rest, subcommand=True)
    if word not in ('python', 'python3') and not word.endswith('/python'):
      continue
    if rest[:1] == ['launch.py']:
      return problems + check_launch(rest[1:], subcommand=False)
    if rest[:2] == ['-m', 'transformer_jax']:
      return problems + check_launch(rest[2:], subcommand=True)
    if rest[:1] == ['-m'] and len(rest) > 1 and rest[1].startswith('benchmarks.'):
      script = rest[1].replace('.', '/') + '.py'
      return problems + ([] if (REPO_ROOT / script).is_file() else
                         [f'python -m {rest[1]}: there is no {script}'])
    if rest[:1] and rest[0].startswith('benchmarks/'):
      return problems + ([] if (REPO_ROOT / rest[0]).is_file() else
                         [f'python {rest[0]}: there is no such script'])
    return problems
  return problems


def _flag_problem(name: str) -> str:
  known = sorted(n for n in flags.FLAGS if len(n) > 1) + ['experiment', *HELP_FLAGS]
  close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
  return f'unknown flag --{name}' + (f' (did you mean --{close[0]}?)' if close else '')


def parse_arguments(args: List[str]):
  """({flag: its value, or None when it has none}, [the --experiment.* overrides], [problems])
  of a command's arguments; a value that is not a placeholder must parse as the flag's type."""
  given, overrides, problems = {}, [], []
  i = 0
  while i < len(args):
    arg = args[i].strip('[]')
    i += 1
    if not arg or arg == '...':
      continue
    if not arg.startswith('-'):
      problems.append(f'unexpected argument {arg!r}: every option is a --flag')
      continue
    name, has_value, value = arg.lstrip('-').partition('=')
    if re.match(r'(no)?experiment\.', name):
      overrides.append(arg)
      continue
    if name == 'experiment' or name in HELP_FLAGS:
      flag = None
    elif name in flags.FLAGS:
      flag = flags.FLAGS[name]
    elif name.startswith('no') and name[2:] in flags.FLAGS and flags.FLAGS[name[2:]].boolean:
      given[name[2:]] = 'false'
      continue
    else:
      problems.append(_flag_problem(name))
      continue
    if not has_value and name == 'experiment' or (flag is not None and not flag.boolean and
                                                  not has_value):
      if i < len(args) and not args[i].startswith('-'):
        value, i = args[i], i + 1
    given[name] = value if (has_value or value) else None
    if flag is not None and given[name] is not None and not _is_placeholder(given[name]):
      try:
        flag.parser.parse(given[name])
      except (ValueError, TypeError) as e:
        problems.append(f'--{name}={given[name]}: {e}')
  return given, overrides, problems


def check_launch(args: List[str], *, subcommand: bool) -> List[str]:
  """Problems of the arguments of `python launch.py` (subcommand=False) or of
  `transformer-jax` / `python -m transformer_jax` (the mode as first word)."""
  if subcommand:
    try:
      args = cli.subcommand_argv(['transformer-jax', *args])[1:]
    except UserError as e:
      return [str(e)]
  given, overrides, problems = parse_arguments(args)
  mode = given.get('mode') or 'train'
  switched_on = {name for name, value in given.items()
                 if str(value).lower() not in ('false', '0')}
  with mock.patch.object(preflight, 'stdin_is_closed', lambda: False):   # the reader pipes it
    problem = _captured(lambda: preflight.check_sweep_flags(switched_on))[1]
    if not problem and 'sweep' not in given:
      problem = _captured(lambda: preflight.check_mode_flags(
          mode, switched_on, given.get('input') or '-'))[1]
  if problem:
    problems.append(problem)
  if given.get('sweep'):
    return problems + _check_sweep(given['sweep'], overrides)
  if mode in ('report', 'archive'):
    return problems + [f'--mode={mode} works on a sweep: give --sweep=']
  experiment = given.get('experiment')
  if experiment is not None and _is_placeholder(experiment):
    return problems
  if experiment is None:
    if mode in cli.RUN_MODES:       # the run's config.json: the defaults' layout
      from transformer_jax.run import defaults
      config, problem = defaults.get_base_config(), None
    else:
      config, problem = load_experiment(paths.DEFAULT_EXPERIMENT)
  else:
    config, problem = load_experiment(experiment)
  if problem:
    return problems + [problem]
  return problems + [p for o in overrides for p in [check_override(config, o)] if p]


def _captured(fn):
  """(fn(), None), or (None, the one line the command line would print) when it fails."""
  stderr = io.StringIO()
  try:
    with contextlib.redirect_stderr(stderr):
      return fn(), None
  except SystemExit:
    lines = stderr.getvalue().strip().splitlines() or ['exits']
    return None, lines[-1].removeprefix('error: ')
  except UserError as e:
    return None, str(e)


def load_experiment(spec: str):
  """(the config of `--experiment=<spec>` as the command line loads it, None) or (None, why)."""
  resolved = paths.resolve_experiment(spec)
  if not (REPO_ROOT / resolved.partition(':')[0]).is_file():
    return None, f'--experiment={spec}: no such experiment file'
  values = flags.FlagValues()
  argv = ['launch.py', f'--experiment={resolved}']

  def load():
    config_flags.DEFINE_config_file('experiment', None, flag_values=values, lock_config=True)
    return cli_config.fail_on_flag_error(lambda: values(argv), argv)
  _, problem = _captured(load)
  if problem:
    return None, f'--experiment={spec}: {problem}'
  return values['experiment'].value, None


def check_override(config, override: str) -> Optional[str]:
  """Why `--experiment.<key>=<value>` is not an override of `config`, or None."""
  name, _, value = override.lstrip('-').partition('=')
  if _is_placeholder(name):
    return None
  if _is_placeholder(value):
    node = config
    for part in name.removeprefix('no').split('.')[1:]:
      if not hasattr(node, 'keys') or part not in node:
        return f'{override}: {name} is not a field of the experiment\'s config'
      node = node[part]
    return None
  _, problem = _captured(lambda: cli_config.apply_overrides(config, [override]))
  return f'{override}: {problem}' if problem else None


def _check_sweep(spec: str, overrides: List[str]) -> List[str]:
  if _is_placeholder(spec):
    return []
  from transformer_jax.sweep import loading as sweep_loading
  checked = [o for o in overrides if not _is_placeholder(o)]
  _, problem = _captured(lambda: sweep_loading.load(spec, extra=checked))
  return [f'--sweep={spec}: {problem}'] if problem else []
