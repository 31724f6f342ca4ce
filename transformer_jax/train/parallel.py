"""Data parallelism: the only module that calls jax.pmap, replicates or shards.

Two interchangeable runners compile the pure steps of steps.py
(`train.parallelism` picks one through `make_runner`):

* `PmapRunner`: `jax.pmap` over the local devices, `axis_name=BATCH_AXIS`; the state
  is stacked once per local device, batches are `[local_devices, rows, ...]`.
* `JitRunner`: `jax.jit` over a 1-D mesh of all devices; the state is replicated
  (`P()`), the batch split by rows (`P(BATCH_AXIS)`), and XLA adds the collectives.

Both take and give the same host-side values: `put_state`/`get_state` move an
unreplicated TrainState (the form checkpoints and evaluation use) on and off the
devices; `put_batch` takes this process's rows `[local_rows, ...]`. `put_batches` and
`train_steps` do the same for K batches of one shape trained by one compiled call
(`steps.train_steps`, `train.steps_per_loop`). Metrics stay on the device as float32
scalars (`[K]` from `train_steps`; no host sync per step); `jax.device_get` them
every N steps. On several hosts each process feeds its own rows and the steps
reduce over all devices of all processes.
"""
import functools
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from transformer_jax.base.errors import UserError
from transformer_jax.nn import projected_loss
from transformer_jax.train import steps

BATCH_AXIS = 'batch'


def _pmap_sharding():
  """The layout `jax.pmap` expects for its mapped inputs, so they go in uncopied."""
  mesh = Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))
  return NamedSharding(mesh, P(BATCH_AXIS))


def _host_copy(x):
  # A fresh numpy copy: device buffers made from it never alias the caller's
  # arrays, so donating them to a step cannot delete the caller's state.
  return np.array(jax.device_get(x))


def replicate(tree):
  """One copy of each leaf per local device, `[local_devices, ...]`, for pmap."""
  sharding = _pmap_sharding()
  n = jax.local_device_count()

  def put(x):
    x = _host_copy(x)
    return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), sharding)

  return jax.tree_util.tree_map(put, tree)


def unreplicate(tree):
  """The first local device's copy of each leaf (no cross-device gather)."""
  return jax.tree_util.tree_map(
      lambda x: x.addressable_shards[0].data.squeeze(0), tree)


def _check_rows(batch, num_devices):
  """Number of rows of `batch`; UserError unless it splits evenly over devices."""
  row_counts = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch)}
  if len(row_counts) != 1:
    raise UserError(f'batch arrays have different numbers of rows {sorted(row_counts)}:'
                    ' give every key the same leading (row) dimension')
  rows = row_counts.pop()
  if rows % num_devices:
    fit = math.ceil(rows / num_devices) * num_devices
    raise UserError(f'batch of {rows} rows per process is not divisible by '
                    f'{num_devices} local devices: make the per-process batch a '
                    f'multiple of {num_devices} (e.g. {fit}) or pad it with '
                    'all-padding rows')
  return rows


def shard_batch(batch):
  """Splits this process's rows over its local devices for pmap.

  Args:
    batch: dict of arrays `[local_rows, ...]`.

  Returns:
    dict of arrays `[local_devices, local_rows // local_devices, ...]`.

  Raises:
    UserError: when `local_rows` is not a multiple of the local device count.
  """
  n = jax.local_device_count()
  _check_rows(batch, n)
  # [local_rows, ...] -> [local_devices, rows_per_device, ...]
  return jax.tree_util.tree_map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)


def _serialize_collectives() -> bool:
  """Whether each collective step must finish before the next is dispatched.

  On the CPU backend with several (e.g. --xla_force_host_platform_device_count) devices,
  the devices share one thread pool; with many pmapped steps queued by async dispatch,
  participants of different steps can occupy every thread while waiting in an
  all-reduce rendezvous, and the run deadlocks ("only 7 of 8 arrived"). Accelerators
  execute each device's programs in stream order and keep async dispatch.
  """
  return jax.default_backend() == 'cpu' and jax.local_device_count() > 1


def _finish(outputs, serialize):
  return jax.block_until_ready(outputs) if serialize else outputs


