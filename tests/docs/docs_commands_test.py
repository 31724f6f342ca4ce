"""Every command and code block that README.md and docs/*.md mark runnable still parses.

What is checked (the convention, also at the top of docs/api.md):

- A fenced block whose info string is `bash` or `python` is checked; any other info string
  (`text`, `toml`, ...) is not, and neither is a `bash`/`python` block whose fence follows a
  line `<!-- not-checked -->`. Every fence must name its language (`text` for output or a
  synopsis), so nothing is left unchecked by accident.
- Inline code that starts as a command (`python launch.py`, `transformer-jax `,
  `python -m transformer_jax`, `python -m benchmarks.`, `python benchmarks/`) is checked
  as a shell command too, e.g. the command column of a results table.
- Placeholders: `<...>` (no space after `<` or before `>`) and `...` stand for what the
  reader fills in. `--flag=<value>` checks the flag, not the value; an
  `--experiment.<section>.<field>` with a placeholder, or overrides of an
  `--experiment=<placeholder>`, are not checked. `[--flag]` (optional) is read as `--flag`.

Shell commands (lines joined at a trailing backslash, split at `|`, `&&`, `;`; anything before
`python`/`transformer-jax` on a line, such as `srun` or `VAR=value`, is skipped):
`python launch.py`, `transformer-jax <mode>` and `python -m transformer_jax <mode>`: the mode
word and every `--flag` must be defined by the command line (transformer_jax.cli) and its value
must parse (`--mode=` among the modes); a flag must be one the mode uses (cli.FLAG_MODES);
`--experiment=` must resolve (paths.resolve_experiment) and load, variant included;
`--sweep=` must load with the overrides (sweep.spec.load); every `--experiment.<s>.<f>=<v>`
must be a field of that experiment's config (of the default experiment without
--experiment; of the run's defaults for eval/translate/...) and its value must parse
(run/overrides.apply_overrides, the command line's own code). `python -m benchmarks.X` and
`python benchmarks/X.py` must exist. A quoted argument holding such a command (`gcloud ...
--command="... python launch.py ..."`) is checked as one.

Python blocks are compiled, and every import is resolved (importlib.import_module, then
getattr for each imported name, a DeprecationWarning of ours counting as a failure), as is
every attribute read from an imported name that the block never rebinds
(`transformer_jax.load_pretrained`, `modes.train`); nothing else is executed.

Each failure names `file:line`. Fast: no training, no jax computation.
"""
import ast
import contextlib
import dataclasses
import difflib
import importlib
import io
import os
import pathlib
import re
import shlex
import sys
import textwrap
import warnings
from typing import Iterator, List, Optional

from absl import flags
from ml_collections import config_flags
import pytest

from transformer_jax import cli
from transformer_jax.base import paths
from transformer_jax.base.errors import UserError
from transformer_jax.run import overrides as cli_config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
NOT_CHECKED = '<!-- not-checked -->'
CHECKED_LANGUAGES = ('bash', 'python')
COMMAND_PREFIXES = ('python launch.py', 'transformer-jax ', 'python -m transformer_jax',
                    'python -m benchmarks.', 'python benchmarks/')
# absl defines these when a program runs (app.run); they are flags of every command line.
HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml')
_PLACEHOLDER = re.compile(r'<(?=[^\s<>])[^<>\n]*?(?<=[^\s<>])>')
_PLACEHOLDER_WORD = 'PLACEHOLDER'
_FENCE = re.compile(r'^(\s*)(`{3,}|~{3,})\s*([^`\s]*)')
_INLINE = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')
_SEPARATORS = ('|', '||', '&&', ';', '&')


def doc_files() -> List[pathlib.Path]:
  """README.md and the pages of docs/ (not docs/ablations/, the archived sweep outputs)."""
  return [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]


@dataclasses.dataclass
class Snippet:
  """One checked piece of a page: `kind` 'bash' or 'python', `line` its first line (1-based)."""
  path: str
  line: int
  kind: str
  text: str


