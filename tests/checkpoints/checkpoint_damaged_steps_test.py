"""Checkpoint steps damaged on disk (truncated, emptied, bit rot, deleted files), failed async
writes, and the reports of reads orbax abandoned: each kind of damage on its own."""
import logging
import os
import shutil
import sys

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.checkpoints import orbax_faults
from tests.checkpoints.checkpoint_fixtures import _assert_trees_equal, _make_state, _save_steps, _snapshot
from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import averaging
from transformer_jax.checkpoints import checkpoint
from transformer_jax.checkpoints import diagnosis as checkpoint_errors

# Reading a damaged step leaves tensorstore callbacks on a closed asyncio loop ("RuntimeError: Event
# loop is closed", TOOLCHAIN.md §3); pytest reports them as unraisable exceptions. They are noise.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def _truncate_data(step_dir):
  for path in (step_dir / 'state').rglob('*'):
    if path.is_file() and '/d/' in str(path):
      with open(path, 'r+b') as f:
        f.truncate(path.stat().st_size // 2)


def _delete_metadata(step_dir):
  (step_dir / 'state' / '_METADATA').unlink()


def _empty_dir(step_dir):
  for child in step_dir.iterdir():
    shutil.rmtree(child) if child.is_dir() else child.unlink()


def _zero_length(step_dir):
  for path in step_dir.rglob('*'):
    if path.is_file():
      path.write_bytes(b'')


def _moved_aside(snapshot, step, name=None):
  """`snapshot` as it reads once step `step` has been renamed to checkpoints/damaged/<name>."""
  old, new = f'checkpoints/{step}/', f'checkpoints/{checkpoint.DAMAGED_SUBDIR}/{name or step}/'
  return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in snapshot.items()}


@pytest.mark.parametrize('read_only', [False, True])
@pytest.mark.parametrize('damage', [_truncate_data, _delete_metadata, _empty_dir, _zero_length])
def test_damaged_latest_falls_back_to_previous(tmp_path, caplog, damage, read_only):
  states = _save_steps(tmp_path, [1, 2, 3])
  damage(tmp_path / 'checkpoints' / '3')
  before = _snapshot(tmp_path)
  with checkpoint.Checkpointer(str(tmp_path), read_only=read_only) as ckpt:
    assert ckpt.latest_step() == 3    # orbax still lists it
    with caplog.at_level(logging.WARNING):
      got, data_state, meta, step = ckpt.restore(_make_state())
    assert step == 2 and data_state == {'epoch': 2, 'index': 14} and meta == {'v': 1}
    _assert_trees_equal(got.params, states[2].params)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any('checkpoint step 3' in w and 'damaged' in w for w in warnings), warnings
    if read_only:        # evaluation only skips it
      assert _snapshot(tmp_path) == before
      return
    # Training moves it aside, renamed and not rewritten, and can then save a new step 3.
    assert _snapshot(tmp_path) == _moved_aside(before, 3)
    assert any(f'moved damaged checkpoint step 3 to {tmp_path}/checkpoints/damaged/3' in w
               for w in warnings), warnings
    assert ckpt.latest_step() == 2
    assert ckpt.save(3, states[2], {'epoch': 3})
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.all_steps() == [1, 2, 3] and ckpt.restore(_make_state())[1] == {'epoch': 3}


def test_all_damaged_raises_user_error(tmp_path, caplog):
  _save_steps(tmp_path, [1, 2])
  _truncate_data(tmp_path / 'checkpoints' / '2')
  _zero_length(tmp_path / 'checkpoints' / '1')
  before = _snapshot(tmp_path)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match='no readable checkpoint'):
      ckpt.restore(_make_state())
  assert _snapshot(tmp_path) == before


