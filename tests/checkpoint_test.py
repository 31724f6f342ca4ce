"""Tests for transformer_jax.checkpoint (round trips, rotation, damage, shape checks) and the
averaging.py functions that read through it."""

import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from tests import orbax_faults
from transformer_jax import averaging
from transformer_jax import checkpoint
from transformer_jax.errors import UserError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Reading a damaged step leaves tensorstore callbacks on a closed asyncio loop ("RuntimeError: Event
# loop is closed", TOOLCHAIN.md §3); pytest reports them as unraisable exceptions. They are noise.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


class _State(train_state.TrainState):
  rng: jax.Array


def _make_state(vocab_size=11, width=4, seed=0, typed_key=True):
  """A TrainState shaped like an embedding feeding a Dense, with random params and Adam moments.

  Built from NumPy values rather than by a flax init and real updates: each new shape would cost
  a few seconds of compiling on 2 cores, and a checkpoint only sees the values.
  """
  rs = np.random.RandomState(seed)
  shapes = {'embed': {'embedding': (vocab_size, 8)},
            'dense': {'kernel': (8, width), 'bias': (width,)}}

  def random_like(shape):
    return jnp.asarray(rs.normal(size=shape).astype(np.float32))

  params = jax.tree_util.tree_map(random_like, shapes, is_leaf=lambda x: isinstance(x, tuple))
  rng = jax.random.key(seed + 100) if typed_key else jax.random.PRNGKey(seed + 100)
  state = _State.create(apply_fn=None, params=params, tx=optax.adam(1e-2), rng=rng)
  opt_state = jax.tree_util.tree_map(
      lambda x: random_like(x.shape) if x.dtype == jnp.float32 else jnp.asarray(seed + 3, x.dtype),
      state.opt_state)
  return state.replace(step=seed + 3, opt_state=opt_state)


def _bits(leaf):
  """A NumPy view of a leaf for exact comparison (typed keys as their key data)."""
  if jax.dtypes.issubdtype(getattr(leaf, 'dtype', np.int32), jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf)


def _assert_trees_equal(got, want):
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert _bits(g).dtype == _bits(w).dtype
    np.testing.assert_array_equal(_bits(g), _bits(w))


def _save_steps(workdir, steps, max_to_keep=None, **state_kwargs):
  """Saves one state per step (each with different values) synchronously; returns them by step."""
  states = {}
  with checkpoint.Checkpointer(str(workdir), max_to_keep=max_to_keep, async_save=False) as ckpt:
    for step in steps:
      states[step] = _make_state(seed=step, **state_kwargs)
      assert ckpt.save(step, states[step], {'epoch': step, 'index': 7 * step}, meta={'v': 1})
  return states


def _snapshot(directory):
  """Every file under `directory` with its size and mtime, to see deletions and rewrites."""
  return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in pathlib.Path(directory).rglob('*') if p.is_file()}


@pytest.mark.parametrize('typed_key', [True, False])
def test_round_trip_is_bitwise_equal(tmp_path, typed_key):
  state = _make_state(seed=5, typed_key=typed_key)
  data_state = {'epoch': 2, 'position': [1, 2, 3], 'name': 'multi30k'}
  meta = {'vocab_size': 11, 'model': {'width': 4}}
  with checkpoint.Checkpointer(str(tmp_path), async_save=False) as ckpt:
    assert ckpt.save(3, state, data_state, meta)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:   # a fresh manager reads it from disk
    got, got_data, got_meta, step = ckpt.restore(checkpoint.abstract_state(_make_state(
        typed_key=typed_key)))
  assert step == 3 and got_data == data_state and got_meta == meta
  assert isinstance(got, _State)
  assert int(got.step) == 8
  _assert_trees_equal(got.params, state.params)
  _assert_trees_equal(got.opt_state, state.opt_state)
  _assert_trees_equal(got.rng, state.rng)


