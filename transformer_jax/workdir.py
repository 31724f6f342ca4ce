"""What a run keeps at the top of its workdir: the resolved config, and the guard that
stops a workdir from being trained over with a different model, data or optimizer.

Settings that may change on resume (more steps, other eval/decode/logging settings,
pmap vs jit) are free; everything that shapes the training trajectory is not.
"""
import json
import os
from typing import Any, Dict, List

from transformer_jax.errors import UserError

CONFIG_FILE = 'config.json'
# Keys (section or section.field) that must match for a run to resume in a workdir.
PINNED = ('model', 'data', 'optim', 'train.seed', 'train.label_smoothing')


def _flatten(tree: Dict[str, Any], prefix: str = '') -> Dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(_flatten(value, name + '.'))
    else:
      flat[name] = value
  return flat


def as_json(config) -> Dict[str, Any]:
  """ConfigDict -> plain JSON types (tuples become lists), as it is stored."""
  return json.loads(json.dumps(config.to_dict() if hasattr(config, 'to_dict') else config))


# Keys added after runs were recorded, with the value a run without them had.
_IMPLIED = {'model.family': 'transformer', 'optim.optimizer': 'adam'}


def pinned_differences(saved: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
  """'key: saved -> current' for every pinned key that differs."""
  old, new = _flatten(saved), _flatten(current)
  for key, value in _IMPLIED.items():
    old.setdefault(key, value)
    new.setdefault(key, value)
  pinned = lambda k: any(k == p or k.startswith(p + '.') for p in PINNED)
  keys = sorted(k for k in set(old) | set(new) if pinned(k) and old.get(k) != new.get(k))
  return [f'{k}: {old.get(k)!r} -> {new.get(k)!r}' for k in keys]


def load_config(workdir: str) -> Dict[str, Any]:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise UserError(f'no {CONFIG_FILE} in {workdir}: train there first '
                    '(python launch.py --experiment=... --workdir=...) or point --workdir at a run')
  with open(path) as f:
    return json.load(f)


def check_config(workdir: str, config) -> None:
  """Refuses a workdir whose run used other pinned settings, or that this launcher did not make."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    differences = pinned_differences(load_config(workdir), as_json(config))
    if differences:
      shown = '; '.join(differences[:4]) + (' ...' if len(differences) > 4 else '')
      raise UserError(f'{workdir} holds a run with another config ({shown}): resume it with the '
                      'same settings, or give a new --workdir')
    return
  checkpoints = os.path.join(workdir, 'checkpoints')
  if os.path.isdir(checkpoints) and os.listdir(checkpoints):
    raise UserError(f'{workdir} has checkpoints but no {CONFIG_FILE}: it was not made by this '
                    'launcher; give a new --workdir')


def record_config(workdir: str, config) -> None:
  """Writes config.json once, when the run starts (a resumed run keeps the first one)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(as_json(config), f, indent=2, sort_keys=True)
  os.replace(path + '.tmp', path)
