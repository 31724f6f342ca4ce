"""Exports in seconds, for tests that need one but no trained run: a tiny untrained copy-task
Transformer (random params, identity tokenizer) written in-process by export.write, and the
same model written as FORMAT 1 exports were (params.npz), by a frozen copy of that writer."""
import dataclasses
import json
import pathlib
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from transformer_jax.base import checksums
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.models import families
from transformer_jax.pretrained import export
from transformer_jax.run import defaults
from transformer_jax.train import components

VOCAB = 32
SOURCE = {'workdir': '/runs/copy', 'step': 2, 'steps_averaged': [2], 'average_last': 1}
# Lines of token ids the copy task reads (3 .. VOCAB - 1).
LINES = ['5 6 7', '9 8', '4 4 5 6 7 8', '12 3 7 7 8 9 10 11']


def parts_and_params(seed: int = 0):
  """(components.Components, host params) of a 1-layer, 16-wide Transformer over VOCAB ids."""
  family = families.get('transformer')
  model_config = family.config_class()(vocab_size=VOCAB, model_dim=16, num_heads=2, mlp_dim=32,
                                       num_layers=1, dropout_rate=0.0, max_len=32)
  parts = components.Components(
      tokenizer=tokenizer_lib.IdentityTokenizer(VOCAB), model_config=model_config,
      model=family.model_class()(model_config), family=family, tx=optax.identity(),
      learning_rate_fn=None, runner=None)
  return parts, components.init_state(parts, seed).params


def run_config():
  """The run config an export records (its data and decode sections): greedy, short outputs."""
  config = defaults.get_base_config()
  config.data.update(dataset='copy', max_len=32, tokens_per_batch=256)
  config.decode.update(method='greedy', max_extra_len=6)
  return config


def write(folder: pathlib.Path, metrics: Optional[Dict[str, Any]] = None) -> pathlib.Path:
  """The tiny model exported to `folder` by export.write (this version's format)."""
  parts, params = parts_and_params()
  export.write(str(folder), parts, params, run_config(), SOURCE, metrics=metrics)
  return folder


def write_format_1(folder: pathlib.Path, with_checksums: bool = True) -> pathlib.Path:
  """The tiny model as a FORMAT 1 export wrote it (transformer_jax 0.1.0): params.npz (float32),
  model.json and run.json of format 1 and, unless `with_checksums` is False (exports older
  still), run.json's checksums entry of format 1."""
  parts, params = parts_and_params()
  folder.mkdir(parents=True)
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  np.savez(folder / 'params.npz', **{name: np.asarray(value, np.float32)
                                     if value.dtype == jnp.bfloat16 else np.asarray(value)
                                     for name, value in flat.items()})
  config = run_config()
  data = {name: config.data[name] for name in ('max_len', 'bucket_lengths', 'tokens_per_batch',
                                               'dataset', 'source_lang', 'target_lang')}
  data['bucket_lengths'] = list(data['bucket_lengths'])
  run = {'format': 1, 'tokenizer': {'kind': 'identity', 'vocab_size': VOCAB},
         'decode': {k: v for k, v in config.decode.to_dict().items() if k != 'nbest'},
         'data': data, 'source': {**SOURCE, 'exported_at': '2026-11-30T12:00:00'}}
  model = json.loads(json.dumps({'format': 1, 'family': 'transformer',
                                 'config': dataclasses.asdict(parts.model_config)}))
  if with_checksums:
    params_bytes = np.frombuffer((folder / 'params.npz').read_bytes(), np.uint8)
    run['checksums'] = {
        'format': 1, 'files': checksums.tree_checksums({'params.npz': params_bytes}),
        'sizes': {'params.npz': int(params_bytes.size)}, 'run.json': _crc(run),
        'model': {'checksum': _crc({'family': model['family'], 'config': model['config']}),
                  'family': model['family'], 'config': model['config']}}
  (folder / 'model.json').write_text(json.dumps(model, indent=2))
  (folder / 'run.json').write_text(json.dumps(run, indent=2))
  (folder / 'README.md').write_text('# Exported transformer_jax model\n')
  return folder


def _crc(content) -> str:
  """FORMAT 1's checksum of JSON content: CRC-32 of its canonical text."""
  text = json.dumps(content, sort_keys=True, separators=(',', ':'))
  return checksums.tree_checksums({'json': np.frombuffer(text.encode(), np.uint8)})['json']