def test_explicit_step_missing_or_damaged(tmp_path):
  states = _save_steps(tmp_path, [1, 2])
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    got, _, _, step = ckpt.restore(_make_state(), step=1)
    assert step == 1
    _assert_trees_equal(got.params, states[1].params)
    with pytest.raises(UserError, match=r'no checkpoint step 7 .*\[1, 2\]'):
      ckpt.restore(_make_state(), step=7)
    _truncate_data(tmp_path / 'checkpoints' / '2')
    with pytest.raises(UserError, match='step 2 .* damaged .*: pick another step, e.g. --step=1'):
      ckpt.restore(_make_state(), step=2)


def _bits_state(seed):
  """A state whose params/w is 16 KB of random bits: zstd cannot compress them, so they lie in
  an array data file byte for byte, where a test can find and damage exactly that array."""
  rs = np.random.RandomState(seed)
  return {'params': {'w': jnp.asarray(rs.randint(0, 2**32, size=4096, dtype=np.uint32)),
                     'b': jnp.asarray(rs.normal(size=8).astype(np.float32))},
          'count': jnp.asarray(seed, jnp.int32)}


def _file_holding(step_dir, leaf):
  """(path, offset) of the one array data file under `step_dir`/state holding `leaf`'s middle."""
  raw = np.asarray(leaf).tobytes()
  needle = raw[len(raw) // 2:len(raw) // 2 + 16]
  found = [(p, p.read_bytes().find(needle)) for p in (step_dir / 'state').rglob('*')
           if p.is_file() and needle in p.read_bytes()]
  assert len(found) == 1, found
  return found[0]


def _bit_rot(path, offset):
  """Flips 8 bytes in place: the file keeps its size, as with bit rot or a bad copy."""
  with open(path, 'r+b') as f:
    f.seek(offset)
    flipped = bytes(b ^ 0xFF for b in f.read(8))
    f.seek(offset)
    f.write(flipped)


def _truncate_file(path, offset):
  del offset
  with open(path, 'r+b') as f:
    f.truncate(path.stat().st_size // 2)


def _delete_file(path, offset):
  del offset
  path.unlink()


def _save_old_format(workdir, step, state):
  """A step as saved before checksums existed: the meta item is the caller's dict itself."""
  with checkpoint.Checkpointer(str(workdir), async_save=False) as ckpt:
    ckpt._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({'epoch': step}),
        meta=ocp.args.JsonSave({'v': 0})))


def _save_steps_of(workdir, states):
  """Saves the given {step: state} synchronously, with checksums; returns them."""
  with checkpoint.Checkpointer(str(workdir), max_to_keep=None, async_save=False) as ckpt:
    for step, state in states.items():
      assert ckpt.save(step, state, {'epoch': step}, meta={'v': 1})
  return states


