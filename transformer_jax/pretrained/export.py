"""--mode=export: a trained run's averaged params, model config, tokenizer and decode settings
in one folder that `transformer_jax.load_pretrained` (pretrained.py) reads without orbax, flags or
the workdir.

Layout (FORMAT 1):
  params.npz       the parameters (averaged over eval.average_last checkpoints, as --mode=eval
                   averages them): one float array per leaf, keyed by its '/'-joined path
                   (e.g. 'encoder/layer_0/attention/query/kernel'); numpy alone reads it
  model.json       {'format', 'family', 'config': every field of the family's config dataclass}
  run.json         {'format', 'tokenizer': {'kind': 'sentencepiece', 'file': 'tokenizer.model'}
                   or {'kind': 'identity', 'vocab_size'}, 'decode': the run's decode section,
                   'data': max_len, bucket_lengths, tokens_per_batch (how translate batches),
                   dataset and languages, 'source': the run's workdir, steps averaged, export time}
  tokenizer.model  the sentencepiece model (sentencepiece tokenizers only)
  README.md        what the model is and the lines that use it

Integrity: run.json's 'checksums' entry records, with checksums.py's CRC-32 ('uint8:<hex>' of
bytes), each binary file's bytes and size (params.npz, tokenizer.model), run.json's other entries
(as canonical JSON, so reformatting the file changes nothing), and a digest of the resolved model
config (model.json's family and config, every dataclass field) with a copy of it, so that
`load_pretrained` refuses an edited field by name. README.md is for people and is not checked.
Exports written before checksums have no such entry and load unchecked.

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
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from transformer_jax.base import checksums
from transformer_jax.base.errors import UserError
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.models import families

FORMAT = 1
PARAMS_FILE, MODEL_FILE, RUN_FILE = 'params.npz', 'model.json', 'run.json'
TOKENIZER_FILE, README_FILE = 'tokenizer.model', 'README.md'
_DATA_FIELDS = ('max_len', 'bucket_lengths', 'tokens_per_batch', 'dataset', 'source_lang',
                'target_lang')
CHECKSUMS = 'checksums'           # run.json's integrity entry
CHECKED_FILES = (PARAMS_FILE, TOKENIZER_FILE)     # checked byte for byte, when present
_EXPORT_FILES = frozenset((PARAMS_FILE, MODEL_FILE, RUN_FILE, TOKENIZER_FILE, README_FILE))
_CHECKSUM_RECORD = re.compile(r'uint8:[0-9a-f]{8}')     # checksums.py's record of bytes
_ABSENT = object()      # a field one of two model configs lacks
# '.<name>.partial-<pid>-<host>', or '.<name>.partial-<pid>' as written before the host was added.
_PARTIAL = re.compile(r'^\.(?P<name>.+)\.partial-(?P<pid>\d+)(?:-(?P<host>.+))?$')


def check_export_dir(export_dir: str) -> None:
  """Refuses, before anything is built, a target that is a file, holds files or cannot be written.

  An export is never overwritten: a folder that holds anything is refused, whatever it holds.
  """
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise UserError(f'--export_dir {export_dir} is a file: give a folder path')
  if os.path.isdir(export_dir) and os.listdir(export_dir):
    raise UserError(f'--export_dir {export_dir} already holds files and an export is never '
                    'overwritten: give a new or empty folder with --export_dir, or delete '
                    f'{export_dir} first')
  existing = os.path.abspath(export_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:     # a real probe, as workdir.check_path: os.access says yes to root on a read-only mount
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise UserError(f'{existing} is not writable ({e.strerror}), so --export_dir {export_dir} '
                    'could not be written: fix its permissions or give another --export_dir'
                    ) from None


def check_exportable(family: families.Family) -> None:
  if not (family.decodes or family.samples):
    raise UserError(f'--mode=export writes translation models and language models, and '
                    f'model.family={family.name!r} is neither: export a run of the transformer, '
                    'rnn_seq2seq or lm family')


def tokenizer_record(tokenizer) -> Dict[str, Any]:
  """run.json's 'tokenizer' entry; UserError for a tokenizer an export cannot carry."""
  if isinstance(tokenizer, tokenizer_lib.Tokenizer):
    return {'kind': 'sentencepiece', 'file': TOKENIZER_FILE}
  if isinstance(tokenizer, tokenizer_lib.IdentityTokenizer):
    return {'kind': 'identity', 'vocab_size': tokenizer.vocab_size}
  raise UserError(f'--mode=export cannot carry a {type(tokenizer).__name__}: export a run that '
                  'uses a sentencepiece model or token ids (copy task)')


