"""States and snapshots shared by the checkpoint tests."""
import pathlib

from flax.training import train_state
import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer_jax.checkpoints import checkpoint


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
