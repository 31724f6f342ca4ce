"""What produced a sweep member's numbers: code, libraries, machine, data and tokenizer.

A member writes its record when it starts and checks it when it resumes, so a report can
refuse to pool runs made with different code or library versions. A record is JSON:
  schema      1
  code        commit, dirty (tracked changes), diff_sha256 (of `git diff HEAD`), untracked
  libraries   name -> version (None when not installed); python is platform.python_version()
  machine     hostname, CPU, cores the member is pinned to, XLA/JAX/CUDA settings, GPUs
  data, tokenizer  path -> sha256 (a folder's over its files' relative paths and contents)
  started, started_utc, and finished, finished_utc once the member is done.
`identity()` is the part that must agree for results to be pooled. Only the standard library
is used here (the sweep's parent process calls it, and must not pull in jax).
"""
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional

from transformer_jax.base.errors import UserError

SCHEMA = 1
LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy', 'scipy',
             'sacrebleu', 'sentencepiece', 'tensorflow-datasets', 'ml-collections')
IDENTITY_LIBRARIES = ('python', 'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'numpy',
                      'sacrebleu')
_TIMEOUT_S = 10
_CHUNK = 1 << 20
_RERUN = 'move it aside and run the member again with --sweep_rerun'


def _command(args: List[str], env: Optional[Mapping[str, str]] = None) -> Optional[bytes]:
  """A command's stdout, or None if it is missing, fails or takes over 10 s."""
  try:
    done = subprocess.run(args, capture_output=True, timeout=_TIMEOUT_S, env=env, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout if done.returncode == 0 else None


def _git(repo_dir: str, *args: str) -> Optional[bytes]:
  # -C repo_dir decides the repository (not a GIT_DIR inherited from a hook), and the commands
  # take no optional locks, so they never block an engineer's git in the same tree.
  env = {k: v for k, v in os.environ.items()
         if k not in ('GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE')}
  env['GIT_OPTIONAL_LOCKS'] = '0'
  return _command(['git', '-C', os.fspath(repo_dir), *args], env)


def code_state(repo_dir: str) -> Dict[str, Any]:
  """The checkout's {'commit', 'dirty' (tracked files changed), 'diff_sha256' (of `git diff
  HEAD --binary`, None when clean), 'untracked' (files neither tracked nor ignored)}, all None
  when repo_dir is not in a git work tree (or git is missing)."""
  unknown = {'commit': None, 'dirty': None, 'diff_sha256': None, 'untracked': None}
  head = _git(repo_dir, 'rev-parse', '--verify', 'HEAD')
  status = _git(repo_dir, 'status', '--porcelain', '--untracked-files=no')
  if head is None or status is None:
    return unknown
  dirty = bool(status.strip())
  diff = _git(repo_dir, 'diff', 'HEAD', '--binary') if dirty else None
  others = _git(repo_dir, 'ls-files', '--others', '--exclude-standard', '-z', '--', ':/')
  return {'commit': head.decode().strip(), 'dirty': dirty,
          'diff_sha256': hashlib.sha256(diff).hexdigest() if diff is not None else None,
          'untracked': None if others is None else len([p for p in others.split(b'\0') if p])}


def library_versions() -> Dict[str, Optional[str]]:
  """Python's and the installed libraries' versions (None: not installed); imports none."""
  versions = {'python': platform.python_version()}
  for name in LIBRARIES:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      for line in f:
        key, _, value = line.partition(':')
        if key.strip() == 'model name':
          return value.strip()
  except OSError:
    pass  # not Linux
  return platform.processor()


def _gpus() -> List[str]:
  """GPU names from `nvidia-smi -L` ('GPU 0: NVIDIA H100 ... (UUID: ...)'), [] without it."""
  out = _command(['nvidia-smi', '-L'])
  return [line.partition(':')[2].split(' (UUID:')[0].strip()
          for line in (out or b'').decode(errors='replace').splitlines() if line.startswith('GPU ')]


def machine(cores: Optional[Iterable[int]] = None,
            env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
  """Where the member runs: hostname, CPU, affinity, XLA/JAX/CUDA settings and GPU names.

  Args:
    cores: the CPU cores the member will be pinned to; default this process's affinity.
    env: the member's environment (default os.environ).
  """
  env = os.environ if env is None else env
  if cores is None and hasattr(os, 'sched_getaffinity'):
    cores = os.sched_getaffinity(0)
  affinity = None if cores is None else sorted(int(c) for c in cores)
  return {'hostname': platform.node(), 'cpu_model': _cpu_model(), 'cpu_count': os.cpu_count(),
          'affinity': affinity, 'xla_flags': env.get('XLA_FLAGS', ''),
          'jax_platforms': env.get('JAX_PLATFORMS', ''),
          'cuda_visible_devices': env.get('CUDA_VISIBLE_DEVICES'), 'gpus': _gpus()}


def _file_digest(path: str) -> bytes:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      digest.update(chunk)
  return digest.digest()


def _digest(path: str) -> Optional[str]:
  if os.path.isfile(path):
    return _file_digest(path).hex()
  if not os.path.isdir(path):
    return None
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      if os.path.isfile(full):  # not a broken link, socket, ...
        rel = os.path.relpath(full, path).replace(os.sep, '/')
        digest.update(rel.encode('utf-8', 'surrogateescape') + b'\0' + _file_digest(full))
  return digest.hexdigest()


def checksum_paths(paths: Iterable[str]) -> Dict[str, Optional[str]]:
  """{path: sha256 hex} of files and folders (a folder's over its files' relative paths and
  contents, in sorted order); None for a path that does not exist."""
  return {os.fspath(p): _digest(os.fspath(p)) for p in paths}


def _utc(seconds: float) -> str:
  return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(seconds))


def collect(*, repo_dir: str, data_paths: Iterable[str] = (), tokenizer_paths: Iterable[str] = (),
            cores: Optional[Iterable[int]] = None,
            env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
  """A member's whole record, made when it starts (see the module docstring)."""
  started = time.time()
  return {'schema': SCHEMA, 'code': code_state(repo_dir), 'libraries': library_versions(),
          'machine': machine(cores, env), 'data': checksum_paths(data_paths),
          'tokenizer': checksum_paths(tokenizer_paths), 'started': started,
          'started_utc': _utc(started)}


def _part(record: Optional[Mapping[str, Any]], key: str) -> Mapping[str, Any]:
  value = record.get(key) if isinstance(record, Mapping) else None
  return value if isinstance(value, Mapping) else {}


def identity(record: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
  """What must agree for two members' results to be pooled; missing keys read as None."""
  code, libraries = _part(record, 'code'), _part(record, 'libraries')
  return {'commit': code.get('commit'), 'diff_sha256': code.get('diff_sha256'),
          'libraries': {name: libraries.get(name) for name in IDENTITY_LIBRARIES}}


def label(record: Optional[Mapping[str, Any]]) -> str:
  """A short description, e.g. 'c4f77d2+dirty(3f2a1b9c) jax 0.10.2 flax 0.12.8 ...'."""
  ident, code = identity(record), _part(record, 'code')
  if ident['commit'] is None:
    words = ['unknown code']
  elif ident['diff_sha256']:
    words = [f"{ident['commit'][:7]}+dirty({ident['diff_sha256'][:8]})"]
  else:
    words = [ident['commit'][:7] + ('+dirty' if code.get('dirty') else '')]
  versions = ident['libraries']
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy'):
    if versions[name] is None or (name == 'jaxlib' and versions[name] == versions['jax']):
      continue
    words.append(f'{name} {versions[name]}')
  return ' '.join(words)


def differences(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> List[str]:
  """Each field of identity() in which records a and b differ, e.g. 'jaxlib 0.10.2 vs 0.11.2'."""
  x, y = identity(a), identity(b)
  diffs = []
  if x['commit'] != y['commit']:
    diffs.append(f"commit {(x['commit'] or 'unknown')[:7]} vs {(y['commit'] or 'unknown')[:7]}")
  if x['diff_sha256'] != y['diff_sha256']:
    diffs.append(f"uncommitted changes {(x['diff_sha256'] or 'none')[:8]} vs "
                 f"{(y['diff_sha256'] or 'none')[:8]}")
  for name in IDENTITY_LIBRARIES:
    old, new = x['libraries'][name], y['libraries'][name]
    if old != new:
      diffs.append(f"{name} {old or 'none'} vs {new or 'none'}")
  return diffs


def write(path: str, record: Mapping[str, Any]) -> None:
  """Writes the record as JSON, atomically (a reader sees the old file or the new one)."""
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=2)
    f.write('\n')
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read(path: str) -> Optional[Dict[str, Any]]:
  """The record at path, or None if there is none; UserError if it is not a JSON object."""
  try:
    with open(path, encoding='utf-8') as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
    raise UserError(f'provenance record {path} is not valid JSON ({e}): {_RERUN}') from e
  if not isinstance(record, dict):
    raise UserError(f'provenance record {path} is not a JSON object: {_RERUN}')
  return record


def finish(path: str) -> Optional[Dict[str, Any]]:
  """Adds 'finished' and 'finished_utc' to the record at path (nothing if there is none)."""
  record = read(path)
  if record is None:
    return None
  record['finished'] = time.time()
  record['finished_utc'] = _utc(record['finished'])
  write(path, record)
  return record


def check_resume(path: str, current: Mapping[str, Any], allow_mixed: bool = False) -> List[str]:
  """Checks that a member resumes with the code and libraries it started with.

  Args:
    path: the member's record, written when it started (may not exist yet).
    current: this run's record (collect()).
    allow_mixed: return the differences instead of raising UserError.

  Returns:
    The differences (see differences()); [] when none or the member never started.
  """
  old = read(path)
  diffs = [] if old is None else differences(old, current)
  if diffs and not allow_mixed:
    member = os.path.basename(os.path.dirname(os.path.abspath(path)))
    raise UserError(f'member {member} started with {label(old)} but this run is '
                    f'{label(current)} ({"; ".join(diffs)}): finish it with the code it started '
                    'with, re-run it with --sweep_rerun, or give --sweep_allow_mixed')
  return diffs