def stack_batches(batches, axis=0):
  """K host batches of one shape -> one dict of arrays with a new K axis at `axis`.

  Args:
    batches: list of K dicts of arrays with equal keys and shapes, e.g. `[rows, length]`.
    axis: where the K axis goes: 0 gives `[K, rows, length]`.

  Raises:
    ValueError: when the batches differ in keys or shapes (one compiled call trains
      them all, so they must match; the trainer groups them that way).
  """
  shapes = [{k: np.shape(v) for k, v in b.items()} for b in batches]
  if any(s != shapes[0] for s in shapes):
    raise ValueError(f'stacked batches must have the same keys and shapes, not {shapes}')
  return {k: np.stack([np.asarray(b[k]) for b in batches], axis=axis) for k in batches[0]}


def _bind_steps(model, label_smoothing, learning_rate_fn, axis_name, loss_chunk):
  """(train_step, train_steps, eval_step) with the static settings bound."""
  train, train_many = (
      functools.partial(fn, model=model, label_smoothing=label_smoothing,
                        learning_rate_fn=learning_rate_fn, axis_name=axis_name,
                        loss_chunk=loss_chunk)
      for fn in (steps.train_step, steps.train_steps))
  evaluate = functools.partial(steps.eval_step, model=model, label_smoothing=label_smoothing,
                               axis_name=axis_name, loss_chunk=loss_chunk)
  return train, train_many, evaluate


class PmapRunner:
  """Data parallelism with `jax.pmap`: state stacked per device, batch reshaped."""

  def __init__(self, *, model, label_smoothing, learning_rate_fn=None,
               loss_chunk=projected_loss.DEFAULT_CHUNK):
    train, train_many, evaluate = _bind_steps(model, label_smoothing, learning_rate_fn,
                                              BATCH_AXIS, loss_chunk)
    # Metrics are psum'ed inside the step, hence equal on all devices:
    # out_axes=None returns them once instead of 8 times.
    self._p_train_step = jax.pmap(train, axis_name=BATCH_AXIS,
                                  donate_argnums=(0,), out_axes=(0, None))
    self._p_train_steps = jax.pmap(train_many, axis_name=BATCH_AXIS,
                                   donate_argnums=(0,), out_axes=(0, None))
    self._p_eval_step = jax.pmap(evaluate, axis_name=BATCH_AXIS, out_axes=None)
    self._p_fns = {}
    self._serialize = _serialize_collectives()

  def put_state(self, host_state):
    """Unreplicated state -> one copy per local device."""
    return replicate(host_state)

  def get_state(self, state):
    """Device state -> one unreplicated copy (for checkpoints and evaluation)."""
    return unreplicate(state)

  def put_batch(self, batch):
    """This process's rows `[local_rows, ...]` -> `[local_devices, rows, ...]` on device."""
    return jax.device_put(shard_batch(batch), _pmap_sharding())

  def put_batches(self, batches):
    """K host batches of one shape -> `[local_devices, K, rows, ...]` on device."""
    # K x [local_devices, rows, ...] -> [local_devices, K, rows, ...]
    stacked = stack_batches([shard_batch(b) for b in batches], axis=1)
    return jax.device_put(stacked, _pmap_sharding())

  def train_step(self, state, batch):
    """(state, batch) -> (new state, metrics); `state` is donated."""
    return _finish(self._p_train_step(state, batch), self._serialize)

  def train_steps(self, state, batches):
    """(state, `put_batches` output) -> (state after K steps, metrics `[K]` per key)."""
    return _finish(self._p_train_steps(state, batches), self._serialize)

  def eval_step(self, params, batch):
    """Metric sums; `params` is `state.params` of a device state."""
    return _finish(self._p_eval_step(params, batch), self._serialize)

  def run_replicated(self, fn, replicated, batch):
    """`fn(replicated, batch_shard)` on every device, e.g. a bound predict_step.

    Args:
      fn: pure function without collectives whose outputs have a leading row
        dimension; pass the same object each time so it is compiled once.
      replicated: device tree from this runner (e.g. `state.params`).
      batch: from `put_batch`.

    Returns:
      the outputs as numpy arrays `[local_rows, ...]`, in the rows' order.
    """
    if fn not in self._p_fns:
      self._p_fns[fn] = jax.pmap(fn, axis_name=BATCH_AXIS)
    out = self._p_fns[fn](replicated, batch)
    # [local_devices, rows_per_device, ...] -> [local_rows, ...]
    return jax.tree_util.tree_map(
        lambda x: np.asarray(x).reshape((-1,) + x.shape[2:]), out)