def test_restore_accepts_eval_shape_template_and_missing_meta(tmp_path):
  state = _make_state()
  with checkpoint.Checkpointer(str(tmp_path), async_save=False) as ckpt:
    ckpt.save(1, state, {'epoch': 0})
    got, _, meta, _ = ckpt.restore(jax.eval_shape(_make_state))
  assert meta is None
  assert isinstance(got.params['dense']['kernel'], jax.Array)
  _assert_trees_equal(got.params, state.params)


def test_max_to_keep_and_last_k_steps(tmp_path):
  _save_steps(tmp_path, range(1, 6), max_to_keep=2)
  with checkpoint.Checkpointer(str(tmp_path), max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [4, 5]
    assert ckpt.latest_step() == 5
    assert ckpt.last_k_steps(5) == [4, 5]
    assert ckpt.last_k_steps(1) == [5]
    with pytest.raises(UserError, match='at least 1'):
      ckpt.last_k_steps(0)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '5']


def _save_scored(ckpt, scores, metric='loss'):
  for step, value in scores.items():
    ckpt.save(step, _make_state(seed=step), {'index': step},
              metrics=None if value is None else {metric: value, 'accuracy': 0.5})


def test_keep_best_keeps_the_best_step_beside_the_newest(tmp_path, caplog):
  def opened(**kwargs):
    return checkpoint.Checkpointer(str(tmp_path), max_to_keep=2, async_save=False,
                                   best_metric='loss', best_mode='min', **kwargs)
  # Lower loss is better. No metric (None, a save without a fresh evaluation) and a NaN never
  # rank: such steps live only while among the newest two.
  with opened() as ckpt:
    _save_scored(ckpt, {1: 5.0, 2: 1.0, 3: None, 4: 3.0, 5: float('nan'), 6: 2.0})
    assert ckpt.all_steps() == [2, 5, 6]
  with opened() as ckpt:               # a restart keeps the ranking: orbax stored the metric
    _save_scored(ckpt, {7: None})
    assert ckpt.all_steps() == [2, 6, 7]
    _save_scored(ckpt, {8: 0.5})
    assert ckpt.all_steps() == [7, 8]
  with checkpoint.Checkpointer(str(tmp_path), read_only=True) as ckpt:
    assert ckpt.best_step('loss', 'min') == (8, 0.5)
    assert ckpt.best_step('accuracy', 'max') is None       # only best_metric is recorded
    assert ckpt.restore(_make_state(), step=8)[3] == 8      # the kept steps stay readable
  # A damaged metrics file counts as no metric (with a warning) instead of failing every open.
  (tmp_path / 'checkpoints' / '8' / 'metrics' / 'metrics').write_bytes(b'')
  with caplog.at_level(logging.WARNING), opened() as ckpt:
    assert ckpt.all_steps() == [7, 8] and ckpt.best_step('loss', 'min') is None
  assert any('step 8: its saved metrics cannot be read' in r.getMessage() for r in caplog.records)


def test_keep_best_higher_is_better_and_off_by_default(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path / 'best'), max_to_keep=1, async_save=False,
                               best_metric='bleu_tok_lc', best_mode='max') as ckpt:
    _save_scored(ckpt, {1: 10.0, 2: 30.0, 3: 20.0, 4: 25.0}, metric='bleu_tok_lc')
    assert ckpt.all_steps() == [2, 4]
    assert ckpt.best_step('bleu_tok_lc', 'max') == (2, 30.0)
  with checkpoint.Checkpointer(str(tmp_path / 'last'), max_to_keep=1, async_save=False) as ckpt:
    _save_scored(ckpt, {1: 10.0, 2: 30.0, 3: 20.0})
    assert ckpt.all_steps() == [3] and ckpt.best_step('loss', 'min') is None


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


