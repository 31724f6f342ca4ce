"""Tests for transformer_jax.checkpoints.checkpoint (round trips, rotation, shape checks, async saves) and the
averaging.py functions that read through it; damaged steps: checkpoint_damaged_steps_test.py."""

import logging
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.checkpoints.checkpoint_fixtures import (_State, _assert_trees_equal, _make_state, _save_steps,
                                       _snapshot)
from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import averaging
from transformer_jax.checkpoints import checkpoint

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# Reading a damaged step leaves tensorstore callbacks on a closed asyncio loop ("RuntimeError: Event
# loop is closed", TOOLCHAIN.md §3); pytest reports them as unraisable exceptions. They are noise.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


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
    from transformer_jax.checkpoints import checkpoint
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


_SIGKILL_SCRIPT = textwrap.dedent('''
    import os, signal, sys
    import jax.numpy as jnp
    from transformer_jax.checkpoints import checkpoint
    size = int(sys.argv[2])
    ckpt = checkpoint.Checkpointer(sys.argv[1], async_save=True)
    ckpt.save(1, {'params': {'w': jnp.arange(size, dtype=jnp.float32)}, 'step': 1}, {'epoch': 1})
    ckpt.wait()
    ckpt.save(2, {'params': {'w': jnp.full(size, 2.0, jnp.float32)}, 'step': 2}, {'epoch': 2})
    os.kill(os.getpid(), signal.SIGKILL)      # the 128 MB write of step 2 is in flight
''')


def test_sigkill_during_an_async_save_leaves_the_previous_step_restorable(tmp_path):
  size = 1 << 25
  env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'JAX_PLATFORMS': 'cpu'}
  proc = subprocess.run([sys.executable, '-c', _SIGKILL_SCRIPT, str(tmp_path), str(size)],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  ckpt_dir = tmp_path / 'checkpoints'
  unfinished = [p.name for p in ckpt_dir.iterdir() if p.name.startswith('2.')]
  assert unfinished, sorted(p.name for p in ckpt_dir.iterdir())   # killed mid-write, not after
  template = {'params': {'w': jnp.zeros(size, jnp.float32)}, 'step': 0}
  with checkpoint.Checkpointer(str(tmp_path), async_save=False) as ckpt:
    assert ckpt.all_steps() == [1]
    got, data_state, _, step = ckpt.restore(template)
    assert step == 1 and data_state == {'epoch': 1} and got['step'] == 1
    np.testing.assert_array_equal(got['params']['w'], np.arange(size, dtype=np.float32))
    # The resumed run saves its own step 2 over nothing: the unfinished write is not in the way.
    assert ckpt.save(2, {'params': {'w': jnp.ones(size, jnp.float32)}, 'step': 2}, {'epoch': 2})
    assert ckpt.all_steps() == [1, 2]
    got, _, _, step = ckpt.restore(template)
  assert step == 2 and float(got['params']['w'][-1]) == 1.0


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
