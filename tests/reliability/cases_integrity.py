"""Catalogue cases for what a run writes: checkpoints, config.json, the data position, metrics.jsonl, locks, workdir paths, sweeps (see catalogue.py and runner.py)."""
from tests.reliability.runner import Case  # pylint: disable=unused-import

SMOKE = '--experiment=experiments/copy_task.py:smoke'

CASES = [
]

# --- workdir, locks, metrics.jsonl, ranges, init_embeddings ---
import os  # pylint: disable=wrong-import-position,wrong-import-order

RESUME = '--experiment.train.num_steps=4'           # resumes the 2-step smoke run of 'run'
VECTORS = '--experiment.train.init_embeddings={tmp}/vectors.txt'


def _symlink_loop(name):
  """`<tmp>/<name>` (or `<workdir>/<name>` when name starts with 'workdir/') links to itself."""
  def setup(tmp, workdir):
    path = workdir / name[len('workdir/'):] if name.startswith('workdir/') else tmp / name
    if path.is_file():
      path.unlink()
    os.symlink(path.name, path)
  return setup


def _folder_instead_of(name):
  def setup(tmp, workdir):
    path = workdir / name
    if path.is_file():
      path.unlink()
    path.mkdir()
    (path / 'kept.txt').write_text('the user put this here\n')
  return setup


def _file_instead_of_tensorboard(tmp, workdir):
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.rmtree(workdir / 'tensorboard', ignore_errors=True)
  (workdir / 'tensorboard').write_text('not the event files\n')


def _immutable_file(name):
  def setup(tmp, workdir):
    from tests.reliability import catalogue  # pylint: disable=import-outside-toplevel
    path = workdir / name
    if os.system(f'chattr +i {path} 2>/dev/null') != 0:
      raise NotImplementedError('chattr +i is not available here')
    catalogue.IMMUTABLE.append(path)           # released by the test
  return setup


def _vectors(text: bytes, name='vectors.txt'):
  def setup(tmp, workdir):
    (tmp / name).write_bytes(text)
  return setup


def _rows(*rows):
  """A word2vec text file of 16-dim vectors (the smoke model's model_dim), header included."""
  return f'{len(rows)} 16\n'.encode() + b''.join(row + b'\n' for row in rows)


_ROW = b' '.join([b'0.25'] * 16)

CASES += [
    # integers past what consumes them (int32 on the device, 32-bit jax seeds)
    Case('seed_too_big', [SMOKE, '--experiment.train.seed=18446744073709551616'],
         'train.seed=18446744073709551616 is out of range'),
    Case('seed_negative', [SMOKE, '--experiment.train.seed=-1'], 'train.seed=-1 is out of range'),
    Case('shuffle_seed_negative', [SMOKE, '--experiment.data.shuffle_seed=-1'],
         'data.shuffle_seed=-1 is out of range'),
    Case('warmup_too_big', [SMOKE, '--experiment.optim.warmup_steps=3000000000'],
         'optim.warmup_steps=3000000000 is out of range (step counters'),
    Case('num_steps_too_big', [SMOKE, '--experiment.train.num_steps=3000000000'],
         'train.num_steps=3000000000 is out of range (step counters'),
    Case('tokens_per_batch_too_big', [SMOKE, '--experiment.data.tokens_per_batch=100000000000'],
         'takes 373 GiB'),
    # workdir paths and the files a training writes in place
    Case('workdir_name_too_long', [SMOKE, '--workdir={tmp}/' + 'w' * 300 + '/run'],
         'bytes a file name may have'),
    Case('workdir_below_symlink_loop', [SMOKE, '--workdir={tmp}/loop/run'], 'is a symlink loop',
         setup=_symlink_loop('loop')),
    Case('workdir_is_symlink_loop', [SMOKE, '--workdir={tmp}/loop'], 'is a symlink loop',
         setup=_symlink_loop('loop')),
    Case('train_lock_is_a_folder', [SMOKE, RESUME], 'train.lock is a folder', workdir='run',
         setup=_folder_instead_of('train.lock')),
    Case('train_lock_symlink_loop', [SMOKE, RESUME], 'train.lock is a symlink loop',
         workdir='run', setup=_symlink_loop('workdir/train.lock')),
    Case('train_lock_folder_in_fresh_workdir', [SMOKE], 'train.lock is a folder',
         setup=_folder_instead_of('train.lock')),
    Case('metrics_jsonl_is_a_folder', [SMOKE, RESUME], 'metrics.jsonl is a folder', workdir='run',
         setup=_folder_instead_of('metrics.jsonl')),
    Case('metrics_jsonl_not_writable', [SMOKE, RESUME], 'metrics.jsonl is not writable',
         workdir='run', setup=_immutable_file('metrics.jsonl')),
    Case('tensorboard_is_a_file', [SMOKE, RESUME], 'tensorboard is a file', workdir='run',
         setup=_file_instead_of_tensorboard),
    # train.init_embeddings files: refused with their line before anything is written
    Case('init_embeddings_not_numeric', [SMOKE, VECTORS], 'vectors.txt:3: value 2 of',
         setup=_vectors(_rows(b'dog ' + _ROW, b'cat 0.5 zero' + _ROW[9:]))),
    Case('init_embeddings_bad_header', [SMOKE, VECTORS], 'vectors.txt:1: header',
         setup=_vectors(b'vectors of dim 16\n' + b'dog ' + _ROW + b'\n')),
    Case('init_embeddings_nan', [SMOKE, VECTORS], 'which would make the loss NaN',
         setup=_vectors(_rows(b'dog ' + _ROW, b'cat ' + _ROW[:-4] + b'nan'))),
    Case('init_embeddings_not_utf8', [SMOKE, VECTORS], 'vectors.txt:2: not UTF-8',
         setup=_vectors(_rows(b'caf\xe9 ' + _ROW))),
    Case('init_embeddings_wrong_dim', [SMOKE, VECTORS], 'have dim 4 but model.model_dim is 16',
         setup=_vectors(b'1 4\ndog 0.1 0.2 0.3 0.4\n')),
]
