"""Finds the checked snippets of a markdown page and checks them: fenced `bash`/`python`
blocks and inline commands (the convention is in docs_commands_test.py's docstring).

Python blocks are compiled, and every import is resolved (importlib.import_module, then
getattr for each imported name; a DeprecationWarning of ours counts as a failure), as is every
attribute read from an imported name that the block never rebinds; nothing else runs.
"""
import ast
import dataclasses
import importlib
import pathlib
import re
import warnings
from typing import Iterator, List, Optional

from tests.docs import doc_commands

REPO_ROOT = doc_commands.REPO_ROOT
NOT_CHECKED = '<!-- not-checked -->'
CHECKED_LANGUAGES = ('bash', 'python')
COMMAND_PREFIXES = doc_commands.COMMAND_PREFIXES
_BARE_PREFIXES = {prefix.strip() for prefix in COMMAND_PREFIXES}   # naming them, not a command
_FENCE = re.compile(r'^(\s*)(`{3,}|~{3,})\s*([^`\s]*)')
_INLINE = re.compile(r'(?<!`)`([^`\n]+)`(?!`)')


def doc_files() -> List[pathlib.Path]:
  """README.md and the pages of docs/ (not docs/ablations/, the archived sweep outputs)."""
  return [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]


@dataclasses.dataclass
class Snippet:
  """One checked piece of a page: `kind` 'bash', 'python' or 'error' (a fence without a
  language), `line` its first line (1-based)."""
  path: str
  line: int
  kind: str
  text: str


def snippets(path: str, text: str) -> Iterator[Snippet]:
  """The checked fenced blocks and inline commands of one markdown page, and an 'error'
  snippet for each fence that names no language."""
  lines = text.splitlines()
  i = 0
  while i < len(lines):
    match = _FENCE.match(lines[i])
    if not match:
      for code in _INLINE.findall(lines[i]):
        if code.startswith(COMMAND_PREFIXES) and code.strip() not in _BARE_PREFIXES:
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


def check_page(path: str, text: str) -> List[str]:
  """'path:line: problem' for every problem of the page's checked snippets."""
  problems = []
  for snippet in snippets(path, text):
    if snippet.kind == 'error':
      found = [(0, snippet.text)]
    elif snippet.kind == 'bash':
      found = doc_commands.check_shell(snippet.text)
    else:
      found = check_python(snippet.text)
    problems.extend(f'{path}:{snippet.line + offset}: {message}' for offset, message in found)
  return problems
