"""Tests for transformer_jax.checkpoint: round trips, rotation, damage, shape checks, averaging."""

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
import pytest

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


@pytest.mark.parametrize('damage', [_truncate_data, _delete_metadata, _empty_dir, _zero_length])
def test_damaged_latest_falls_back_to_previous(tmp_path, caplog, damage):
  states = _save_steps(tmp_path, [1, 2, 3])
  damage(tmp_path / 'checkpoints' / '3')
  before = _snapshot(tmp_path)
  with checkpoint.Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.latest_step() == 3    # orbax still lists it
    with caplog.at_level(logging.WARNING):
      got, data_state, meta, step = ckpt.restore(_make_state())
  assert step == 2 and data_state == {'epoch': 2, 'index': 14} and meta == {'v': 1}
  _assert_trees_equal(got.params, states[2].params)
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert any('checkpoint step 3' in w and 'unreadable' in w for w in warnings), warnings
  assert _snapshot(tmp_path) == before


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
    with pytest.raises(UserError, match='step 2 .* is unreadable'):
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
    got = checkpoint.average_params(ckpt, ckpt.last_k_steps(3), template)
  from_dir = checkpoint.average_params(str(tmp_path), [1, 2, 3], template)
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
    checkpoint.average_params(str(tmp_path), [], template)
  with pytest.raises(UserError, match='no checkpoint step 5'):
    checkpoint.average_params(str(tmp_path), [1, 5], template)
  with pytest.raises(UserError, match='params/embed/embedding of shape'):
    checkpoint.average_params(str(tmp_path), [1, 2], _make_state(vocab_size=9).params)
  with pytest.raises(UserError, match='no checkpoint directory'):
    checkpoint.average_params(str(tmp_path / 'elsewhere'), [1], template)


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
