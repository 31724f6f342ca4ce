"""A sweep's results without its checkpoints: a small folder to keep, move or commit.

  python launch.py --sweep=experiments/ablations/table3.py:mini --workdir=runs/t3_mini \
      --mode=archive --sweep_archive=results/t3_mini

copies, for every done member, what the report reads and what records how the member ran
(member.json, done.json, config.json, metrics.jsonl, sweep.log and its evaluations, with the
hypotheses), and the sweep's shared tokenizers, into `<archive>/<member>/` and
`<archive>/shared/tokenizer/`: about 0.2 MB a translation member, where its checkpoints take
70 MB. The references (`*.ref.txt`) stay behind: they are the data set's own sentences, which
a results folder meant to be shared or committed must not carry. Their checksum, line count
and the data settings that find them go to `<archive>/shared/references.json`; the report
reads them again from the raw data the members' config names and checks the checksum, so
every p-value can be recomputed from the archive and the public data. Members already in the
archive are updated, none is removed, so archiving after every sitting gathers a long sweep.

The archive is itself a sweep folder:
  --mode=report --workdir=<archive>      reports from it, with no checkpoint present (the
                                         p-values only where references are there too);
  cp -r <archive>/. runs/t3_mini/        resumes the sweep on another machine: its members are
                                         done there, and later members use the same tokenizer
                                         (the data is prepared again from the raw files).
"""
import glob
import os
import shutil
from typing import List

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.sweep import provenance
from transformer_jax.sweep.reporting import records as records_lib
from transformer_jax.sweep import runner
from transformer_jax.train import early_stop

# What a done member's folder keeps besides checkpoints, lock and TensorBoard events.
# done.json goes last, so a copy cut short never looks done.
MEMBER_FILES = (runner.MEMBER, runner.PROVENANCE, workdir_lib.CONFIG_FILE, 'metrics.jsonl',
                'sweep.log', early_stop.MARKER, runner.DONE)
MEMBER_FOLDERS = ('eval',)
LEFT_BEHIND = ('*.ref.txt',)
SHARED_FOLDERS = ('tokenizer',)


def _record_references(plan: runner.Plan, done, destination: str) -> None:
  """shared/references.json: per split, the checksum and line count of the references the
  members were scored against and the data settings that find them again, so the report can
  recompute every p-value from the archive and the raw data (records.py in sweep/reporting)."""
  path = os.path.join(destination, runner.SHARED, records_lib.REFERENCES)
  recorded = provenance.read(path) or {}
  for member in done:
    folder = plan.member_dir(member)
    for ref in glob.glob(os.path.join(folder, 'eval', '*_step*.ref.txt')):
      split = os.path.basename(ref).split('_step', 1)[0]
      if split in recorded:
        continue
      with open(ref, encoding='utf-8') as f:
        lines = [line.rstrip('\n') for line in f]
      data = records_lib.member_data_config(folder)
      recorded[split] = {'sha256': records_lib.references_digest(lines), 'lines': len(lines),
                         'data': {k: data.get(k) for k in ('dataset', 'raw_dir', 'source_lang',
                                                           'target_lang')}}
  if recorded:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    provenance.write(path, recorded)


def write(plan: runner.Plan, destination: str) -> List[str]:
  """Copies every done member's results into `destination`; returns the members copied."""
  destination = os.path.abspath(destination)
  if os.path.lexists(destination) and not os.path.isdir(destination):
    raise UserError(f'--sweep_archive={destination} is a file, not a folder: give a folder '
                    '(new, or an earlier archive of this sweep)')
  if destination == plan.workdir:
    raise UserError(f'--sweep_archive={destination} is the sweep\'s own workdir: give another '
                    'folder')
  done = [m for m in plan.sweep.members() if runner.status(plan, m) == 'done']
  if not done:
    raise UserError(f'no member of {plan.source} in {plan.workdir} is done yet: nothing to '
                    'archive')
  for member in done:
    source, target = plan.member_dir(member), os.path.join(destination, member.name)
    os.makedirs(target, exist_ok=True)
    for name in MEMBER_FOLDERS:
      if os.path.isdir(os.path.join(source, name)):
        shutil.copytree(os.path.join(source, name), os.path.join(target, name),
                        dirs_exist_ok=True, ignore=shutil.ignore_patterns(*LEFT_BEHIND))
    for name in MEMBER_FILES:
      if os.path.exists(os.path.join(source, name)):
        shutil.copy2(os.path.join(source, name), os.path.join(target, name))
  _record_references(plan, done, destination)
  for name in SHARED_FOLDERS:
    shared = os.path.join(plan.workdir, runner.SHARED, name)
    if os.path.isdir(shared):
      shutil.copytree(shared, os.path.join(destination, runner.SHARED, name),
                      dirs_exist_ok=True)
  return [m.name for m in done]
