"""Checkpoints: the unreplicated training state, the data iterator's state and run metadata.

Each checkpoint step is one orbax step directory `<workdir>/checkpoints/<step>/` holding three items
written together (orbax renames a tmp dir once all are on disk, so a save is atomic):
  state  the host TrainState (params, opt_state, step, rng), via StandardSave;
  data   the data iterator's state, a JSON dict, so a resumed run sees the same batches;
  meta   an optional JSON dict (resolved config, vocabulary size, ...).

Restore checks the saved shapes against the state the config builds and fails with a UserError that
names the first differing parameter, instead of orbax's long pytree errors. A damaged newest step
(a crash mid-copy, a full disk) is skipped with a warning and the previous step restored; nothing on
disk is ever deleted or rewritten by a restore.

`average_params` averages the parameters of several steps, as the paper does with the last 5
checkpoints (20 for the big model) before evaluating (Vaswani et al. 2017, §6.1).
"""

import json
import os
from typing import Any, Iterable, Optional, Sequence, Union

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from transformer_jax.errors import UserError

CHECKPOINT_SUBDIR = 'checkpoints'
_STATE, _DATA, _META = 'state', 'data', 'meta'
# What orbax/tensorstore raise on a damaged step dir (TOOLCHAIN.md §3): truncated files give
# ValueError (DATA_LOSS), zero-length files JSONDecodeError (a ValueError), an emptied dir KeyError,
# and a vanished dir FileNotFoundError.
_UNREADABLE_ERRORS = (ValueError, KeyError, OSError)
_FIX_MISMATCH = 'use the same config (vocab_size, model sizes) or a new --workdir'

PyTree = Any


class _UnreadableCheckpointError(Exception):
  """A step directory exists but cannot be read back; the message says why."""


def abstract_state(state: PyTree) -> PyTree:
  """Replaces every array of `state` by a ShapeDtypeStruct, for restoring without a real copy.

  Works on concrete states and on the output of `jax.eval_shape` (whose structs carry no sharding).
  Leaves without a sharding get the first local device, so orbax restores jax arrays there rather
  than on whatever device the checkpoint was written from.

  Args:
    state: a pytree (e.g. a TrainState) of arrays, ShapeDtypeStructs and Python scalars.

  Returns:
    The same pytree with ShapeDtypeStructs in place of arrays; Python scalars are kept.
  """
  default_sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def to_abstract(leaf):
    if not isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct)):
      return leaf
    sharding = getattr(leaf, 'sharding', None) or default_sharding
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

  return jax.tree_util.tree_map(to_abstract, state)


def _path_name(path) -> str:
  """'params/decoder/embed/embedding' for a jax key path (dict keys, attributes, indices)."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def _stored_shape(leaf) -> tuple[int, ...]:
  """The shape a leaf has on disk; typed PRNG keys are stored as their uint32 key data."""
  shape = tuple(leaf.shape) if hasattr(leaf, 'shape') else np.shape(leaf)   # Python scalars
  dtype = getattr(leaf, 'dtype', None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    shape = tuple(jax.eval_shape(jax.random.key_data, leaf).shape)
  return shape


def _flat_shapes(tree: PyTree) -> dict[str, tuple[int, ...]]:
  """Maps each leaf's path name to its stored shape, in flattening order."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_name(path): _stored_shape(leaf) for path, leaf in flat}


def _first_mismatch(saved: dict, expected: dict) -> Optional[str]:
  """Describes the first path whose presence or shape differs, or returns None if all match."""
  for name, shape in expected.items():
    if name not in saved:
      return f'no {name} but the config builds one of shape {shape}'
    if saved[name] != shape:
      return f'{name} of shape {saved[name]} but the config builds {shape}'
  for name, shape in saved.items():
    if name not in expected:
      return f'{name} of shape {shape} that the config does not build'
  return None


