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
import tempfile
from typing import Any, Dict, Iterator, List

from transformer_jax.errors import UserError

CONFIG_FILE = 'config.json'
LOCK_FILE = 'train.lock'     # held by the one process training in the workdir
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
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def check_path(workdir: str, writes: bool) -> None:
  """Refuses a workdir that is not a folder, or (when the mode `writes`) cannot be written.

  Checked before anything is built, so a read-only or mistyped workdir fails at once rather
  than after a training has started or an evaluation has run.
  """
  if not workdir:
    raise UserError('--workdir is empty: give a folder, or omit the flag for '
                    'runs/<experiment>[_<variant>]')
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

  Raises:
    UserError: another process holds the lock.
  """
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
