"""Checkpoints: the unreplicated training state, the data iterator's state and run metadata.

Each checkpoint step is one orbax step directory `<workdir>/checkpoints/<step>/` holding three items
written together (orbax renames a tmp dir once all are on disk, so a save is atomic):
  state  the host TrainState (params, opt_state, step, rng), via StandardSave;
  data   the data iterator's state, a JSON dict, so a resumed run sees the same batches;
  meta   a JSON dict {'meta': the caller's dict or None, 'state_checksums': {path: crc32}, and
         the step, a digest of `data` and a seal over the item (checkpoint_integrity.py)}.

Nothing that was saved is lost or trusted blindly:
- Saves never overwrite a step, and `max_to_keep` below 1 (which would rotate every step away) is
  refused. An async write that fails (a full disk) surfaces at the next `save`, `wait` or `close`
  as a one-line UserError naming the step and the reason; the earlier steps stay.
- Every save records a CRC-32 of each array (checksums.py), and every restore compares them, so a
  byte changed on disk (bit rot) counts as damage just like a truncated or missing file. Steps
  saved before checksums existed restore without the check.
- Restore checks the saved shapes against the state the config builds and fails with a UserError
  that names the first differing parameter, instead of orbax's long pytree errors.
- A damaged newest step (a crash mid-copy, bit rot) is skipped with a warning and the previous
  step restored; a writable Checkpointer moves the skipped steps aside (damage.py). Nothing is
  ever deleted.

Keeping the best step (`train.keep_best`) and the metric ranking are retention.py's; moving
damaged steps aside and the errors for them, damage.py's.

Checkpoint averaging for evaluation (the paper's §6.1) lives in averaging.py; it reads through
`Checkpointer.read_params`.
"""

import os
from typing import Any, Optional, Sequence

from absl import logging
import jax
import orbax.checkpoint as ocp

from transformer_jax.base import checksums
from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import damage
from transformer_jax.checkpoints import diagnosis as checkpoint_errors
from transformer_jax.checkpoints import integrity as checkpoint_integrity
from transformer_jax.checkpoints import retention
from transformer_jax.checkpoints import trees as checkpoint_trees

CHECKPOINT_SUBDIR = 'checkpoints'
DAMAGED_SUBDIR = damage.DAMAGED_SUBDIR      # <workdir>/checkpoints/damaged/<step>
_STATE, _DATA, _META = 'state', 'data', 'meta'
_USER_META, _CHECKSUMS = 'meta', 'state_checksums'     # the keys of the meta item
_FIX_MISMATCH = 'use the same config (vocab_size, model sizes) or a new --workdir'

PyTree = Any
# Re-exported: callers restore with these.
abstract_state = checkpoint_trees.abstract_state
DamagedStepError = checkpoint_errors.DamagedStepError


def _split_meta(item: Any) -> tuple[Optional[dict], Optional[dict]]:
  """(caller's meta, state checksums) from a meta item; steps saved before checksums have none."""
  if isinstance(item, dict) and _CHECKSUMS in item:
    return item.get(_USER_META), item[_CHECKSUMS]
  return item, None


