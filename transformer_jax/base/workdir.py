"""What a run keeps at the top of its workdir: the resolved config, the guard that stops a
workdir from being trained over with a different model, data or optimizer, and the lock that
stops two trainings from writing into one workdir at once.

Settings that may change on resume (more steps, other eval/decode/logging settings,
pmap vs jit) are free; everything that shapes the training trajectory is not.
"""
import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import tempfile
from typing import Any, Dict, Iterator, List

from transformer_jax.base.errors import UserError

CONFIG_FILE = 'config.json'
LOCK_FILE = 'train.lock'     # held by the one process training in the workdir
METRICS_FILE = 'metrics.jsonl'     # appended to by a training (metrics_writer.py)
TENSORBOARD_DIR = 'tensorboard'    # its event files and profiler traces (metrics_writer.py)
# Bytes kept free below PATH_MAX for the deepest file a run writes under its workdir (a
# checkpoint's array shard is about 75 bytes deep, a prepared dataset's record file up to 120).
PATH_RESERVE = 256
# Keys (section or section.field) that must match for a run to resume in a workdir.
PINNED = ('model', 'data', 'optim', 'train.seed', 'train.label_smoothing')


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(_flatten(value, name + '.'))
    else:
      flat[name] = value
  return flat


def as_json(config) -> Dict[str, Any]:
  """ConfigDict -> plain JSON types (tuples become lists), as it is stored."""
  return json.loads(json.dumps(config.to_dict() if hasattr(config, 'to_dict') else config))


# Keys added after runs were recorded, with the value a run without them had.
_IMPLIED = {'model.family': 'transformer', 'optim.optimizer': 'adam', 'data.tokenizer_dir': '',
            'data.train_examples': 0}


def pinned_differences(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
  """'key: saved -> current' for every pinned key that differs."""
  old, new = _flatten(saved), _flatten(current)
  for key, value in _IMPLIED.items():
    old.setdefault(key, value)
    new.setdefault(key, value)
  pinned = lambda k: any(k == p or k.startswith(p + '.') for p in PINNED)
  keys = sorted(k for k in set(old) | set(new) if pinned(k) and old.get(k) != new.get(k))
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys]


def load_config(workdir: str) -> Dict[str, Any]:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f'no {CONFIG_FILE} in {workdir}: train there first '
                    '(python launch.py --experiment=... --workdir=...) or point --workdir at a run')
  try:
    with open(path, encoding='utf-8') as f:
      saved = json.load(f)
  except (ValueError, OSError) as e:    # JSONDecodeError and UnicodeDecodeError are ValueErrors
    raise UserError(f'{path} is not a readable JSON config ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:120]}): restore it from a copy (the checkpoints '
                    'hold no config), or give a new --workdir') from None
  if not isinstance(saved, dict):
    raise UserError(f'{path} holds a {type(saved).__name__}, not a config: restore it from a '
                    'copy, or give a new --workdir')
  return saved


def check_config(workdir: str, config) -> None:
  """Refuses a workdir whose run used other pinned settings, or that this launcher did not make."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    differences = pinned_differences(load_config(workdir), as_json(config))
    if differences:
      shown = '; '.join(differences[:4]) + (' ...' if len(differences) > 4 else '')
      raise UserError(f'{workdir} holds a run with another config ({shown}): resume it with the '
                      'same settings, or give a new --workdir')
    return
  checkpoints = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(checkpoints) and os.listdir(checkpoints):
    raise UserError(f'{workdir} has checkpoints but no {CONFIG_FILE}: it was not made by this '
                    'launcher; give a new --workdir')


def record_config(workdir: str, config) -> None:
  """Writes config.json once, when the run starts (a resumed run keeps the first one)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(as_json(config), f, indent=2, sort_keys=True)
  os.replace(path + '.tmp', path)


