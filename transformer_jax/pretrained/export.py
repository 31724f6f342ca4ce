"""--mode=export: a trained run's averaged params, model config, tokenizer and decode settings
in one folder (layout.py) that `transformer_jax.load_pretrained` (loading.py) reads without
orbax, flags or the workdir; `Pretrained.save_pretrained` writes the same folder from a loaded
model. The checksums that load_pretrained verifies (verification.py) are taken here.

An export is written to `.<name>.partial-<pid>-<host>` beside the target and renamed into place;
one that a killed export left (its pid gone on this host) is removed by the next export into that
folder's parent (also the older form `.<name>.partial-<pid>`).
"""
import dataclasses
import datetime
import json
import os
import re
import shutil
import socket
import tempfile
from typing import Any, Dict, List, Optional

import jax
import numpy as np
from absl import logging
from flax import traverse_util
from safetensors import flax as safetensors_flax

from transformer_jax.base import checksums
from transformer_jax.base.errors import UserError
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.models import families
from transformer_jax.pretrained import layout
from transformer_jax.pretrained import model_card
from transformer_jax.pretrained import provenance

_DATA_FIELDS = ('max_len', 'bucket_lengths', 'tokens_per_batch', 'dataset', 'source_lang',
                'target_lang')
# '.<name>.partial-<pid>-<host>', or '.<name>.partial-<pid>' as written before the host was added.
_PARTIAL = re.compile(r'^\.(?P<name>.+)\.partial-(?P<pid>\d+)(?:-(?P<host>.+))?$')


def check_export_dir(export_dir: str, named: str = '--export_dir') -> None:
  """Refuses, before anything is built, a target that is a file, holds files or cannot be written.

  An export is never overwritten: a folder that holds anything is refused, whatever it holds.
  `named` is how the caller's user gave the folder (a flag, or save_pretrained's argument).
  """
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise UserError(f'{named} {export_dir} is a file: give a folder path')
  if os.path.isdir(export_dir) and os.listdir(export_dir):
    raise UserError(f'{named} {export_dir} already holds files and an export is never '
                    f'overwritten: give a new or empty folder with {named}, or delete '
                    f'{export_dir} first')
  existing = os.path.abspath(export_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:     # a real probe, as workdir.check_path: os.access says yes to root on a read-only mount
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise UserError(f'{existing} is not writable ({e.strerror}), so {named} {export_dir} '
                    f'could not be written: fix its permissions or give another {named}'
                    ) from None


def check_exportable(family: families.Family) -> None:
  if not (family.decodes or family.samples):
    raise UserError(f'--mode=export writes translation models and language models, and '
                    f'model.family={family.name!r} is neither: export a run of the transformer, '
                    'rnn_seq2seq or lm family')


def tokenizer_record(tokenizer) -> Dict[str, Any]:
  """run.json's 'tokenizer' entry; UserError for a tokenizer an export cannot carry."""
  if isinstance(tokenizer, tokenizer_lib.Tokenizer):
    return {'kind': 'sentencepiece', 'file': layout.TOKENIZER_FILE}
  if isinstance(tokenizer, tokenizer_lib.IdentityTokenizer):
    return {'kind': 'identity', 'vocab_size': tokenizer.vocab_size}
  raise UserError(f'--mode=export cannot carry a {type(tokenizer).__name__}: export a run that '
                  'uses a sentencepiece model or token ids (copy task)')


def model_record(family: str, model_config, metrics: Dict[str, Any]) -> Dict[str, Any]:
  """model.json's content, with the versions of the software writing it."""
  return {'format': layout.FORMAT, 'family': family,
          'config': dataclasses.asdict(model_config), 'versions': provenance.versions(),
          'metrics': metrics}


def write(export_dir: str, parts, params, config, source: Dict[str, Any],
          metrics: Optional[Dict[str, Any]] = None) -> None:
  """Writes the export folder of a run; all of it or (on an error) nothing.

  Args:
    export_dir: a new or empty folder (check_export_dir).
    parts: components.Components of the run.
    params: host params (averaged), the tree the model's init makes.
    config: the run's config (its decode and data sections are recorded).
    source: what the export was made from, for run.json and the README (workdir, steps).
    metrics: {split: metrics} of these params (provenance.run_metrics), for model.json.
  """
  data = {name: config.data[name] for name in _DATA_FIELDS if name in config.data}
  data['bucket_lengths'] = list(data.get('bucket_lengths', ()))
  run = {'format': layout.FORMAT, 'tokenizer': tokenizer_record(parts.tokenizer),
         'decode': config.decode.to_dict(), 'data': data,
         'source': {**source,
                    'exported_at': datetime.datetime.now().isoformat(timespec='seconds')}}
  write_folder(export_dir, parts.tokenizer, params,
               model_record(parts.family.name, parts.model_config, metrics or {}), run)


def write_folder(export_dir: str, tokenizer, params, model: Dict[str, Any],
                 run: Dict[str, Any]) -> None:
  """Writes params, the tokenizer, model.json, run.json (with its checksums) and the model
  card into `export_dir`, through a partial folder renamed into place (all or nothing)."""
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  remove_stale_partials(parent)
  partial = os.path.join(parent, partial_name(export_dir))
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    safetensors_flax.save_file(flat_params(params), os.path.join(partial, layout.PARAMS_FILE))
    if run['tokenizer']['kind'] == 'sentencepiece':
      shutil.copyfile(tokenizer.model_path, os.path.join(partial, layout.TOKENIZER_FILE))
    run = {**run, layout.CHECKSUMS: integrity_record(partial, run, model)}
    for name, content in ((layout.MODEL_FILE, model), (layout.RUN_FILE, run)):
      with open(os.path.join(partial, name), 'w') as f:
        json.dump(content, f, indent=2)
    with open(os.path.join(partial, layout.README_FILE), 'w') as f:
      f.write(model_card.readme(os.path.abspath(export_dir), model, run))
    _sync(partial)
    os.rename(partial, export_dir)     # replaces an empty folder; never a full one
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise


def partial_name(export_dir: str) -> str:
  """The folder beside `export_dir` that this process writes before renaming it into place."""
  return (f'.{os.path.basename(os.path.abspath(export_dir))}.partial-{os.getpid()}-'
          f'{socket.gethostname()}')


def remove_stale_partials(parent: str) -> List[str]:
  """Removes the partial folders in `parent` that exports killed mid-way (SIGKILL) left.

  A folder is stale when its pid is not alive on this host. One whose pid is alive, or that
  names another host (a shared file system: its pid means nothing here), is kept, and so is one
  that holds anything an export does not write. Returns the removed folders.
  """
  removed = []
  try:
    entries = sorted(os.listdir(parent))
  except OSError:
    return removed
  for entry in entries:
    match = _PARTIAL.match(entry)
    folder = os.path.join(parent, entry)
    if (match is None or not os.path.isdir(folder) or os.path.islink(folder)
        or match['host'] not in (None, socket.gethostname()) or _alive(int(match['pid']))):
      continue
    try:
      foreign = set(os.listdir(folder)) - layout.EXPORT_FILES
    except OSError:      # removed meanwhile, or not ours to read
      continue
    if foreign:
      logging.warning('kept %s: it looks like a killed export but holds other files', folder)
      continue
    shutil.rmtree(folder, ignore_errors=True)
    logging.info('removed %s, left by an export (pid %s) that was killed', folder, match['pid'])
    removed.append(folder)
  return removed


def _alive(pid: int) -> bool:
  """Whether process `pid` exists on this host (one of another user's counts as alive)."""
  if pid <= 0:
    return True        # not a pid an export had: never treat it as stale
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError):
    return True
  return True