# --------------------------------------------------------------------------------------------
# Finding the snippets


def snippets(path: str, text: str) -> Iterator[Snippet]:
  """The checked fenced blocks and inline commands of one markdown page, and an 'error'
  snippet for each fence that names no language."""
  lines = text.splitlines()
  i = 0
  while i < len(lines):
    match = _FENCE.match(lines[i])
    if not match:
      for code in _INLINE.findall(lines[i]):
        if code.startswith(COMMAND_PREFIXES):
          yield Snippet(path, i + 1, 'bash', code)
      i += 1
      continue
    indent, fence, language = match.groups()
    start = i
    i += 1
    body = []
    while i < len(lines) and not lines[i].strip().startswith(fence):
      body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
      i += 1
    i += 1
    previous = next((l.strip() for l in reversed(lines[:start]) if l.strip()), '')
    if not language:
      yield Snippet(path, start + 1, 'error', 'a fence without a language: name it (`bash`, '
                    '`python`, or `text` for what is not to be checked)')
    elif language in CHECKED_LANGUAGES and previous != NOT_CHECKED:
      yield Snippet(path, start + 2, language, '\n'.join(body))


# --------------------------------------------------------------------------------------------
# Shell commands


def _is_placeholder(text: str) -> bool:
  return _PLACEHOLDER_WORD in text or '...' in text


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
  """(mode given by --mode or None, {flag: value or None}, [overrides], [problems])."""
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
  for name, users in cli.FLAG_MODES.items():
    if given.get(name) not in (None, 'false') and mode not in users and 'sweep' not in given:
      problems.append(f'--{name} does not apply to --mode={mode} (only {"|".join(users)})')
  if given.get('sweep'):
    return problems + _check_sweep(given['sweep'], overrides)
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
  from transformer_jax.sweep import spec as sweep_spec
  checked = [o for o in overrides if not _is_placeholder(o)]
  _, problem = _captured(lambda: sweep_spec.load(spec, extra=checked))
  return [f'--sweep={spec}: {problem}'] if problem else []


# --------------------------------------------------------------------------------------------
# Python blocks


