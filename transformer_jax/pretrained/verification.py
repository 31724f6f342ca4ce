"""The checks load_pretrained makes on an export before using it (the checksums export.py took,
see layout.py): run.json's record of itself, model.json's family and config field by field (so
an edited field is refused by name) and as this version resolves it, model.json's whole content,
and the bytes of the params file and tokenizer.model.
"""
import json
import os
import re
from typing import Any, Dict, Optional

from absl import logging

from transformer_jax.base import checksums
from transformer_jax.base.errors import UserError
from transformer_jax.pretrained import export
from transformer_jax.pretrained import layout

_CHECKSUM_RECORD = re.compile(r'uint8:[0-9a-f]{8}')     # checksums.py's record of bytes
_ABSENT = object()      # a field one of two model configs lacks


def verified_record(path: str, run: Dict[str, Any], fix: str) -> Optional[Dict[str, Any]]:
  """run.json's checksums entry, checked for shape and against run.json's own content; None
  (with a warning) for a FORMAT 1 export written before checksums.

  Args:
    path: the export folder.
    run: its run.json, read (its format one of layout.READ_FORMATS).
    fix: the end of every error message: how to get an intact export.
  """
  file = os.path.join(path, layout.RUN_FILE)
  record = run.get(layout.CHECKSUMS)
  if record is None and run['format'] == 1:
    logging.warning('%s has no checksums (exported before they were recorded): its files are '
                    'not verified; re-export it to have them checked', path)
    return None
  if record is None:
    raise UserError(f'{file} has no {layout.CHECKSUMS!r} entry, which every export of format '
                    f'{run["format"]} records, so the export cannot be verified: {fix}')
  if not _well_formed(record, run):
    raise UserError(f'{file}: its {layout.CHECKSUMS!r} entry is damaged, so the export cannot '
                    f'be verified: {fix}')
  if record.get('format') != run['format']:
    raise UserError(f'{file} records checksums of format {record.get("format")!r} in an export '
                    f'of format {run["format"]}: {fix}')
  if export.run_checksum(run) != record[layout.RUN_FILE]:
    raise UserError(f'{file} was changed after the export (its content differs from the '
                    f'checksum recorded in it): {fix}')
  return record


def _well_formed(record: Any, run: Dict[str, Any]) -> bool:
  """Whether a checksums entry has every part its export's format records, each of its type."""
  model = record.get('model') if isinstance(record, dict) else None
  tokenizer = run.get('tokenizer')
  sentencepiece = isinstance(tokenizer, dict) and tokenizer.get('kind') == 'sentencepiece'
  try:
    files = record['files']
    return bool(
        isinstance(files, dict) and isinstance(record['sizes'], dict)
        and all(isinstance(size, int) for size in record['sizes'].values())
        and all(_CHECKSUM_RECORD.fullmatch(v) and os.path.basename(k) == k not in ('', '.', '..')
                for k, v in files.items())
        and layout.PARAMS_FILES[run['format']] in files
        and (layout.TOKENIZER_FILE in files or not sentencepiece)
        and isinstance(record[layout.RUN_FILE], str)
        and (run['format'] == 1 or isinstance(record[layout.MODEL_FILE], str))
        and isinstance(model['config'], dict)
        and export.model_checksum(model['family'], model['config']) == model['checksum'])
  except (KeyError, TypeError, AttributeError):
    return False


def check_model_content(path: str, model_record: Dict[str, Any], record: Dict[str, Any],
                        fix: str) -> None:
  """Refuses a model.json whose content (its versions, metrics, ...) differs from the one the
  export recorded (exports of FORMAT 1 recorded only its family and config)."""
  recorded = record.get(layout.MODEL_FILE)
  if recorded is not None and export.content_checksum(model_record) != recorded:
    raise UserError(f'{path}/{layout.MODEL_FILE} was changed after the export (its content '
                    f'differs from the checksum recorded in {layout.RUN_FILE}): {fix}')


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
  if (_ABSENT not in config.values()
      and export.model_checksum(family, config) == exported['checksum']):
    return
  name = next((k for k, v in config.items() if v != exported['config'][k]), 'config')
  raise UserError(f'{path}/{layout.MODEL_FILE}: this transformer_jax resolves {name} to '
                  f'{config.get(name)!r} but the exported params were trained with '
                  f'{exported["config"].get(name)!r}: load it with the transformer_jax that '
                  f'exported it, or {fix}')


def _refuse_field(path: str, name: str, now: Any, then: Any, fix: str) -> None:
  where, trained = f'{path}/{layout.MODEL_FILE}', 'the exported params were trained'
  if now is _ABSENT:
    raise UserError(f'{where}: {name} is missing but {trained} with {then!r}: put back '
                    f'"{name}": {json.dumps(then)}, or {fix}')
  if then is _ABSENT:
    raise UserError(f'{where}: {name} is {now!r} but {trained} without it: remove it, or {fix}')
  raise UserError(f'{where}: {name} is {now!r} but {trained} with {then!r}: set it back to '
                  f'{json.dumps(then)} in {layout.MODEL_FILE}, or {fix}')


def damage_error(path: str, name: str, record: Dict[str, Any], fix: str) -> UserError:
  """The error for a file whose bytes differ from the export's checksum (or that is gone)."""
  file = os.path.join(path, name)
  if not os.path.isfile(file):
    return UserError(f'{file} is missing (the export wrote it, and {layout.RUN_FILE} '
                     f'records its checksum): copy the whole export folder again, or {fix}')
  size, expected = os.path.getsize(file), record['sizes'].get(name)
  if size == 0:
    how = 'is empty'
  elif expected is not None and size < expected:
    how = f'is truncated ({size} of the {expected} bytes the export wrote)'
  else:
    how = f'is damaged (its bytes differ from the checksum recorded in {layout.RUN_FILE})'
  return UserError(f'{file} {how}: copy the whole export folder again, or {fix}')


def damaged_file(folder: str, record: Dict[str, Any]) -> Optional[str]:
  """The first of `record`'s files in `folder` that is missing or whose bytes differ, or None."""
  files = record['files']
  missing = [name for name in files if not os.path.isfile(os.path.join(folder, name))]
  if missing:
    return missing[0]
  return checksums.first_mismatch(
      {name: export.file_bytes(os.path.join(folder, name)) for name in files}, files)