def test_no_checkpoint_raises_user_error(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.latest_step() is None and ckpt.all_steps() == []
    with pytest.raises(UserError, match='no checkpoint in'):
      ckpt.restore(_make_state())


@pytest.mark.parametrize('config, expected', [
    ({'width': 6}, 'params/dense/bias of shape (4,) but the config builds (6,)'),
    ({'vocab_size': 13}, 'params/embed/embedding of shape (11, 8) but the config builds (13, 8)'),
])
def test_shape_mismatch_names_path_and_shapes(tmp_path, config, expected):
  _save_steps(tmp_path, [1, 2])
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(UserError) as info:
      ckpt.restore(_make_state(**config))
  message = str(info.value)
  assert message.startswith(f'checkpoint step 2 in {tmp_path}/checkpoints has {expected}: ')
  assert '--workdir' in message and '\n' not in message


def test_missing_parameter_is_named(tmp_path):
  _save_steps(tmp_path, [1])
  state = _make_state()
  bigger = state.replace(params={**state.params, 'extra': {'kernel': jnp.zeros((2, 2))}})
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    with pytest.raises(UserError, match=r'has no params/extra/kernel .* shape \(2, 2\)'):
      ckpt.restore(bigger)


def test_average_params_is_the_float32_mean(tmp_path):
  states = _save_steps(tmp_path, [1, 2, 3])
  # Store the embedding as bfloat16 in the template: the mean must come back in that dtype.
  template = checkpoint.abstract_state(states[1].params)
  template['embed']['embedding'] = jax.ShapeDtypeStruct((11, 8), jnp.bfloat16)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    got = averaging.average_params(ckpt, ckpt.last_k_steps(3), template)
  from_dir = averaging.average_params(str(tmp_path), [1, 2, 3], template)
  _assert_trees_equal(from_dir, got)
  for path in (('dense', 'kernel'), ('dense', 'bias'), ('embed', 'embedding')):
    leaves = [np.asarray(s.params[path[0]][path[1]], np.float32) for s in states.values()]
    want = np.mean(np.stack(leaves), axis=0)
    leaf = got[path[0]][path[1]]
    assert leaf.dtype == template[path[0]][path[1]].dtype
    np.testing.assert_allclose(np.asarray(leaf, np.float32), want,
                               rtol=1e-2 if leaf.dtype == jnp.bfloat16 else 1e-6)


def test_average_params_errors(tmp_path):
  _save_steps(tmp_path, [1, 2])
  template = _make_state().params
  with pytest.raises(UserError, match='no checkpoint steps'):
    averaging.average_params(str(tmp_path), [], template)
  with pytest.raises(UserError, match='no checkpoint step 5'):
    averaging.average_params(str(tmp_path), [1, 5], template)
  with pytest.raises(UserError, match='params/embed/embedding of shape'):
    averaging.average_params(str(tmp_path), [1, 2], _make_state(vocab_size=9).params)
  with pytest.raises(UserError, match='no checkpoint directory'):
    averaging.average_params(str(tmp_path / 'elsewhere'), [1], template)


def test_async_save_then_wait_then_restore(tmp_path):
  state = _make_state(seed=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=True)
  assert ckpt.save(10, state, {'epoch': 1})
  ckpt.wait()
  assert ckpt.all_steps() == [10]
  got, data_state, _, step = ckpt.restore(_make_state())
  ckpt.close()
  assert step == 10 and data_state == {'epoch': 1}
  _assert_trees_equal(got.opt_state, state.opt_state)


def test_close_finishes_an_async_save(tmp_path):
  state = _make_state(seed=2)
  ckpt = checkpoint.Checkpointer(str(tmp_path), async_save=True)
  ckpt.save(4, state, {'epoch': 1})
  ckpt.close()      # no wait(): close must finish the write
  with checkpoint.Checkpointer(str(tmp_path)) as fresh:
    got, _, _, step = fresh.restore(_make_state())
  assert step == 4
  _assert_trees_equal(got.params, state.params)


def test_interrupted_save_is_ignored(tmp_path):
  states = _save_steps(tmp_path, [1, 2])
  # What a kill during an async write leaves: a step dir that was never renamed into place.
  ckpt_dir = tmp_path / 'checkpoints'
  shutil.copytree(ckpt_dir / '2', ckpt_dir / '3.orbax-checkpoint-tmp-1234')
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.all_steps() == [1, 2] and ckpt.latest_step() == 2
    got, _, _, step = ckpt.restore(_make_state())
  assert step == 2
  _assert_trees_equal(got.params, states[2].params)
  assert (ckpt_dir / '3.orbax-checkpoint-tmp-1234').is_dir()


def test_save_never_overwrites(tmp_path, caplog):
  _save_steps(tmp_path, [1, 2])
  before = _snapshot(tmp_path)
  with checkpoint.Checkpointer(str(tmp_path), async_save=False) as ckpt:
    with caplog.at_level(logging.WARNING):
      assert not ckpt.save(2, _make_state(seed=9), {'epoch': 9})
      assert not ckpt.save(1, _make_state(seed=9), {'epoch': 9})
  assert _snapshot(tmp_path) == before
  assert any('not saving checkpoint step 2' in r.getMessage() for r in caplog.records)


def test_save_rejects_bad_input(tmp_path):
  with checkpoint.Checkpointer(str(tmp_path), async_save=False) as ckpt:
    with pytest.raises(TypeError, match='data_state'):
      ckpt.save(1, _make_state(), {'rng': np.zeros(2)})
    if jax.local_device_count() > 1:
      per_device = jax.pmap(lambda x: x)(jnp.zeros((jax.local_device_count(), 3)))
      with pytest.raises(ValueError, match='unreplicated'):
        ckpt.save(1, {'params': per_device}, {})
    assert ckpt.all_steps() == []


_SIGTERM_SCRIPT = textwrap.dedent('''
    import signal, sys, time
    import jax.numpy as jnp
    from transformer_jax import checkpoint
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))   # the trainer's handler: a flag
    ckpt = checkpoint.Checkpointer(sys.argv[1], async_save=True)
    state = {'params': {'w': jnp.arange(1 << 20, dtype=jnp.float32)}, 'step': 0}
    print('ready', flush=True)
    while not stop:
      time.sleep(0.01)
    ckpt.save(5, state, {'epoch': 3})
    ckpt.close()
''')


def test_sigterm_flag_then_save_and_close_writes_the_step(tmp_path):
  env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.Popen([sys.executable, '-c', _SIGTERM_SCRIPT, str(tmp_path)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    assert proc.stdout.readline().strip() == 'ready'
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
  finally:
    if proc.poll() is None:
      proc.kill()
  template = {'params': {'w': jnp.zeros(1 << 20, jnp.float32)}, 'step': 0}
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    got, data_state, _, step = ckpt.restore(template)
  assert step == 5 and data_state == {'epoch': 3}
  np.testing.assert_array_equal(got['params']['w'], np.arange(1 << 20, dtype=np.float32))


def test_keep_checkpoints_below_one_is_refused_and_nothing_deleted(tmp_path):
  states = _save_steps(tmp_path, [1, 2])
  before = _snapshot(tmp_path)
  with pytest.raises(UserError) as info:
    checkpoint.Checkpointer(str(tmp_path), max_to_keep=0)
  assert str(info.value) == ('train.keep_checkpoints=0 would delete every checkpoint: set '
                             '--experiment.train.keep_checkpoints to 1 or more')
  assert _snapshot(tmp_path) == before
  with checkpoint.Checkpointer(str(tmp_path), max_to_keep=None, async_save=False) as ckpt:
    assert ckpt.save(3, states[2], {})     # None still keeps every step
    assert ckpt.all_steps() == [1, 2, 3]


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
  checkpoint._quiet_abandoned_reads()
  checkpoint._quiet_abandoned_reads()              # once: the first hook is still the next one
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