@pytest.mark.parametrize('damage', [_bit_rot, _truncate_file, _delete_file])
def test_damaged_array_file_is_skipped_then_moved_aside_by_training(tmp_path, caplog, damage):
  _save_old_format(tmp_path, 1, _bits_state(1))     # no checksums: restores without the check
  states = _save_steps_of(tmp_path, {2: _bits_state(2)})
  damage(*_file_holding(tmp_path / 'checkpoints' / '2', states[2]['params']['w']))
  before = _snapshot(tmp_path)
  template = _bits_state(0)
  with caplog.at_level(logging.WARNING), \
      checkpoint.Checkpointer(str(tmp_path), read_only=True) as ckpt:
    # Evaluation: the newest readable step instead, named damage skipped, nothing moved.
    assert ckpt.restore(template)[3] == 1
    params, chosen = averaging.average_newest(ckpt, template['params'], 1)
    assert chosen == [1]
    _assert_trees_equal(params, _bits_state(1)['params'])
    for explicit in (lambda: averaging.average_newest(ckpt, template['params'], 1, step=2),
                     lambda: ckpt.restore_params(template['params'], 2),
                     lambda: ckpt.restore(template, step=2)):
      with pytest.raises(UserError) as info:
        explicit()
      message = str(info.value)
      assert message.startswith(f'checkpoint step 2 in {tmp_path}/checkpoints is damaged (')
      assert '--step=1' in message and '\n' not in message
  assert _snapshot(tmp_path) == before
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert any('checkpoint step 2' in w and 'skipping it' in w for w in warnings), warnings
  if damage is _bit_rot:       # orbax reads it without complaint: only the checksum sees it
    assert any('params/w differs from the checksum' in w for w in warnings), warnings
  # Training: falls back to step 1, moves step 2 aside, and saves a new step 2 normally.
  caplog.clear()
  with caplog.at_level(logging.WARNING), checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    got, data_state, meta, step = ckpt.restore(template)
    assert (step, data_state, meta) == (1, {'epoch': 1}, {'v': 0})
    _assert_trees_equal(got, _bits_state(1))
    assert ckpt.save(2, _bits_state(3), {'epoch': 3})
  assert _snapshot(tmp_path / 'checkpoints' / 'damaged' / '2') == {   # renamed, not rewritten
      k[len('checkpoints/2/'):]: v for k, v in before.items() if k.startswith('checkpoints/2/')}
  moved = f'moved damaged checkpoint step 2 to {tmp_path}/checkpoints/damaged/2'
  assert any(moved in r.getMessage() for r in caplog.records)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.latest_step() == 2
    _assert_trees_equal(ckpt.restore(template)[0], _bits_state(3))


def test_second_damaged_copy_of_a_step_gets_its_own_name(tmp_path):
  _save_steps(tmp_path, [1, 2])
  for expected in ('2', '2-1'):
    _truncate_data(tmp_path / 'checkpoints' / '2')
    with checkpoint.Checkpointer(str(tmp_path), async_save=False) as ckpt:
      assert ckpt.restore(_make_state())[3] == 1
      assert ckpt.save(2, _make_state(seed=2), {})
    assert (tmp_path / 'checkpoints' / 'damaged' / expected / 'state').is_dir()
  assert sorted(os.listdir(tmp_path / 'checkpoints' / 'damaged')) == ['2', '2-1']


def test_failed_async_write_is_a_one_line_error_naming_the_step(tmp_path, monkeypatch):
  state = _make_state(seed=1)
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=True)
  assert ckpt.save(1, state, {'epoch': 1})
  ckpt.wait()
  kept = _snapshot(tmp_path / 'checkpoints' / '1')
  orbax_faults.full_disk(monkeypatch)
  assert ckpt.save(2, state, {'epoch': 2})      # the write fails later, in the background
  with pytest.raises(UserError) as info:
    ckpt.save(3, state, {'epoch': 3})           # ... and is reported at the next save
  assert str(info.value) == (
      f'checkpoint step 2 could not be written to {tmp_path}/checkpoints (No space left on '
      'device; step 1 is the newest kept): free disk space or fix the cause, then resume')
  assert ckpt.save(4, state, {'epoch': 4})
  with pytest.raises(UserError, match=r'^checkpoint step 4 could not be written .*step 1 is'):
    ckpt.close()                                # ... or at close
  with checkpoint.Checkpointer(str(tmp_path)) as fresh:
    assert fresh.all_steps() == [1]
  assert _snapshot(tmp_path / 'checkpoints' / '1') == kept


def test_only_reports_of_abandoned_reads_are_dropped(monkeypatch):
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  checkpoint_errors.quiet_abandoned_reads()
  checkpoint_errors.quiet_abandoned_reads()              # once: the first hook is still the next one
  hook = sys.unraisablehook
  assert hook is not seen.append

  def report(error, obj=None):
    hook(type('Unraisable', (), {'exc_value': error, 'object': obj})())

  report(RuntimeError('Event loop is closed'))
  assert seen == []
  others = [RuntimeError('Event loop is closed'), RuntimeError('other'), ValueError('x')]
  report(others[0], obj='a coroutine')
  report(others[1])
  report(others[2])
  assert [u.exc_value for u in seen] == others