def write(export_dir: str, parts, params, config, source: Dict[str, Any]) -> None:
  """Writes the export folder; all of it or (on an error) nothing.

  Args:
    export_dir: a new or empty folder (check_export_dir).
    parts: components.Components of the run.
    params: host params (averaged), the tree the model's init makes.
    config: the run's config (its decode and data sections are recorded).
    source: what the export was made from, for run.json and the README (workdir, steps).
  """
  record = tokenizer_record(parts.tokenizer)
  data = {name: config.data[name] for name in _DATA_FIELDS if name in config.data}
  data['bucket_lengths'] = list(data.get('bucket_lengths', ()))
  run = {'format': FORMAT, 'tokenizer': record, 'decode': config.decode.to_dict(), 'data': data,
         'source': {**source,
                    'exported_at': datetime.datetime.now().isoformat(timespec='seconds')}}
  model = {'format': FORMAT, 'family': parts.family.name,
           'config': dataclasses.asdict(parts.model_config)}
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  remove_stale_partials(parent)
  partial = os.path.join(parent, partial_name(export_dir))
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    np.savez(os.path.join(partial, PARAMS_FILE), **flat_params(params))
    if record['kind'] == 'sentencepiece':
      shutil.copyfile(parts.tokenizer.model_path, os.path.join(partial, TOKENIZER_FILE))
    run[CHECKSUMS] = integrity_record(partial, run, model)
    for name, content in ((MODEL_FILE, model), (RUN_FILE, run)):
      with open(os.path.join(partial, name), 'w') as f:
        json.dump(content, f, indent=2)
    with open(os.path.join(partial, README_FILE), 'w') as f:
      f.write(readme(os.path.abspath(export_dir), model, run))
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
      foreign = set(os.listdir(folder)) - _EXPORT_FILES
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
  """The checksum of run.json's entries other than CHECKSUMS."""
  return content_checksum({k: v for k, v in run.items() if k != CHECKSUMS})


def model_checksum(family: str, config: Dict[str, Any]) -> str:
  """The digest of a resolved model config (model.json's family and config, JSON values)."""
  return content_checksum({'family': family, 'config': config})


def integrity_record(folder: str, run: Dict[str, Any], model: Dict[str, Any]) -> Dict[str, Any]:
  """run.json's CHECKSUMS entry for the export being written in `folder` (see the docstring)."""
  present = {name: file_bytes(os.path.join(folder, name)) for name in CHECKED_FILES
             if os.path.isfile(os.path.join(folder, name))}
  model = json.loads(json.dumps(model))          # the values as model.json reads back
  return {'format': FORMAT, 'files': checksums.tree_checksums(present),
          'sizes': {name: int(array.size) for name, array in present.items()},
          RUN_FILE: run_checksum(json.loads(json.dumps(run))),
          'model': {'checksum': model_checksum(model['family'], model['config']),
                    'family': model['family'], 'config': model['config']}}


