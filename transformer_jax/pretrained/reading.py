"""Reading the files of an export folder (layout.py) for load_pretrained: each file read and
checked on its own, anything wrong one UserError naming the file and the fix.
"""
import dataclasses
import json
import os
import zipfile
import zlib
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
from flax import traverse_util
from safetensors import flax as safetensors_flax

from transformer_jax.base import workdir as workdir_lib
from transformer_jax.base.errors import UserError
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.models import families
from transformer_jax.pretrained import layout
from transformer_jax.pretrained import verification
from transformer_jax.train import components

MAKE_ONE = ('make one with python launch.py --mode=export --workdir=<a trained run> '
            '[--export_dir=<folder>]')


def reexport_fix(path: str, run: Optional[Dict[str, Any]]) -> str:
  """The fix for a damaged export: export its run again. The run is run.json's source workdir,
  or, where run.json cannot say, the folder holding the export when it is a run (the default
  --export_dir is <workdir>/export)."""
  source = run.get('source') if isinstance(run, dict) else None
  workdir = source.get('workdir') if isinstance(source, dict) else None
  parent = os.path.dirname(os.path.abspath(path))
  if (not isinstance(workdir, str)
      and os.path.isfile(os.path.join(parent, workdir_lib.CONFIG_FILE))):
    workdir = parent
  return ('re-export it from its run into a new folder: python launch.py --mode=export '
          f'--workdir={workdir if isinstance(workdir, str) else "<run>"} '
          '--export_dir=<new folder>')


def one_line(error: BaseException) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


def read_json(file: str, fix: str) -> Dict[str, Any]:
  """A JSON object of an export format this version reads, or a UserError naming `file`."""
  try:
    with open(file, encoding='utf-8') as f:
      content = json.load(f)
  except ValueError as e:         # UnicodeDecodeError included
    raise UserError(f'{file} is not valid JSON ({one_line(e)}): {fix}') from None
  except OSError as e:
    raise UserError(f'{file} cannot be read ({e.strerror}): fix its permissions, or {fix}'
                    ) from None
  if not isinstance(content, dict):
    raise UserError(f'{file} holds a JSON {type(content).__name__}, not the object an export '
                    f'writes: {fix}')
  if content.get('format') not in layout.READ_FORMATS:
    readable = ' or '.join(map(str, layout.READ_FORMATS))
    raise UserError(f'{file} has export format {content.get("format")!r}, this transformer_jax '
                    f'reads {readable}: export the run again with this version; {MAKE_ONE}')
  return content


def check_run(path: str, run: Dict[str, Any], fix: str) -> None:
  """Refuses a run.json without the objects that load_pretrained and Pretrained read."""
  for key in ('tokenizer', 'decode', 'data', 'source'):
    if not isinstance(run.get(key, {}), dict) or (key != 'source' and key not in run):
      raise UserError(f'{path}/{layout.RUN_FILE} has no {key!r} object, which an export '
                      f'writes: {fix}')


def model_config(path: str, record: Optional[Dict[str, Any]], fix: str):
  """(family, config dataclass, model.json's content) from model.json, checked against the
  export's checksums `record` when there is one: the family and config as written, then as
  this version resolves them, then the whole content."""
  model_record = read_json(os.path.join(path, layout.MODEL_FILE), fix)
  if record is not None:
    verification.check_model_record(path, model_record, record['model'], fix)
  try:
    family = families.get(model_record['family'])
    fields = {k: tuple(v) if isinstance(v, list) else v
              for k, v in model_record['config'].items()}
    config = family.config_class()(**fields)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise UserError(f'{path}/{layout.MODEL_FILE} does not describe a model this transformer_jax '
                    f'builds ({one_line(e)}): export the run again with this version; '
                    f'{MAKE_ONE}') from None
  if record is not None:
    verification.check_resolved_model(path, family.name,
                                      json.loads(json.dumps(dataclasses.asdict(config))),
                                      record['model'], fix)
    verification.check_model_content(path, model_record, record, fix)
  return family, config, model_record


