"""Runs one bad input through launch.py and classifies what happened.

A case passes when the run exits with code 2, prints exactly one `error:` line (the last
line) holding the expected words, prints no traceback, and leaves the workdir
byte-identical (or, if it did not exist, not created). `benchmarks/reliability_catalogue.py`
counts the outcomes over the whole catalogue; `catalogue_test.py` asserts each one.
"""
import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Callable, List, Optional, Sequence, Union

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / 'shared' / 'data'


@dataclasses.dataclass(frozen=True)
class Case:
  """One bad input.

  Attributes:
    name: short id (the test's parameter id).
    args: launch.py arguments; '{workdir}' and '{tmp}' are filled in.
    expect: words the one `error:` line must contain.
    workdir: what --workdir is before the run: 'fresh' (a folder holding one user file),
      'absent', 'run' (a copy of a trained copy-task smoke run) or 'file' (a regular file).
    setup: optional fn(tmp, workdir) run before, to damage or prepare files.
    stdin: text (or bytes) fed to the process.
    needs_shared_data: skipped where ../shared/data is missing.
  """
  name: str
  args: Sequence[str]
  expect: str
  workdir: str = 'fresh'
  setup: Optional[Callable[[pathlib.Path, pathlib.Path], None]] = None
  stdin: Union[str, bytes] = ''
  needs_shared_data: bool = False


@dataclasses.dataclass
class Outcome:
  returncode: int
  error_lines: List[str]
  traceback: bool
  changed: bool
  stderr_tail: str

  @property
  def kind(self) -> str:
    """'clean', 'traceback', 'silent' (exit 0), 'changed' (workdir touched) or 'other'."""
    if self.returncode == 0:
      return 'silent'
    if self.traceback:
      return 'traceback'
    if self.changed:
      return 'changed'
    if self.returncode == 2 and len(self.error_lines) == 1:
      return 'clean'
    return 'other'


def snapshot(path: pathlib.Path):
  """Every file's relative path and content hash (None when the path does not exist)."""
  if not path.exists():
    return None
  if path.is_file():
    return hashlib.sha256(path.read_bytes()).hexdigest()
  files = {}
  for item in sorted(path.rglob('*')):
    relative = str(item.relative_to(path))
    files[relative] = (hashlib.sha256(item.read_bytes()).hexdigest() if item.is_file()
                       else 'dir')
  return files


def fill(text: str, tmp: pathlib.Path, workdir: pathlib.Path) -> str:
  return text.replace('{workdir}', str(workdir)).replace('{tmp}', str(tmp))


def launch(args: Sequence[str], stdin: Union[str, bytes] = '', timeout: int = 180):
  """launch.py in a subprocess with 8 host devices; returns (returncode, stderr text)."""
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  env.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
  env.setdefault('JAX_PLATFORMS', 'cpu')
  data = stdin.encode() if isinstance(stdin, str) else stdin
  result = subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env, input=data,
                          capture_output=True, timeout=timeout)
  return result.returncode, result.stderr.decode('utf-8', 'replace')


def run_case(case: Case, tmp: pathlib.Path, workdir: pathlib.Path) -> Outcome:
  """Runs `case` with `workdir` already laid out as the case asks."""
  if case.setup is not None:
    case.setup(tmp, workdir)
  before = snapshot(workdir)
  args = [fill(a, tmp, workdir) for a in case.args]
  if not any(a.startswith('--workdir') for a in args):
    args.append(f'--workdir={workdir}')
  returncode, stderr = launch(args, stdin=case.stdin)
  errors = [line for line in stderr.splitlines() if line.startswith('error:')]
  return Outcome(returncode=returncode, error_lines=errors,
                 traceback='Traceback (most recent call last)' in stderr,
                 changed=snapshot(workdir) != before, stderr_tail=stderr[-3000:])


def train_smoke_run(folder: pathlib.Path) -> pathlib.Path:
  """A trained copy-task smoke run (2 steps, checkpoint at step 2) that 'run' cases copy."""
  returncode, stderr = launch(['--experiment=experiments/copy_task.py:smoke',
                               f'--workdir={folder}'], timeout=600)
  if returncode != 0:
    raise RuntimeError(f'the smoke run the catalogue shares failed:\n{stderr[-3000:]}')
  return folder


def lay_out(kind: str, tmp: pathlib.Path, smoke_run: Optional[pathlib.Path]) -> pathlib.Path:
  """The case's --workdir under `tmp`, as `Case.workdir` asks."""
  workdir = tmp / 'run'
  if kind == 'fresh':
    workdir.mkdir()
    (workdir / 'notes.txt').write_text('a file the user keeps here\n')
  elif kind == 'run':
    shutil.copytree(smoke_run, workdir)
  elif kind == 'file':
    workdir.write_text('a file where a folder should be\n')
  elif kind != 'absent':
    raise ValueError(f'unknown workdir kind {kind!r}')
  return workdir