def flat_params(params) -> Dict[str, np.ndarray]:
  """{'a/b/kernel': array}; bfloat16 (which .npz cannot name) is widened to float32, exactly."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  return {path: np.asarray(value, np.float32) if value.dtype == jnp.bfloat16
          else np.asarray(value) for path, value in flat.items()}


def readme(path: str, model: Dict[str, Any], run: Dict[str, Any]) -> str:
  """The export's README.md: what it is, three lines that use it, where it came from."""
  family, config, source = model['family'], model['config'], run['source']
  if families.get(family).samples:
    use = 'print(model.sample(n=3))'
    also = ('`sample` takes `prompts` (continued, each output starts with its prompt), `n`, '
            '`temperature`, `top_k`, `top_p`, `seed`, `method` and `max_extra_len`, like '
            '`launch.py --mode=sample`.')
    what = f'A decoder-only language model trained on {run["data"].get("dataset")}'
  else:
    data = run['data']
    example = ('5 6 7 8 9' if run['tokenizer']['kind'] == 'identity' else
               'A dog runs on the beach.' if data.get('source_lang') == 'en' else
               f'<a sentence in {data.get("source_lang")}>')
    use = f'print(model.translate([{example!r}]))'
    pair = ('' if run['tokenizer']['kind'] == 'identity' else
            f' {data.get("source_lang")}->{data.get("target_lang")}')
    what = f'An encoder-decoder trained on {data.get("dataset")}{pair}'
    also = ('`translate` takes `beam_size`, `alpha`, `method` and `max_extra_len`, and gives what '
            '`launch.py --mode=translate` gives on the source run with the same settings. Also: '
            '`model.score(sources, targets)` (log-likelihood sums), `model.encode(sentences)` '
            '(encoder outputs), `model.tokenize(sentences)`.')
  steps = source.get('steps_averaged', [])
  sizes = ', '.join(f'{k}={config[k]}' for k in ('num_layers', 'model_dim', 'num_heads',
                                                  'mlp_dim', 'hidden_dim', 'vocab_size')
                    if config.get(k) is not None)
  return f"""# Exported transformer_jax model

{what}, family `{family}` ({sizes}).

```python
import transformer_jax
model = transformer_jax.load_pretrained({path!r})
{use}
```

Needs only `transformer_jax` importable (e.g. `PYTHONPATH=<the repository>`): no orbax, flags or
workdir. Decoding defaults to the run's `decode` settings (`run.json`). {also}

Source run: `{source.get('workdir')}`, checkpoint steps averaged: {steps}
(eval.average_last={source.get('average_last')}), exported {source.get('exported_at', '')}.

Files: `{PARAMS_FILE}` (parameters by '/'-joined path), `{MODEL_FILE}` (family and config),
`{RUN_FILE}` (tokenizer, decode and batching settings, source, and the checksums that
`load_pretrained` verifies), and for sentencepiece runs `{TOKENIZER_FILE}`. A file changed after
the export is refused when loaded: re-export from the source run rather than editing one.
"""


# --- Verification at load (pretrained.load_pretrained) ----------------------------------------

def verified_record(path: str, run: Dict[str, Any], fix: str) -> Optional[Dict[str, Any]]:
  """run.json's CHECKSUMS entry, checked for shape and against run.json's own content; None
  (with a warning) for an export written before checksums.

  Args:
    path: the export folder.
    run: its run.json, read.
    fix: the end of every error message: how to get an intact export.
  """
  file = os.path.join(path, RUN_FILE)
  record = run.get(CHECKSUMS)
  if record is None:
    logging.warning('%s has no checksums (exported before they were recorded): its files are '
                    'not verified; re-export it to have them checked', path)
    return None
  model = record.get('model') if isinstance(record, dict) else None
  tokenizer = run.get('tokenizer')
  sentencepiece = isinstance(tokenizer, dict) and tokenizer.get('kind') == 'sentencepiece'
  try:
    files = record['files']
    well_formed = (
        isinstance(files, dict) and isinstance(record['sizes'], dict)
        and all(isinstance(size, int) for size in record['sizes'].values())
        and all(_CHECKSUM_RECORD.fullmatch(v) and os.path.basename(k) == k not in ('', '.', '..')
                for k, v in files.items())
        and (TOKENIZER_FILE in files or not sentencepiece)
        and isinstance(record[RUN_FILE], str) and isinstance(model['config'], dict)
        and model_checksum(model['family'], model['config']) == model['checksum'])
  except (KeyError, TypeError, AttributeError):
    well_formed = False
  if not well_formed:
    raise UserError(f'{file}: its {CHECKSUMS!r} entry is damaged, so the export cannot '
                    f'be verified: {fix}')
  if record.get('format') != FORMAT:
    raise UserError(f'{file} records checksums of format {record.get("format")!r}, this '
                    f'transformer_jax reads {FORMAT}: load it with the transformer_jax '
                    f'that exported it, or {fix}')
  if run_checksum(run) != record[RUN_FILE]:
    raise UserError(f'{file} was changed after the export (its content differs from the '
                    f'checksum recorded in it): {fix}')
  return record