def _put_global(x, sharding):
  """Host value -> global array; each process fills only its own devices."""
  x = _host_copy(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def _local_rows(x):
  """This process's rows of a row-sharded global array, as numpy."""
  shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
  return np.concatenate([np.asarray(s.data) for s in shards])


class JitRunner:
  """Data parallelism with `jax.jit` over a 1-D mesh of all devices."""

  def __init__(self, *, model, label_smoothing, learning_rate_fn=None,
               loss_chunk=projected_loss.DEFAULT_CHUNK):
    # Auto axes: with make_mesh's default Explicit axes, nn.Embed's gather fails
    # (ShardingTypeError); Auto lets XLA propagate the batch sharding.
    self.mesh = jax.make_mesh((jax.device_count(),), (BATCH_AXIS,),
                              axis_types=(AxisType.Auto,))
    self._replicated = NamedSharding(self.mesh, P())
    self._rows = NamedSharding(self.mesh, P(BATCH_AXIS))
    self._stacked_rows = NamedSharding(self.mesh, P(None, BATCH_AXIS))
    train, train_many, evaluate = _bind_steps(model, label_smoothing, learning_rate_fn, None,
                                              loss_chunk)
    self._train_step = jax.jit(train, donate_argnums=(0,),
                               out_shardings=self._replicated)
    self._train_steps = jax.jit(train_many, donate_argnums=(0,),
                                out_shardings=self._replicated)
    self._eval_step = jax.jit(evaluate, out_shardings=self._replicated)
    self._jit_fns = {}
    self._serialize = _serialize_collectives()

  def put_state(self, host_state):
    """Unreplicated state -> replicated (`P()`) global arrays."""
    return jax.tree_util.tree_map(
        lambda x: _put_global(x, self._replicated), host_state)

  def get_state(self, state):
    """Device state -> one unreplicated copy (for checkpoints and evaluation)."""
    return jax.tree_util.tree_map(lambda x: x.addressable_shards[0].data, state)

  def put_batch(self, batch):
    """This process's rows `[local_rows, ...]` -> the global batch, split by rows."""
    _check_rows(batch, jax.local_device_count())
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(self._rows, np.asarray(x)),
        batch)

  def put_batches(self, batches):
    """K host batches of one shape -> global `[K, rows, ...]` arrays, split by rows."""
    for batch in batches:
      _check_rows(batch, jax.local_device_count())
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(self._stacked_rows, x),
        stack_batches(batches))

  def train_step(self, state, batch):
    """(state, batch) -> (new state, metrics); `state` is donated."""
    return _finish(self._train_step(state, batch), self._serialize)

  def train_steps(self, state, batches):
    """(state, `put_batches` output) -> (state after K steps, metrics `[K]` per key)."""
    return _finish(self._train_steps(state, batches), self._serialize)

  def eval_step(self, params, batch):
    """Metric sums; `params` is `state.params` of a device state."""
    return _finish(self._eval_step(params, batch), self._serialize)

  def run_replicated(self, fn, replicated, batch):
    """`fn(replicated, batch)` on the global batch; see `PmapRunner.run_replicated`."""
    if fn not in self._jit_fns:
      self._jit_fns[fn] = jax.jit(fn, out_shardings=self._rows)
    out = self._jit_fns[fn](replicated, batch)
    return jax.tree_util.tree_map(_local_rows, out)


RUNNERS = {'pmap': PmapRunner, 'jit': JitRunner}


def make_runner(parallelism, *, model, label_smoothing, learning_rate_fn=None,
                loss_chunk=projected_loss.DEFAULT_CHUNK):
  """The runner named by `train.parallelism` ('pmap' or 'jit'); `loss_chunk` as in
  `steps.train_step`."""
  if parallelism not in RUNNERS:
    raise UserError(f'unknown train.parallelism {parallelism!r}: '
                    f'choose one of {sorted(RUNNERS)}')
  return RUNNERS[parallelism](model=model, label_smoothing=label_smoothing,
                              learning_rate_fn=learning_rate_fn, loss_chunk=loss_chunk)