def load_tokenizer(path: str, record: Dict[str, Any], fix: str):
  """The tokenizer run.json names; a damaged sentencepiece model is a UserError naming it."""
  if record.get('kind') == 'identity':
    try:
      return tokenizer_lib.IdentityTokenizer(record['vocab_size'])
    except (KeyError, TypeError, ValueError):
      raise UserError(f'{path}/{layout.RUN_FILE} has no integer tokenizer vocab_size: '
                      f'{fix}') from None
  if record.get('kind') == 'sentencepiece':
    file = os.path.join(path, str(record.get('file', layout.TOKENIZER_FILE)))
    if not os.path.isfile(file) or os.path.getsize(file) == 0:
      how = 'is empty' if os.path.isfile(file) else 'is missing'
      raise UserError(f'{file} {how}, and {layout.RUN_FILE} names it as the sentencepiece '
                      f'model: copy the whole export folder again, or {fix}')
    try:
      return tokenizer_lib.Tokenizer(file)
    except (RuntimeError, OSError) as e:
      raise UserError(f'{file} is not a sentencepiece model ({one_line(e)}): copy the whole '
                      f'export folder again, or {fix}') from None
  raise UserError(f'{path}/{layout.RUN_FILE} names an unknown tokenizer kind '
                  f'{record.get("kind")!r}: export the run again with this version; {MAKE_ONE}')


def _read_arrays(file: str) -> Dict[str, Any]:
  """The arrays of a params file by name: params.safetensors, or a FORMAT 1 params.npz."""
  if file.endswith('.npz'):
    with np.load(file) as saved:
      if not isinstance(saved, np.lib.npyio.NpzFile):
        raise ValueError('not an .npz archive')
      return {name: saved[name] for name in saved.files}
  return safetensors_flax.load_file(file)


def read_params(file: str, record: Optional[Dict[str, Any]], fix: str) -> Dict[str, Any]:
  """The params file's arrays by name; a file that cannot be read is a UserError naming it."""
  try:
    return _read_arrays(file)
  except (safetensors.SafetensorError, zipfile.BadZipFile, ValueError, OSError, EOFError,
          KeyError, zlib.error, AttributeError, TypeError) as e:
    if not os.path.isfile(file):
      raise UserError(f'{file} is missing, and the export keeps its params there: copy the '
                      f'whole export folder again, or {fix}') from None
    size = os.path.getsize(file)
    expected = (record or {}).get('sizes', {}).get(os.path.basename(file))
    sizes = (f'; it has {size} bytes, the export wrote {expected}' if expected is not None
             and expected != size else f'; it has {size} bytes')
    raise UserError(f'{file} cannot be read ({one_line(e)[:200]}{sizes}): it is truncated or '
                    f'damaged; copy the whole export folder again, or {fix}') from None


def load_params(file: str, parts, record: Optional[Dict[str, Any]], fix: str):
  """The params file as the model's param tree (its dtypes), checked against the shapes init
  makes."""
  flat = read_params(file, record, fix)
  template = jax.eval_shape(lambda: components.init_state(parts, 0)).params
  expected = traverse_util.flatten_dict(template, sep='/')
  problems = sorted(set(expected) ^ set(flat))
  problems = ([f'{name} is {"missing" if name in expected else "not in the model"}'
               for name in problems] +
              [f'{name} has shape {flat[name].shape}, the model {expected[name].shape}'
               for name in sorted(set(expected) & set(flat))
               if flat[name].shape != expected[name].shape])
  if problems:
    raise UserError(f'{file} does not fit its {layout.MODEL_FILE} ({problems[0]}'
                    f'{f" and {len(problems) - 1} more" if len(problems) > 1 else ""}): '
                    f'{fix}')
  params = {name: jnp.asarray(value, expected[name].dtype) for name, value in flat.items()}
  return parts.runner.put_state(traverse_util.unflatten_dict(params, sep='/'))
