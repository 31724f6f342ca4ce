"""What an export records about where its params came from: the versions of the software that
wrote it, and how the run measured those params (model.json's 'versions' and 'metrics').

The metrics of a split are those of the exported checkpoints exactly (the steps averaged):
the newest `--mode=eval` JSON of that split in <workdir>/eval/ whose `checkpoints` are those
steps (one of the whole split before a partial one, see eval.max_batches); for the validation
split without one, the training's periodic validation record at the last of them
(metrics.jsonl: the params of that one checkpoint, which `checkpoints` then says). The test
split is recorded only when the run was evaluated on it.
"""
import glob
import json
import os
from typing import Any, Dict, List, Optional

import flax
import jax
from absl import logging

import transformer_jax
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.train import metrics_writer

SPLITS = ('validation', 'test')
# Entries of a periodic record that say when, not how well.
_NOT_METRICS = ('split', 'step', 'time', 'minutes')


def versions() -> Dict[str, str]:
  """{'transformer_jax', 'jax', 'flax': version}: the software writing an export."""
  return {'transformer_jax': transformer_jax.__version__, 'jax': jax.__version__,
          'flax': flax.__version__}


def run_metrics(workdir: str, checkpoints: List[int]) -> Dict[str, Dict[str, Any]]:
  """{split: metrics} of the params averaged over `checkpoints` (see the module docstring).

  Each split's metrics are the record's numbers and strings (loss, perplexity, accuracy,
  sacrebleu and its signature, ...) with 'source' (the file they come from, relative to the
  workdir), 'checkpoints' (the steps measured) and, for decoded metrics, 'decoding'.
  """
  metrics = {}
  for split in SPLITS:
    found = _eval_record(workdir, split, list(checkpoints))
    if found is None and split == 'validation':
      found = _periodic_record(workdir, checkpoints[-1])
    if found is not None:
      metrics[split] = metrics_writer.strict_json_tree(found)
  return metrics


def _eval_record(workdir: str, split: str, checkpoints: List[int]) -> Optional[Dict[str, Any]]:
  """The newest whole-split (else partial) eval JSON of `split` and exactly `checkpoints`."""
  candidates = []
  for file in glob.glob(os.path.join(workdir, 'eval', f'{split}_step*.json')):
    record = _read_object(file)
    if (record is not None and record.get('split') == split
        and record.get('checkpoints') == checkpoints):
      candidates.append((not record.get('partial', False), os.path.getmtime(file), file, record))
  if not candidates:
    return None
  _, _, file, record = max(candidates, key=lambda c: c[:3])
  summary = {key: value for key, value in record.items()
             if _is_scalar(value) and key != 'split'}
  summary.update(source=os.path.relpath(file, workdir), checkpoints=checkpoints)
  if 'decoding' in record:
    summary['decoding'] = record['decoding']
  return summary


def _periodic_record(workdir: str, step: int) -> Optional[Dict[str, Any]]:
  """The last validation record of metrics.jsonl at `step`, or None."""
  records = [record for record in metrics_writer.read_records(
      os.path.join(workdir, workdir_lib.METRICS_FILE))
             if record.get('split') == 'validation' and record.get('step') == step]
  if not records:
    return None
  summary = {key: value for key, value in records[-1].items()
             if _is_scalar(value) and key not in _NOT_METRICS}
  summary.update(source=workdir_lib.METRICS_FILE, checkpoints=[step])
  return summary


def _read_object(file: str) -> Optional[Dict[str, Any]]:
  """The JSON object in `file`, or None (with a warning) for one that cannot be read."""
  try:
    with open(file, encoding='utf-8') as f:
      record = json.load(f)
  except (OSError, ValueError) as e:
    logging.warning('left out %s from the export\'s metrics: it cannot be read (%s)', file, e)
    return None
  return record if isinstance(record, dict) else None


def _is_scalar(value: Any) -> bool:
  return value is None or isinstance(value, (bool, int, float, str))