def check_python(text: str) -> List[tuple]:
  """[(line offset inside `text`, message)]: syntax, imports, attributes of imported names."""
  try:
    tree = ast.parse(compile(text, '<block>', 'exec', ast.PyCF_ONLY_AST))
  except SyntaxError as e:
    return [((e.lineno or 1) - 1, f'syntax error: {e.msg}')]
  problems, imported = [], {}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        obj, problem = _import(alias.name)
        if problem:
          problems.append((node.lineno - 1, problem))
        elif alias.asname:
          imported[alias.asname] = obj
        else:
          imported[alias.name.split('.')[0]] = importlib.import_module(alias.name.split('.')[0])
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        problems.append((node.lineno - 1, 'a relative import cannot run from a user\'s code'))
        continue
      module, problem = _import(node.module)
      if problem:
        problems.append((node.lineno - 1, problem))
        continue
      for alias in node.names:
        if alias.name == '*':
          continue
        obj, problem = _attribute(module, node.module, alias.name)
        if problem:
          problems.append((node.lineno - 1, problem))
        else:
          imported[alias.asname or alias.name] = obj
  rebound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
             and isinstance(n.ctx, (ast.Store, ast.Del))}
  rebound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
              for a in [*n.posonlyargs, *n.args, *n.kwonlyargs, n.vararg, n.kwarg] if a}
  rebound |= {n.name for n in ast.walk(tree)
              if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
  inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
  for node in ast.walk(tree):
    chain = None if id(node) in inner else _attribute_chain(node)
    if not chain or chain[0] not in imported or chain[0] in rebound:
      continue
    obj, where = imported[chain[0]], chain[0]
    for part in chain[1:]:
      if not (isinstance(obj, type) or type(obj).__name__ == 'module'):
        break
      obj, problem = _attribute(obj, where, part)
      if problem:
        problems.append((node.lineno - 1, problem))
        break
      where = f'{where}.{part}'
  return problems


def _attribute_chain(node) -> Optional[List[str]]:
  """['a', 'b', 'c'] for the outermost `a.b.c` (a Load of attributes on a name), else None."""
  if not isinstance(node, ast.Attribute):
    return None
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if not isinstance(node, ast.Name):
    return None
  return [node.id, *reversed(parts)]


def _import(name: str):
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter('always')
      module = importlib.import_module(name)
  except Exception as e:  # pylint: disable=broad-except  (reported with its line)
    return None, f'import {name}: {type(e).__name__}: {e}'
  return module, _deprecation(caught)


def _attribute(obj, where: str, name: str):
  """(obj.name or the submodule of that name, None), or (None, the problem)."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    try:
      return getattr(obj, name), _deprecation(caught)
    except AttributeError:
      pass
    except Exception as e:  # pylint: disable=broad-except  (a module that fails to import)
      return None, f'{where}.{name}: {type(e).__name__}: {e}'
  if type(obj).__name__ != 'module':
    return None, f'{where} has no {name}'
  submodule = f'{obj.__name__}.{name}'
  try:
    return importlib.import_module(submodule), None
  except ModuleNotFoundError as e:
    if e.name != submodule:
      return None, f'{where}.{name}: {type(e).__name__}: {e}'
  except Exception as e:  # pylint: disable=broad-except
    return None, f'{where}.{name}: {type(e).__name__}: {e}'
  return None, f'{where} has no {name}'


def _deprecation(caught) -> Optional[str]:
  ours = [w for w in caught if issubclass(w.category, DeprecationWarning)
          and str(w.message).startswith('transformer_jax')]
  return f'deprecated: {ours[0].message}' if ours else None


# --------------------------------------------------------------------------------------------
# The check of a page


def check_page(path: str, text: str) -> List[str]:
  """'path:line: problem' for every problem of the page's checked snippets."""
  problems = []
  for snippet in snippets(path, text):
    if snippet.kind == 'error':
      found = [(0, snippet.text)]
    elif snippet.kind == 'bash':
      found = check_shell(snippet.text)
    else:
      found = check_python(snippet.text)
    problems.extend(f'{path}:{snippet.line + offset}: {message}' for offset, message in found)
  return problems


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
  """The pages' commands run in the checkout's root, where experiments/... resolve."""
  monkeypatch.chdir(REPO_ROOT)


@pytest.mark.parametrize('page', doc_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_page_commands_and_code_parse(page):
  relative = str(page.relative_to(REPO_ROOT))
  problems = check_page(relative, page.read_text())
  assert not problems, '\n'.join(['', *problems])


def test_pages_have_checked_snippets():
  """The convention is in use: a page set that checks nothing would pass trivially."""
  readme = list(snippets('README.md', (REPO_ROOT / 'README.md').read_text()))
  assert sum(s.kind == 'bash' for s in readme) >= 5
  assert sum(s.kind == 'python' for s in readme) >= 2


_LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)')


def _anchor(heading: str) -> str:
  """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as '-'."""
  text = re.sub(r'[`*_]', '', heading.strip().lower())
  return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


@pytest.mark.parametrize('page', doc_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(page):
  """Every relative link and image of a page points at a file (and heading) that exists."""
  problems = []
  for number, line in enumerate(page.read_text().splitlines(), start=1):
    for target in (a or b for a, b in _LINK.findall(line)):
      if re.match(r'[a-z]+:', target):
        continue
      file, _, anchor = target.partition('#')
      where = (page.parent / file) if file else page
      if not where.exists():
        problems.append(f'{page.relative_to(REPO_ROOT)}:{number}: {target}: no such file')
      elif anchor and where.suffix == '.md':
        anchors = {_anchor(h) for h in re.findall(r'^#+\s+(.*)$', where.read_text(), re.M)}
        if anchor not in anchors:
          problems.append(f'{page.relative_to(REPO_ROOT)}:{number}: {target}: no such heading')
  assert not problems, '\n'.join(['', *problems])


BAD_PAGE = textwrap.dedent('''\
    # A page with mistakes

    ```bash
    pip install -e .
    python launch.py --experiment=experiments/copy_task.py --wrokdir=runs/x \\
        --experiment.train.num_stepz=3
    transformer-jax trian --workdir=runs/x
    python launch.py --mode=evaluate --experiment=experiments/nope.py
    python launch.py --experiment=experiments/multi30k.py:no_such_variant
    python launch.py --experiment=experiments/copy_task.py --experiment.train.num_steps=many
    python launch.py --step=3
    python -m benchmarks.no_such_benchmark
    ```

    Inline: `python launch.py --sweep_paralel=2`.

    ```python
    from transformer_jax import NoSuchThing
    import transformer_jax.no_such_module
    from transformer_jax import validation
    import transformer_jax
    transformer_jax.no_such_function()
    ```

    ```
    a fence without a language
    ```

    ```python
    def broken(:
    ```
    ''')

GOOD_PAGE = textwrap.dedent('''\
    ```bash
    pip install -q -r requirements.txt -e . && python launch.py
    echo "A dog runs." | python launch.py --workdir=runs/m30k --mode=translate \\
        --experiment.decode.beam_size=5
    transformer-jax train --experiment=experiments/<name>.py --experiment.<section>.<field>=<value>
    srun python launch.py --multihost --experiment=experiments/wmt14.py:base --workdir=/x/y
    python -m benchmarks.loop_speed --steps=300
    ```

    `python launch.py --experiment=experiments/multi30k.py:preln --experiment.model.norm_order=pre`

    <!-- not-checked -->
    ```bash
    python launch.py --not_a_flag
    ```

    ```text
    python launch.py --not_a_flag_either
    ```

    ```python
    from transformer_jax.train import validation
    from transformer_jax import Transformer, TransformerConfig
    config = TransformerConfig.named('tiny', vocab_size=100)
    model = Transformer(config)
    model.anything_goes_on_an_instance
    ```
    ''')


def test_checker_catches_mistakes_with_their_lines():
  problems = check_page('bad.md', BAD_PAGE)
  text = '\n'.join(problems)
  expected = {
      'bad.md:5: unknown flag --wrokdir (did you mean --workdir?)': 'misspelled flag',
      'bad.md:5: --experiment.train.num_stepz=3': 'unknown config field',
      "bad.md:7: unknown command 'trian'": 'unknown mode word',
      'bad.md:8: --mode=evaluate': 'invalid --mode value',
      'bad.md:8: --experiment=experiments/nope.py: no such experiment file': 'missing file',
      'bad.md:9: --experiment=experiments/multi30k.py:no_such_variant': 'unknown variant',
      'bad.md:10: --experiment.train.num_steps=many': 'value of the wrong type',
      'bad.md:11: --step does not apply to --mode=train': 'flag of another mode',
      'bad.md:12: python -m benchmarks.no_such_benchmark': 'missing benchmark',
      'bad.md:15: unknown flag --sweep_paralel': 'inline command',
      'bad.md:18: transformer_jax has no NoSuchThing': 'bad imported name',
      'bad.md:19: import transformer_jax.no_such_module': 'bad module',
      'bad.md:20: deprecated: transformer_jax.validation moved': 'old import path',
      'bad.md:22: transformer_jax has no no_such_function': 'bad attribute',
      'bad.md:25: a fence without a language': 'unmarked fence',
      'bad.md:30: syntax error': 'syntax error',
  }
  missed = [f'{what}: {line}' for line, what in expected.items() if line not in text]
  assert not missed, '\n'.join(['not caught:', *missed, 'reported:', *problems])
  assert len(problems) == len(expected), '\n'.join(problems)


def test_checker_passes_good_snippets_and_skips_unchecked_blocks():
  assert check_page('good.md', GOOD_PAGE) == []
  kinds = [(s.line, s.kind) for s in snippets('good.md', GOOD_PAGE)]
  assert kinds == [(2, 'bash'), (10, 'bash'), (22, 'python')]