def _sync(folder: str) -> None:
  """Flushes the folder's files to disk, so that the rename never publishes unwritten data."""
  for name in os.listdir(folder):
    with open(os.path.join(folder, name), 'rb') as f:
      os.fsync(f.fileno())


def file_bytes(file: str) -> np.ndarray:
  """The bytes of `file` as a uint8 array, memory-mapped (read while the checksum is taken)."""
  if os.path.getsize(file) == 0:
    return np.zeros((0,), np.uint8)
  return np.memmap(file, np.uint8, 'r')


def content_checksum(content: Any) -> str:
  """checksums.py's record ('uint8:<crc32 hex>') of `content` as canonical JSON."""
  text = json.dumps(content, sort_keys=True, separators=(',', ':'))
  return checksums.tree_checksums({'json': np.frombuffer(text.encode(), np.uint8)})['json']


def run_checksum(run: Dict[str, Any]) -> str:
  """The checksum of run.json's entries other than its checksums."""
  return content_checksum({k: v for k, v in run.items() if k != layout.CHECKSUMS})


def model_checksum(family: str, config: Dict[str, Any]) -> str:
  """The digest of a resolved model config (model.json's family and config, JSON values)."""
  return content_checksum({'family': family, 'config': config})


def integrity_record(folder: str, run: Dict[str, Any], model: Dict[str, Any]) -> Dict[str, Any]:
  """run.json's checksums entry for the export being written in `folder` (see layout.py)."""
  present = {name: file_bytes(os.path.join(folder, name)) for name in layout.CHECKED_FILES
             if os.path.isfile(os.path.join(folder, name))}
  model = json.loads(json.dumps(model))          # the values as model.json reads back
  return {'format': layout.FORMAT, 'files': checksums.tree_checksums(present),
          'sizes': {name: int(array.size) for name, array in present.items()},
          layout.RUN_FILE: run_checksum(json.loads(json.dumps(run))),
          layout.MODEL_FILE: content_checksum(model),
          'model': {'checksum': model_checksum(model['family'], model['config']),
                    'family': model['family'], 'config': model['config']}}


def flat_params(params) -> Dict[str, np.ndarray]:
  """{'a/b/kernel': array} in the params' own dtypes (safetensors stores bfloat16 as is)."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  return {path: np.ascontiguousarray(value) for path, value in flat.items()}