def _check_host_state(state: PyTree) -> None:
  """Refuses per-device (pmapped) arrays: checkpoints hold the unreplicated host state only."""
  flat, _ = jax.tree_util.tree_flatten_with_path(state)
  for path, leaf in flat:
    if (isinstance(leaf, jax.Array) and len(leaf.sharding.device_set) > 1
        and not leaf.sharding.is_fully_replicated):
      raise ValueError(
          f'save() got {_path_name(path)} split over {len(leaf.sharding.device_set)} devices; '
          'pass the unreplicated host state (unreplicate it in parallel.py first)')


def _check_json(name: str, value: Any) -> None:
  """Fails now rather than in orbax's background thread when a dict is not JSON-serialisable."""
  try:
    json.dumps(value)
  except TypeError as e:
    raise TypeError(f'save() got a {name} that is not JSON-serialisable: {e}') from e


def _short(error: Exception) -> str:
  """The first line of an error, for one-line log messages (tensorstore errors run long)."""
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0][:300] if text else ""}'


class Checkpointer:
  """Saves and restores the host TrainState with the data iterator state and run metadata.

  Usage in a trainer (signal handlers only set a flag; the loop saves, then `close()` waits):
    ckpt = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    if ckpt.latest_step() is not None:
      state, data_state, meta, step = ckpt.restore(abstract_state(state))
    ...
    ckpt.save(step, host_state, data_iter.get_state(), meta={'vocab_size': ...})
    ...
    ckpt.close()     # waits for an async write in flight
  """

  def __init__(self, workdir: str, *, max_to_keep: Optional[int] = 5, async_save: bool = True,
               read_only: bool = False):
    """Opens (and unless read_only, creates) `<workdir>/checkpoints`.

    Args:
      workdir: the run's directory.
      max_to_keep: how many of the newest steps orbax keeps (None keeps all). When checkpoints are
        averaged for evaluation it must be at least the number averaged; the caller checks that.
      async_save: write in a background thread, so `save()` returns after copying to host.
      read_only: open an existing directory for reading only (evaluation, averaging).
    """
    self.directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f'no checkpoint directory at {self.directory}: check --workdir')
    # read_only wants max_to_keep=None and save_interval_steps=0, else orbax warns it changed them.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else max_to_keep,
        enable_async_checkpointing=async_save and not read_only, read_only=read_only,
        create=not read_only, save_interval_steps=0 if read_only else 1)
    # Naming the handlers lets a fresh manager read metadata without being given restore args.
    handlers = {_STATE: ocp.StandardCheckpointHandler(), _DATA: ocp.JsonCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler()}
    self._manager = ocp.CheckpointManager(
        os.path.abspath(self.directory), options=options, item_handlers=handlers)
    self._params_reader = None

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def save(self, step: int, state: PyTree, data_state: dict,
           meta: Optional[dict] = None) -> bool:
    """Starts writing one checkpoint step (in the background if async); never overwrites one.

    Args:
      step: the training step the state has reached.
      state: the unreplicated host TrainState.
      data_state: the data iterator's state, a JSON-serialisable dict.
      meta: an optional small JSON-serialisable dict (config, vocabulary size, ...).

    Returns:
      Whether a save was started. False (with a warning) when the directory already holds this or
      a later step, e.g. a damaged step that restore skipped: it is left for inspection.
    """
    _check_host_state(state)
    _check_json('data_state', data_state)
    _check_json('meta', meta)
    latest = self._manager.latest_step()
    if latest is not None and latest >= step:
      logging.warning('not saving checkpoint step %d: %s already has step %d, left untouched',
                      step, self.directory, latest)
      return False
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                                 _DATA: ocp.args.JsonSave(data_state),
                                 _META: ocp.args.JsonSave(meta)})
    return self._manager.save(step, args=args)

  def wait(self) -> None:
    """Blocks until an async save in flight is on disk (before exit, before a restore)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for any save in flight, then releases orbax's threads. Call at the end."""
    self._manager.close()
    if self._params_reader is not None:
      self._params_reader.close()
      self._params_reader = None

  def latest_step(self) -> Optional[int]:
    """The newest finished step (possibly damaged; `restore` handles that), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All finished steps, oldest first; interrupted saves (tmp dirs) are not listed."""
    return sorted(self._manager.all_steps())

  def last_k_steps(self, k: int) -> list[int]:
    """The newest `k` steps, oldest first (fewer if fewer exist), e.g. for `average_params`."""
    if k < 1:
      raise UserError(f'cannot take the last {k} checkpoints: ask for at least 1')
    return self.all_steps()[-k:]

  def _saved_state_tree(self, step: int) -> dict:
    """The saved state's metadata as a nested dict of array metadata (shapes, dtypes).

    Raises:
      _UnreadableCheckpointError: the step's metadata is damaged or missing.
    """
    try:
      item = self._manager.item_metadata(step)[_STATE]
    except _UNREADABLE_ERRORS as e:
      raise _UnreadableCheckpointError(_short(e)) from e
    tree = getattr(item, 'tree', item)
    if not isinstance(tree, dict):   # a deleted _METADATA reads back as None
      raise _UnreadableCheckpointError(f'no readable {_STATE} metadata')
    return tree

  def _check_fit(self, step: int, saved: PyTree, template: PyTree, prefix: str = '') -> None:
    """Raises UserError naming the first path that is missing, extra or of another shape."""
    def named(tree):
      return {prefix + name: shape for name, shape in _flat_shapes(tree).items()}
    mismatch = _first_mismatch(named(saved), named(template))
    if mismatch:
      raise UserError(f'checkpoint step {step} in {self.directory} has {mismatch}: {_FIX_MISMATCH}')

  def _restore_step(self, step: int, abstract: PyTree) -> tuple[PyTree, dict, Optional[dict]]:
    """Restores one step after the shape check; damage raises _UnreadableCheckpointError."""
    self._check_fit(step, self._saved_state_tree(step), abstract)
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract),
                                 _DATA: ocp.args.JsonRestore(), _META: ocp.args.JsonRestore()})
    try:
      restored = self._manager.restore(step, args=args)
    except _UNREADABLE_ERRORS as e:
      raise _UnreadableCheckpointError(_short(e)) from e
    return restored[_STATE], restored[_DATA], restored[_META]

  def restore(self, template: PyTree, step: Optional[int] = None
             ) -> tuple[PyTree, dict, Optional[dict], int]:
    """Restores a step; by default the newest readable one.

    Args:
      template: the state the config builds, concrete or abstract (see `abstract_state`); it gives
        the structure (a TrainState comes back as a TrainState), dtypes and devices.
      step: the step to restore; None means the newest, falling back past damaged steps with a
        warning each. An explicit step that is missing or damaged is an error.

    Returns:
      (state, data_state, meta, step) with meta None if none was saved.

    Raises:
      UserError: no (readable) checkpoint, or the checkpoint's shapes do not fit the template.
    """
    self.wait()
    self._manager.reload()   # another process (the trainer) may have saved since we opened
    abstract = abstract_state(template)
    steps = self.all_steps()
    if step is not None:
      return self._restore_explicit(step, abstract, steps)
    if not steps:
      raise UserError(f'no checkpoint in {self.directory}: check --workdir, or start without one')
    for candidate in reversed(steps):
      try:
        return (*self._restore_step(candidate, abstract), candidate)
      except _UnreadableCheckpointError as e:
        logging.warning('checkpoint step %d in %s is unreadable (%s); trying the previous step '
                        '(the damaged one is left on disk)', candidate, self.directory, e)
    raise UserError(f'no readable checkpoint in {self.directory}: steps {steps} are all damaged '
                    '(see the warnings above); restore a backup or use a new --workdir')

  def _restore_explicit(self, step: int, abstract: PyTree, steps: Sequence[int]):
    """Restores exactly `step`, with a UserError if it is missing or damaged."""
    if step not in steps:
      raise UserError(f'no checkpoint step {step} in {self.directory}: '
                      f'pick one of the saved steps {list(steps)}')
    try:
      return (*self._restore_step(step, abstract), step)
    except _UnreadableCheckpointError as e:
      raise UserError(f'checkpoint step {step} in {self.directory} is unreadable ({e}): '
                      'pick another step or omit it to use the newest readable one') from e

  def restore_params(self, template_params: PyTree, step: int) -> PyTree:
    """Reads only the params of one step (no optimizer state), e.g. for evaluation.

    Args:
      template_params: the params the config builds, concrete or abstract.
      step: a saved step.

    Returns:
      The params, with the structure, dtypes and devices of `template_params`.

    Raises:
      UserError: the step is missing, damaged, or its params do not fit the template.
    """
    self.wait()
    self._manager.reload()
    if step not in self.all_steps():
      raise UserError(f'no checkpoint step {step} in {self.directory}: '
                      f'pick one of the saved steps {self.all_steps()}')
    abstract = {'params': abstract_state(template_params)}
    try:
      saved = self._saved_state_tree(step)
      if 'params' not in saved:
        raise _UnreadableCheckpointError('no params in the saved state')
      self._check_fit(step, saved['params'], abstract['params'], prefix='params/')
      args = ocp.args.PyTreeRestore(
          item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
          partial_restore=True)
      restored = self._reader().restore(step, args=ocp.args.Composite(**{_STATE: args}))
    except (_UnreadableCheckpointError, *_UNREADABLE_ERRORS) as e:
      raise UserError(f'checkpoint step {step} in {self.directory} is unreadable ({e}): '
                      'average other steps or restore a backup') from e
    return restored[_STATE]['params']

  def _reader(self) -> ocp.CheckpointManager:
    """A read-only manager whose PyTree handler can restore a part of the state.

    StandardCheckpointHandler (used for saving) has no partial restore; the on-disk format is the
    PyTree handler's, so a second manager reads the same steps.
    """
    if self._params_reader is None:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
      self._params_reader = ocp.CheckpointManager(
          os.path.abspath(self.directory), options=options,
          item_handlers={_STATE: ocp.PyTreeCheckpointHandler()})
    self._params_reader.reload()   # see steps saved since it was opened
    return self._params_reader


