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
"""
import dataclasses
import datetime
import json
import os
import shutil
import tempfile
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from transformer_jax import families
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.errors import UserError

FORMAT = 1
PARAMS_FILE, MODEL_FILE, RUN_FILE = 'params.npz', 'model.json', 'run.json'
TOKENIZER_FILE, README_FILE = 'tokenizer.model', 'README.md'
_DATA_FIELDS = ('max_len', 'bucket_lengths', 'tokens_per_batch', 'dataset', 'source_lang',
                'target_lang')


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
  partial = os.path.join(parent, f'.{os.path.basename(os.path.abspath(export_dir))}.partial'
                         f'-{os.getpid()}')
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    np.savez(os.path.join(partial, PARAMS_FILE), **flat_params(params))
    for name, content in ((MODEL_FILE, model), (RUN_FILE, run)):
      with open(os.path.join(partial, name), 'w') as f:
        json.dump(content, f, indent=2)
    if record['kind'] == 'sentencepiece':
      shutil.copyfile(parts.tokenizer.model_path, os.path.join(partial, TOKENIZER_FILE))
    with open(os.path.join(partial, README_FILE), 'w') as f:
      f.write(readme(os.path.abspath(export_dir), model, run))
    os.rename(partial, export_dir)     # replaces an empty folder; never a full one
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise


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
`{RUN_FILE}` (tokenizer, decode and batching settings, source), and for sentencepiece runs
`{TOKENIZER_FILE}`.
"""