class Checkpointer:
  """Saves and restores the host TrainState with the data iterator state and run metadata.

  Usage in a trainer (signal handlers only set a flag; the loop saves, then `close()` waits):
    ckpt = Checkpointer(workdir, max_to_keep=config.train.keep_checkpoints)
    if ckpt.latest_step() is not None:
      state, data_state, meta, step = ckpt.restore(abstract_state(state))
    ...
    ckpt.save(step, host_state, data_iter.get_state(), meta={'vocab_size': ...})
    ...
    ckpt.close()     # waits for an async write in flight (also when the loop fails: use `with`)
  """

  def __init__(self, workdir: str, *, max_to_keep: Optional[int] = 5, async_save: bool = True,
               read_only: bool = False, best_metric: str = '', best_mode: str = 'max'):
    """Opens (and unless read_only, creates) `<workdir>/checkpoints`.

    Args:
      workdir: the run's directory.
      max_to_keep: how many of the newest steps orbax keeps (None keeps all; below 1 is refused,
        as it would delete every step). When checkpoints are averaged for evaluation it must be at
        least the number averaged; the caller checks that.
      async_save: write in a background thread, so `save()` returns after copying to host.
      read_only: open an existing directory for reading only (evaluation, averaging): damaged
        steps are skipped but not moved aside.
      best_metric: also keep the step whose `save(metrics=...)` had the best value of this
        metric ('' = only the newest `max_to_keep`); see the module docstring.
      best_mode: 'max' (higher `best_metric` is better) or 'min' (lower is better).

    Raises:
      UserError: max_to_keep below 1, or read_only and there is no checkpoint directory.
    """
    if max_to_keep is not None and max_to_keep < 1 and not read_only:
      raise UserError(f'train.keep_checkpoints={max_to_keep} would delete every checkpoint: set '
                      '--experiment.train.keep_checkpoints to 1 or more')
    self.directory = os.path.join(workdir, CHECKPOINT_SUBDIR)
    self.read_only = read_only
    if os.path.lexists(self.directory) and not os.path.isdir(self.directory):
      raise UserError(f'{self.directory} is not a folder: move it aside (a run keeps its '
                      'checkpoints there), or give a new --workdir')
    if read_only and not os.path.isdir(self.directory):
      raise UserError(f'no checkpoint directory at {self.directory}: check --workdir')
    if best_mode not in ('max', 'min'):
      raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
    self._best_metric = '' if read_only else best_metric
    retention_options = retention.options(None if read_only else max_to_keep, self._best_metric,
                                          best_mode)
    # read_only wants max_to_keep=None and save_interval_steps=0, else orbax warns it changed them.
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save and not read_only, read_only=read_only,
        create=not read_only, save_interval_steps=0 if read_only else 1, **retention_options)
    # Naming the handlers lets a fresh manager read metadata without being given restore args.
    handlers = {_STATE: ocp.StandardCheckpointHandler(), _DATA: ocp.JsonCheckpointHandler(),
                _META: ocp.JsonCheckpointHandler()}
    self._manager = retention.TolerantManager(
        os.path.abspath(self.directory), options=options, item_handlers=handlers)
    self._params_reader = None
    self._async = async_save and not read_only
    self._unconfirmed_step = None    # an async save not yet known to be on disk
    self._write_failed = False       # a failed write was reported (orbax may raise it again)

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def save(self, step: int, state: PyTree, data_state: dict,
           meta: Optional[dict] = None, metrics: Optional[dict] = None) -> bool:
    """Starts writing one checkpoint step (in the background if async); never overwrites one.

    Args:
      step: the training step the state has reached.
      state: the unreplicated host TrainState.
      data_state: the data iterator's state, a JSON-serialisable dict.
      meta: an optional small JSON-serialisable dict (config, vocabulary size, ...).
      metrics: the evaluation metrics of this very step, or None; with `best_metric` set, its
        value (if finite) is recorded with the step and ranks it for keeping.

    Returns:
      Whether a save was started. False (with a warning) when the directory already holds this or
      a later step: it is left untouched.

    Raises:
      UserError: this save, or the previous async one, could not be written (e.g. a full disk).
    """
    checkpoint_trees.check_host_state(state)
    if jax.process_count() > 1:
      # With several processes orbax refuses a host-local jax.Array (the unreplicated copy on
      # one local device) but takes numpy values, which the primary process alone writes.
      state = jax.device_get(state)
    checkpoint_trees.check_json('data_state', data_state)
    checkpoint_trees.check_json('meta', meta)
    self.wait()      # a failed previous write is reported now, before anything else is started
    latest = self._manager.latest_step()
    if latest is not None and latest >= step:
      logging.warning('not saving checkpoint step %d: %s already has step %d, left untouched',
                      step, self.directory, latest)
      return False
    stored_meta = checkpoint_integrity.sealed(
        {_USER_META: meta, _CHECKSUMS: checksums.tree_checksums(state)}, step, data_state)
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state),
                                 _DATA: ocp.args.JsonSave(data_state),
                                 _META: ocp.args.JsonSave(stored_meta)})
    extra = {}
    if self._best_metric:
      extra['metrics'] = retention.recorded_metrics(self._best_metric, metrics)
    try:
      started = self._manager.save(step, args=args, **extra)
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless a storage error)
      if not checkpoint_errors.is_storage_error(e):
        raise
      raise self._write_error(step, e) from e
    if started and self._async:
      self._unconfirmed_step = step
    return started

  def _write_error(self, step: int, error: BaseException) -> UserError:
    """The one-line error for a step that did not reach the disk; earlier steps are kept."""
    self._write_failed = True
    self._manager.reload()
    kept = [s for s in self.all_steps() if s < step]
    kept_text = f'step {kept[-1]} is the newest kept' if kept else 'no earlier step exists'
    reason = checkpoint_errors.write_reason(error)
    return UserError(f'checkpoint step {step} could not be written to {self.directory} '
                     f'({reason}; {kept_text}): free disk space or fix the cause, then resume')

  def wait(self) -> None:
    """Blocks until an async save in flight is on disk (before exit, before a restore).

    Raises:
      UserError: that save failed (e.g. the disk is full), naming its step and the reason.
    """
    step, self._unconfirmed_step = self._unconfirmed_step, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (orbax has logged the traceback)
      if step is not None:
        raise self._write_error(step, e) from e
      self._unless_reported(e)

  def _unless_reported(self, error: Exception) -> None:
    """Re-raises `error` unless it is orbax raising a write failure we already reported."""
    if not (self._write_failed and checkpoint_errors.is_storage_error(error)):
      raise error
    logging.warning('checkpoint write failure raised again by orbax (already reported): %s',
                    checkpoint_errors.short(error))

  def close(self) -> None:
    """Waits for any save in flight, then releases orbax's threads. Call at the end.

    Raises:
      UserError: the save in flight failed; orbax's threads are released all the same.
    """
    try:
      self.wait()
    finally:
      self._close_managers()

  def _close_managers(self) -> None:
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except  (re-raised unless reported)
      self._unless_reported(e)
    if self._params_reader is not None:
      self._params_reader.close()
      self._params_reader = None

  def latest_step(self) -> Optional[int]:
    """The newest finished step (possibly damaged; `restore` handles that), or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """All finished steps, oldest first; interrupted saves (tmp dirs) are not listed."""
    return sorted(self._manager.all_steps())

  def best_step(self, metric: str, mode: str) -> Optional[tuple[int, float]]:
    """(step, value) of the saved step whose recorded `metric` is best, or None if none has it.

    mode is 'max' (higher is better) or 'min' (lower is better); a tie goes to the newer step,
    as in orbax's ranking. Only steps saved with `best_metric` set record a metric.
    """
    self.wait()
    self._manager.reload()
    return retention.best_step(self._manager, self.all_steps(), metric, mode)

  def last_k_steps(self, k: int) -> list[int]:
    """The newest `k` steps, oldest first (fewer if fewer exist), e.g. for `average_params`."""
    if k < 1:
      raise UserError(f'cannot take the last {k} checkpoints: ask for at least 1')
    return self.all_steps()[-k:]

  def _saved_state_tree(self, step: int) -> dict:
    """The saved state's metadata as a nested dict of array metadata (shapes, dtypes).

    Raises:
      DamagedStepError: the step's metadata is damaged or missing.
    """
    with checkpoint_errors.reading_step():
      item = self._manager.item_metadata(step)[_STATE]
    tree = getattr(item, 'tree', item)
    if not isinstance(tree, dict):   # a deleted _METADATA reads back as None
      raise checkpoint_errors.DamagedStepError(f'no readable {_STATE} metadata')
    return tree

  def _check_fit(self, step: int, saved: PyTree, template: PyTree, prefix: str = '') -> None:
    """Raises UserError naming the first path that is missing, extra or of another shape."""
    def named(tree):
      return {prefix + name: shape for name, shape in checkpoint_trees.flat_shapes(tree).items()}
    mismatch = checkpoint_trees.first_mismatch(named(saved), named(template))
    if mismatch:
      raise UserError(f'checkpoint step {step} in {self.directory} has {mismatch}: {_FIX_MISMATCH}')

  def _restore_step(self, step: int, abstract: PyTree) -> tuple[PyTree, dict, Optional[dict]]:
    """Restores one step after the shape check, then verifies its checksums.

    Raises:
      DamagedStepError: the step is damaged (unreadable, or its bytes changed).
    """
    self._check_fit(step, self._saved_state_tree(step), abstract)
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardRestore(abstract),
                                 _DATA: ocp.args.JsonRestore(), _META: ocp.args.JsonRestore()})
    with checkpoint_errors.reading_step():
      restored = self._manager.restore(step, args=args)
    meta, sums = _split_meta(restored[_META])
    checkpoint_errors.verify(restored[_STATE], sums)
    checkpoint_integrity.verify(step, restored[_META], restored[_DATA])
    return restored[_STATE], restored[_DATA], meta

  def restore(self, template: PyTree, step: Optional[int] = None
             ) -> tuple[PyTree, dict, Optional[dict], int]:
    """Restores a step; by default the newest readable one.

    Args:
      template: the state the config builds, concrete or abstract (see `abstract_state`); it gives
        the structure (a TrainState comes back as a TrainState), dtypes and devices.
      step: the step to restore; None means the newest, falling back past damaged steps with a
        warning each (and, unless read-only, moving them to checkpoints/damaged/ once a readable
        step is found). An explicit step that is missing or damaged is an error.

    Returns:
      (state, data_state, meta, step) with meta None if none was saved.

    Raises:
      UserError: no (readable) checkpoint, or the checkpoint's shapes do not fit the template.
    """
    self.wait()
    self._manager.reload()   # another process (the trainer) may have saved since we opened
    abstract = checkpoint_trees.abstract_state(template)
    steps = self.all_steps()
    if step is not None:
      return self._restore_explicit(step, abstract, steps)
    if not steps:
      raise UserError(f'no checkpoint in {self.directory}: check --workdir, or start without one')
    damaged = []
    for candidate in reversed(steps):
      try:
        restored = self._restore_step(candidate, abstract)
      except checkpoint_errors.DamagedStepError as e:
        logging.warning('checkpoint step %d in %s is damaged (%s); trying the previous step',
                        candidate, self.directory, e)
        damaged.append(candidate)
        continue
      self._set_aside(damaged)
      return (*restored, candidate)
    raise UserError(f'no readable checkpoint in {self.directory}: steps {steps} are all damaged '
                    '(see the warnings above; all left in place); restore a backup or use a new '
                    '--workdir')

  def _set_aside(self, steps: Sequence[int]) -> None:
    """Moves damaged steps that a restore skipped out of orbax's sight (damage.set_aside)."""
    if damage.set_aside(self.directory, steps, self.read_only):
      self._manager.reload()

  def damaged_step_error(self, step: int, reason: Exception) -> UserError:
    """The one-line error for an explicitly requested step that is damaged (damage.step_error)."""
    return damage.step_error(self.directory, self.all_steps(), step, reason)

  def _restore_explicit(self, step: int, abstract: PyTree, steps: Sequence[int]):
    """Restores exactly `step`, with a UserError if it is missing or damaged."""
    if step not in steps:
      raise UserError(f'no checkpoint step {step} in {self.directory}: '
                      f'pick one of the saved steps {list(steps)}')
    try:
      return (*self._restore_step(step, abstract), step)
    except checkpoint_errors.DamagedStepError as e:
      raise self.damaged_step_error(step, e) from e

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
    self.require_step(step)
    try:
      return self.read_params(template_params, step)
    except checkpoint_errors.DamagedStepError as e:
      raise self.damaged_step_error(step, e) from e

  def require_step(self, step: int) -> None:
    """Raises UserError unless `step` is a finished step on disk (seeing other processes' saves)."""
    self.wait()
    self._manager.reload()
    if step not in self.all_steps():
      raise UserError(f'no checkpoint step {step} in {self.directory}: '
                      f'pick one of the saved steps {self.all_steps()}')

  def read_params(self, template_params: PyTree, step: int) -> PyTree:
    """The params of one saved step (see `require_step`), shape-checked and checksum-verified.

    Args:
      template_params: the params the config builds, concrete or abstract; floats may ask for a
        wider dtype than saved (averaging reads float32), which the checksums allow for.
      step: a saved step.

    Raises:
      DamagedStepError: the step is damaged; `restore_params` turns it into a UserError,
        averaging.average_newest into a skip.
      UserError: its params do not fit the template.
    """
    abstract = {'params': checkpoint_trees.abstract_state(template_params)}
    saved = self._saved_state_tree(step)
    if 'params' not in saved:
      raise checkpoint_errors.DamagedStepError('no params in the saved state')
    self._check_fit(step, saved['params'], abstract['params'], prefix='params/')
    args = ocp.args.PyTreeRestore(
        item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
        partial_restore=True)
    with checkpoint_errors.reading_step():
      restored = self._reader().restore(step, args=ocp.args.Composite(
          **{_STATE: args, _META: ocp.args.JsonRestore()}))
    params = restored[_STATE]['params']
    checkpoint_errors.verify(params, _split_meta(restored[_META])[1], prefix='params/')
    checkpoint_integrity.verify(step, restored[_META])
    return params

  def _reader(self) -> ocp.CheckpointManager:
    """A read-only manager whose PyTree handler can restore a part of the state.

    StandardCheckpointHandler (used for saving) has no partial restore; the on-disk format is the
    PyTree handler's, so a second manager reads the same steps.
    """
    if self._params_reader is None:
      options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
      self._params_reader = retention.TolerantManager(
          os.path.abspath(self.directory), options=options,
          item_handlers={_STATE: ocp.PyTreeCheckpointHandler(),
                         _META: ocp.JsonCheckpointHandler()})
    self._params_reader.reload()   # see steps saved since it was opened
    return self._params_reader