def average_params(checkpointer_or_dir: Union[Checkpointer, str], steps: Iterable[int],
                   template: PyTree) -> PyTree:
  """The element-wise mean of the params saved at `steps` (Vaswani et al. 2017, §6.1).

  Sums in float32 and casts each mean back to the template leaf's dtype, so bfloat16 params do not
  lose precision in the sum.

  Args:
    checkpointer_or_dir: an open Checkpointer, or a workdir holding `checkpoints/`.
    steps: the steps to average, e.g. `checkpointer.last_k_steps(5)`.
    template: the params the config builds (concrete or abstract), not the whole TrainState.

  Returns:
    Params with the template's structure and dtypes.

  Raises:
    UserError: no steps, or a step is missing, damaged or does not fit the template.
  """
  steps = list(steps)
  if not steps:
    raise UserError('average_params got no checkpoint steps: save checkpoints first or ask for '
                    'fewer to average')
  if isinstance(checkpointer_or_dir, Checkpointer):
    return _average(checkpointer_or_dir, steps, template)
  with Checkpointer(checkpointer_or_dir, read_only=True) as checkpointer:
    return _average(checkpointer, steps, template)


def _average(checkpointer: Checkpointer, steps: Sequence[int], template: PyTree) -> PyTree:
  """Accumulates one step's params at a time, so memory stays at two copies of the params."""
  abstract = abstract_state(template)
  # Read float leaves as float32 whatever the template's dtype, so nothing is rounded before the
  # sum (orbax casts to the requested dtype while reading).
  as_f32 = jax.tree_util.tree_map(
      lambda t: t.update(dtype=jnp.float32) if jnp.issubdtype(t.dtype, jnp.floating) else t,
      abstract)
  total = None
  for step in steps:
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32),
                                    checkpointer.restore_params(as_f32, step))
    total = params if total is None else jax.tree_util.tree_map(np.add, total, params)
  return jax.tree_util.tree_map(
      lambda s, t: jnp.asarray(s / np.float32(len(steps)), dtype=t.dtype), total, abstract)
