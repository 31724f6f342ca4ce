"""What a sweep's report reads: one record per done member (its newest averaged evaluation of a
split with its hypotheses and references, metrics.jsonl, provenance.json), from the sweep's
folder and from other sweep folders that join it (`--sweep_also`). Members restored from an
archive, which leaves the data set's sentences behind, get their references from the members
that have them or from the data their config.json names, checked against the archive's
recorded checksum (shared/references.json).
"""
import glob
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from transformer_jax.base.errors import UserError
from transformer_jax.sweep import provenance
from transformer_jax.sweep.reporting import learning
from transformer_jax.sweep import runner
from transformer_jax.sweep import spec

REFERENCES = 'references.json'    # in <sweep>/shared/: checksums of each split's references


def eval_files(folder: str, split: str) -> Optional[str]:
  """The stem of the member's newest complete averaged evaluation of `split`; a partial one
  (`eval.max_batches` > 0, as smoke experiments have) only when there is no complete one."""
  found = sorted(glob.glob(os.path.join(folder, 'eval', f'{split}_step*_avg*.json')),
                 key=lambda p: ('_partial' not in os.path.basename(p), os.path.getmtime(p)))
  return found[-1][:-len('.json')] if found else None


def _read_lines(path: str) -> Optional[List[str]]:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def _member_records(workdir: str, members, split: str, source: str,
                    damaged: List[str]) -> List[Dict[str, Any]]:
  records = []
  for row_name, seed_label, folder, tune in members:
    stem = eval_files(folder, split)
    if stem is None:
      continue
    try:
      with open(stem + '.json', encoding='utf-8') as f:
        metrics = json.load(f)
      if not isinstance(metrics, dict):
        raise ValueError('not a JSON object')
    except (OSError, ValueError) as e:      # reported as damaged; the others are reported
      damaged.append(f'{os.path.basename(folder)} ({os.path.basename(stem)}.json: '
                     f'{type(e).__name__}; evaluate it again with --mode=eval '
                     f'--workdir={folder})')
      continue
    log = learning.read_log(folder)
    metrics.update(grad_norm_start=log['grad_norm_start'], grad_norm_end=log['grad_norm_end'])
    records.append({'row': row_name, 'seed': seed_label, 'tune': tune,
                    'member': os.path.basename(folder),
                    'folder': folder, 'source': source, 'metrics': metrics, 'log': log,
                    'hypotheses': _read_lines(stem + '.hyp.txt'),
                    'references': _read_lines(stem + '.ref.txt'), 'minutes': log['minutes'],
                    'stem': stem, 'partial': '_partial' in os.path.basename(stem),
                    'provenance': provenance.read(os.path.join(folder, runner.PROVENANCE))})
  return records


def collect(plan: runner.Plan, split: str = 'validation', also: Sequence[str] = (),
            damaged: Optional[List[str]] = None) -> List[Dict[str, Any]]:
  """One record per done member of the sweep (and of the sweep folders `also`, whose rows
  join the report: their baseline row pools with this sweep's, other rows of the same name
  are prefixed with their folder's name)."""
  members = [(m.row.name, m.name[len(m.row.name) + 1:], plan.member_dir(m), m.tune)
             for m in plan.sweep.members() if runner.status(plan, m) == 'done']
  damaged = [] if damaged is None else damaged
  records = _member_records(plan.workdir, members, split, plan.workdir, damaged)
  for other in also:
    records += _member_records(other, _done_members(other, plan.sweep), split, other, damaged)
  _share_references(records)
  _references_from_data(plan, records, split)
  return records


def _done_members(folder: str, sweep: spec.Sweep):
  """(row, seed label, folder) of the done members of another sweep's folder."""
  if not os.path.isdir(folder):
    raise UserError(f'--sweep_also={folder} is not a folder: give a sweep\'s workdir')
  found = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    member = provenance.read(os.path.join(path, runner.MEMBER)) if os.path.isdir(path) else None
    if member is None or not os.path.exists(os.path.join(path, runner.DONE)):
      continue
    row = member['row']
    if row != sweep.baseline and row in {r.name for r in sweep.rows}:
      row = f'{os.path.basename(os.path.normpath(folder))}:{row}'
    found.append((row, name[len(member['row']) + 1:], path, None))
  return found


def _share_references(records) -> None:
  """Members without a ref.txt (restored from an archive, which leaves the data set's
  sentences behind) take the references of the members that have them, when those all agree
  and have as many lines as the member's hypotheses: every member is evaluated on one split."""
  present = [r['references'] for r in records if r['references'] is not None]
  if not present or any(refs != present[0] for refs in present[1:]):
    return
  for record in records:
    if record['references'] is None and len(record['hypotheses'] or ()) == len(present[0]):
      record['references'] = present[0]


def references_digest(references: Sequence[str]) -> str:
  return hashlib.sha256('\n'.join(references).encode('utf-8')).hexdigest()


def member_data_config(folder: str) -> Dict[str, Any]:
  """The `data` section of a member's config.json ({} when it is missing or unreadable)."""
  try:
    with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
      data = json.load(f).get('data', {})
  except (OSError, ValueError, AttributeError):
    return {}
  return data if isinstance(data, dict) else {}


def _references_from_data(plan: runner.Plan, records, split: str) -> None:
  """References no member has: read from the data the members' config.json names (an
  archive), checked against the archive's recorded checksum when there is one."""
  missing = [r for r in records if r['references'] is None and r['hypotheses']]
  if not missing:
    return
  data = member_data_config(missing[0]['folder'])
  if data.get('dataset') != 'multi30k' or not os.path.isdir(data.get('raw_dir', '')):
    return
  from transformer_jax.data.sources import multi30k
  _, references = multi30k.load_text_split(data['raw_dir'], split, data['source_lang'],
                                           data['target_lang'])
  path = os.path.join(plan.workdir, runner.SHARED, REFERENCES)
  known = provenance.read(path) or {}
  recorded = known.get(split)
  if recorded and recorded['sha256'] != references_digest(references):
    raise UserError(f'the {split} references in {data["raw_dir"]} differ from those the archive '
                    f'{plan.workdir} was evaluated on (checksum): point data.raw_dir at the '
                    'original data')
  if not recorded:      # an archive from before checksums: record what was used from now on
    known[split] = {'sha256': references_digest(references), 'lines': len(references),
                    'data': {k: data.get(k) for k in ('dataset', 'raw_dir', 'source_lang',
                                                      'target_lang')}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    provenance.write(path, known)
  for record in missing:
    if len(record['hypotheses']) == len(references):
      record['references'] = references
