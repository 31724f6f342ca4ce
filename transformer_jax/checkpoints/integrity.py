"""What a checkpoint step records besides its arrays' checksums (checksums.py), and the checks
that refuse a step whose surroundings were changed after it was written.

Every step's meta item holds, next to the caller's meta and the array checksums:
  step          the step the checkpoint was saved at, which must be the folder's name: a
                renamed folder (`mv checkpoints/4 checkpoints/6`) is damage, like a truncated
                file;
  data_sha256   a SHA-256 of the data iterator's state (the `data` item), so an edited data
                position is damage too, not a silent resume on other batches;
  seal          a SHA-256 of the meta item itself (canonical JSON without the seal), so an
                edit of the recorded step, data digest or model config is caught.
The caller's meta carries the resolved model config (`model_config`, from the trainer);
`check_model_config` compares it with the config a command is about to build the model from,
so an edited config.json (or a flag) that changes the model is refused with the field named.
Settings that do not change what the params compute (`EVAL_FREE`: dtype, attention_impl) may
differ. Steps written before these records existed are read without these checks.
"""
import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Optional

from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints.diagnosis import DamagedStepError

STEP, DATA_SHA, SEAL = 'step', 'data_sha256', 'seal'
MODEL_CONFIG = 'model_config'      # a key of the caller's meta
EVAL_FREE = ('dtype', 'attention_impl')


def _digest(value: Any) -> str:
  return hashlib.sha256(json.dumps(value, sort_keys=True).encode('utf-8')).hexdigest()


def sealed(stored: Dict[str, Any], step: int, data_state: Any) -> Dict[str, Any]:
  """`stored` (the meta item: caller's meta and checksums) with the step, the data state's
  digest and the seal added."""
  out = dict(stored, **{STEP: int(step), DATA_SHA: _digest(data_state)})
  out[SEAL] = _digest(out)
  return out


def verify(step: int, stored: Any, data_state: Any = None) -> None:
  """Raises DamagedStepError when the meta item of folder `step` was changed, names another
  step, or does not match `data_state` (when read). (The state's own counter is not compared:
  it counts optimizer updates, which differ from the step with gradient accumulation.)"""
  if not isinstance(stored, dict) or SEAL not in stored:
    return                                         # written before these records existed
  unsealed = {k: v for k, v in stored.items() if k != SEAL}
  if _digest(unsealed) != stored[SEAL]:
    raise DamagedStepError('its meta item was changed after it was written')
  if stored.get(STEP) != step:
    raise DamagedStepError(f'the folder is named {step} but it was saved as step '
                           f'{stored.get(STEP)} (a renamed step folder)')
  if data_state is not None and _digest(data_state) != stored.get(DATA_SHA):
    raise DamagedStepError('its data position differs from the one saved with it')


def model_config_dict(model_config) -> Dict[str, Any]:
  """The resolved model config (a dataclass) as the JSON dict a checkpoint records."""
  fields = dataclasses.asdict(model_config) if dataclasses.is_dataclass(model_config) \
      else dict(model_config)
  return json.loads(json.dumps(fields, default=str))


def _recorded_model_configs(workdir: str):
  """(step, recorded model config) of each step folder whose meta item records one."""
  folder = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(folder):
    return
  for step in sorted(int(n) for n in os.listdir(folder) if n.isdigit()):
    path = os.path.join(folder, str(step), 'meta', 'metadata')
    if not os.path.isfile(path):
      continue
    try:
      with open(path, encoding='utf-8') as f:
        stored = json.load(f)
    except (OSError, ValueError):
      continue                    # a damaged step: restoring it reports that
    recorded = (stored.get('meta') or {}).get(MODEL_CONFIG) if isinstance(stored, dict) else None
    if isinstance(recorded, dict):
      yield step, recorded


def check_model_config(workdir: str, model_config) -> None:
  """Refuses to build a model that differs from the one the run's checkpoints were trained
  as (config.json edited, or a flag that changes the model)."""
  current = model_config_dict(model_config)
  for step, recorded in _recorded_model_configs(workdir):
    differing = sorted(k for k in set(recorded) | set(current)
                       if k not in EVAL_FREE and recorded.get(k) != current.get(k))
    if differing:
      key = differing[0]
      raise UserError(f'{workdir}: checkpoint step {step} was trained with model.{key}='
                      f'{recorded.get(key)!r} but the config gives {current.get(key)!r} (was '
                      'config.json edited?): restore the run\'s config.json or drop the '
                      'override; a different model needs a new --workdir')
    return                         # every step of a run records the same model


def recorded_model_config(workdir: str) -> Optional[Dict[str, Any]]:
  """The model config the newest recording step holds, or None."""
  found = list(_recorded_model_configs(workdir))
  return found[-1][1] if found else None