def check_model_record(path: str, model_record: Dict[str, Any], exported: Dict[str, Any],
                       fix: str) -> None:
  """Refuses a model.json whose family or config fields differ from the exported ones (the
  copy in run.json's checksums), naming the first field that differs."""
  family, config = model_record.get('family'), model_record.get('config')
  if family != exported['family']:
    _refuse_field(path, 'family', family, exported['family'], fix)
  if not isinstance(config, dict):
    return                   # building the config says what is wrong
  for name, then in exported['config'].items():
    if config.get(name, _ABSENT) != then:
      _refuse_field(path, name, config.get(name, _ABSENT), then, fix)
  for name in config:
    if name not in exported['config']:
      _refuse_field(path, name, config[name], _ABSENT, fix)


def check_resolved_model(path: str, family: str, resolved: Dict[str, Any],
                         exported: Dict[str, Any], fix: str) -> None:
  """Refuses a model config that this transformer_jax resolves (every dataclass field, defaults
  filled in; JSON values) to one whose digest is not the exported one.

  Fields added to the dataclass after the export are left out: their defaults are what the
  export was trained with.
  """
  config = {name: resolved.get(name, _ABSENT) for name in exported['config']}
  if _ABSENT not in config.values() and model_checksum(family, config) == exported['checksum']:
    return
  name = next((k for k, v in config.items() if v != exported['config'][k]), 'config')
  raise UserError(f'{path}/{MODEL_FILE}: this transformer_jax resolves {name} to '
                  f'{config.get(name)!r} but the exported params were trained with '
                  f'{exported["config"].get(name)!r}: load it with the transformer_jax that '
                  f'exported it, or {fix}')


def _refuse_field(path: str, name: str, now: Any, then: Any, fix: str) -> None:
  where, trained = f'{path}/{MODEL_FILE}', 'the exported params were trained'
  if now is _ABSENT:
    raise UserError(f'{where}: {name} is missing but {trained} with {then!r}: put back '
                    f'"{name}": {json.dumps(then)}, or {fix}')
  if then is _ABSENT:
    raise UserError(f'{where}: {name} is {now!r} but {trained} without it: remove it, or {fix}')
  raise UserError(f'{where}: {name} is {now!r} but {trained} with {then!r}: set it back to '
                  f'{json.dumps(then)} in {MODEL_FILE}, or {fix}')


def damage_error(path: str, name: str, record: Dict[str, Any], fix: str) -> UserError:
  """The error for a file whose bytes differ from the export's checksum (or that is gone)."""
  file = os.path.join(path, name)
  if not os.path.isfile(file):
    return UserError(f'{file} is missing (the export wrote it, and {RUN_FILE} '
                     f'records its checksum): copy the whole export folder again, or {fix}')
  size, expected = os.path.getsize(file), record['sizes'].get(name)
  if size == 0:
    how = 'is empty'
  elif expected is not None and size < expected:
    how = f'is truncated ({size} of the {expected} bytes the export wrote)'
  else:
    how = f'is damaged (its bytes differ from the checksum recorded in {RUN_FILE})'
  return UserError(f'{file} {how}: copy the whole export folder again, or {fix}')


def damaged_file(folder: str, record: Dict[str, Any]) -> Optional[str]:
  """The first of `record`'s files in `folder` that is missing or whose bytes differ, or None."""
  files = record['files']
  missing = [name for name in files if not os.path.isfile(os.path.join(folder, name))]
  if missing:
    return missing[0]
  return checksums.first_mismatch(
      {name: file_bytes(os.path.join(folder, name)) for name in files}, files)