def saved_steps(workdir: str) -> List[int]:
  """The finished checkpoint steps on disk (orbax renames a step's folder to its number only
  once it is complete), read without opening orbax; possibly damaged, see checkpoint.py."""
  folder = os.path.join(workdir, 'checkpoints')
  if os.path.lexists(folder) and not os.path.isdir(folder):
    raise UserError(f'{folder} is not a folder: move it aside (a run keeps its checkpoints '
                    'there), or give a new --workdir')
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def check_path(workdir: str, writes: bool) -> None:
  """Refuses a workdir that is not a folder, whose path cannot be resolved (a name longer
  than its file system allows, a symlink loop), or (when the mode `writes`) cannot be written.

  Checked before anything is built, so a read-only or mistyped workdir fails at once rather
  than after a training has started or an evaluation has run.
  """
  if not workdir:
    raise UserError('--workdir is empty: give a folder, or omit the flag for '
                    'runs/<experiment>[_<variant>]')
  _check_resolvable(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise UserError(f'--workdir {workdir} is a file, not a folder: give a folder path')
  if not writes:
    return
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UserError(f'--workdir {workdir} lies below the file {existing}: give a folder path')
  try:     # a real probe: os.access says yes to root even on a read-only mount or immutable dir
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise UserError(f'{existing} is not writable ({e.strerror}), so the run in --workdir '
                    f'{workdir} could not save anything: fix its permissions or give another '
                    '--workdir') from None


def _pathconf(path: str, name: str, default: int) -> int:
  try:
    return os.pathconf(path, name)
  except (OSError, ValueError):
    return default


def _shortened(name: str, keep: int = 24) -> str:
  return name if len(name) <= keep else f'{name[:keep]}...'


def _check_resolvable(workdir: str) -> None:
  """Refuses a workdir path the system cannot resolve: a name longer than its file system
  allows (PC_NAME_MAX), a path too long for the files a run writes below it (PC_PATH_MAX),
  or a symlink loop on the way. Each would otherwise fail at the first write, with the
  errno's traceback."""
  path = os.path.join(os.getcwd(), workdir)
  path_max = _pathconf(os.getcwd(), 'PC_PATH_MAX', 4096)
  length = len(os.fsencode(path))
  if length + PATH_RESERVE > path_max:
    raise UserError(f'--workdir {_shortened(workdir, 60)} is {length} bytes long as an absolute '
                    f'path: the files a run writes below it would pass the {path_max} bytes a '
                    'path may have: give a shorter --workdir')
  reached, folder = os.sep, os.sep      # the prefix so far, and its last existing folder
  for name in path.split(os.sep):
    if name in ('', '.'):
      continue
    name_max = _pathconf(folder, 'PC_NAME_MAX', 255)
    if len(os.fsencode(name)) > name_max:
      raise UserError(f'--workdir holds the name {_shortened(name)!r} of {len(os.fsencode(name))} '
                      f'bytes, longer than the {name_max} bytes a file name may have on '
                      f'{folder}: give a --workdir with shorter names')
    reached = os.path.join(reached, name)
    try:
      mode = os.stat(reached).st_mode
    except OSError as e:
      if e.errno == errno.ELOOP:
        raise UserError(f'--workdir {workdir} cannot be reached: {reached} is a symlink loop (it '
                        'points, directly or through other links, back to itself): fix or remove '
                        'the link, or give another --workdir') from None
      continue       # absent (created by the run) or below a file (check_path says so)
    if stat.S_ISDIR(mode):
      folder = reached


def check_training_files(workdir: str) -> None:
  """Refuses the files a training writes in place in `workdir` when it could not write them.

  `train.lock` and `metrics.jsonl` must be regular writable files (or absent: the training
  creates them), and `tensorboard` a folder (or absent). A folder, a symlink loop or an
  immutable file there would otherwise fail only once the run is set up, with a traceback;
  checked before the training writes anything (`training_lock` calls it first). The probe
  opens each existing file for appending and closes it, which changes nothing in it.
  """
  for name, kind in ((LOCK_FILE, 'the lock a training takes'),
                     (METRICS_FILE, 'the log a training appends its metrics to'),
                     (TENSORBOARD_DIR, 'the folder of the TensorBoard event files')):
    path = os.path.join(workdir, name)
    fix = 'move it away (a training makes a new one) or give another --workdir'
    try:
      mode = os.stat(path).st_mode
    except FileNotFoundError:
      continue
    except OSError as e:
      what = ('a symlink loop (it points, directly or through other links, back to itself)'
              if e.errno == errno.ELOOP else f'unreadable ({e.strerror})')
      raise UserError(f'{path} is {what}, not {kind}: {fix}') from None
    if name == TENSORBOARD_DIR:
      if not stat.S_ISDIR(mode):
        raise UserError(f'{path} is a file, not {kind}: {fix}')
      continue
    if not stat.S_ISREG(mode):
      found = 'a folder' if stat.S_ISDIR(mode) else 'not a regular file'
      raise UserError(f'{path} is {found}, not {kind}: {fix}')
    try:
      os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except OSError as e:
      raise UserError(f'{path} is not writable ({e.strerror}), so a training could not use it '
                      f'as {kind}: fix its permissions (chattr -i, chmod u+w) or give another '
                      '--workdir') from None


def lock_holder(workdir: str):
  """Who holds the workdir's training lock ('pid N on HOST'), or None when nobody does."""
  path = os.path.join(workdir, LOCK_FILE)
  if not os.path.exists(path):
    return None
  fd = os.open(path, os.O_RDONLY)
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    return None
  except OSError:
    return os.pread(fd, 200, 0).decode('utf-8', 'replace').strip() or 'another process'
  finally:
    os.close(fd)     # also releases the probe's shared lock


@contextlib.contextmanager
def training_lock(workdir: str) -> Iterator[None]:
  """Holds an exclusive lock on `<workdir>/train.lock` for one training process.

  The lock is an flock: the kernel releases it when its process ends, however it ends, so a
  killed run never leaves a stale lock behind. The file records the holder's pid and host so
  that a refused second training can say which process holds the workdir.

  Before it writes anything, `check_training_files` checks that the lock and the other files
  a training writes in place can be written.

  Raises:
    UserError: another process holds the lock, or a training's file cannot be written.
  """
  check_training_files(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise UserError(f'{path} could not be opened as the lock a training takes ({e.strerror}): '
                    'fix the cause or give another --workdir') from None
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      holder = os.pread(fd, 200, 0).decode('utf-8', 'replace').strip() or 'another process'
      raise UserError(f'{workdir} is being trained by {holder}: wait for it to finish or stop '
                      'it, or give another --workdir') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)    # closing releases the flock


def top_level_entries(workdir: str):
  """The names at the top of `workdir`, or None when it does not exist (see removed_on_setup_failure)."""
  return set(os.listdir(workdir)) if os.path.isdir(workdir) else None


@contextlib.contextmanager
def removed_on_setup_failure(workdir: str, before) -> Iterator[None]:
  """Removes what a failed set-up added to the workdir, so a refused run leaves it as it was.

  Most bad inputs are refused before the first write (components.preflight); a few can only
  be seen once data is read (e.g. every training pair longer than data.max_len). For those, the
  top-level entries added since `before` (from `top_level_entries`, taken before the first
  write) are removed again: config, tokenizer, prepared data, lock; and the workdir itself if
  it did not exist. Entries that were there before are never touched. Only a UserError
  triggers the clean-up; a bug keeps its files for inspection.
  """
  try:
    yield
  except UserError:
    if before is None:
      shutil.rmtree(workdir, ignore_errors=True)
    elif os.path.isdir(workdir):
      for name in set(os.listdir(workdir)) - before:
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.remove(path)
    raise
