"""What `launch.py --sweep=...` does: list, run one member, run all (then report), or report.

  python launch.py --sweep=experiments/ablations/table3.py:mini --workdir=runs/t3_mini
  python launch.py --sweep=... --workdir=... --sweep_parallel=2      # two members at a time
  python launch.py --sweep=... --workdir=... --sweep_list            # index, name, status, command
  python launch.py --sweep=... --workdir=... --sweep_member=3        # member 3 only (job arrays)
  python launch.py --sweep=... --workdir=... --mode=report [--experiment.eval.split=test]
  python launch.py --sweep=... --workdir=... --mode=archive --sweep_archive=DIR   # no checkpoints
"""
import os
import sys
from typing import Optional, Sequence

from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.sweep import archive
from transformer_jax.sweep import loading
from transformer_jax.sweep import processes
from transformer_jax.sweep.reporting import records as records_lib
from transformer_jax.sweep.reporting import report
from transformer_jax.sweep import runner


def _split_of(extra: Sequence[str]) -> str:
  chosen = [a.split('=', 1)[1] for a in extra if a.startswith('--experiment.eval.split=')]
  return chosen[-1] if chosen else 'validation'


def _evaluate_split(plan: runner.Plan, split: str) -> None:
  """Evaluates every done member on `split` where that evaluation is missing (test on demand)."""
  for member in plan.sweep.members():
    folder = plan.member_dir(member)
    if runner.status(plan, member) != 'done' or records_lib.eval_files(folder, split):
      continue
    logging.info('evaluating %s on %s', member.name, split)
    command = plan.command(member, 'eval')
    returncode = processes.run(command, os.path.join(folder, 'sweep.log'), dict(os.environ),
                             processes.Stop())
    if returncode != 0:
      raise UserError(f'evaluating {member.name} on {split} failed: see {folder}/sweep.log')


def main(source: str, workdir: Optional[str], mode: str, *, parallel: int,
         pin_cores: bool = False, list_only: bool, member: Optional[int],
         extra: Sequence[str], launcher: Sequence[str], archive_to: Optional[str] = None,
         allow_mixed: bool = False, rerun: Optional[str] = None, per_device: int = 1,
         resamples: int = 10000, also: Sequence[str] = ()) -> None:
  """Checks the whole sweep first (every row's overrides), then does what the flags ask."""
  if not workdir:
    raise UserError('--sweep needs --workdir: the folder that holds the members and the report')
  if mode not in ('train', 'report', 'archive'):
    raise UserError(f'--sweep runs with --mode=train (the default), --mode=report or '
                    f'--mode=archive, not {mode}')
  if (mode == 'archive') != bool(archive_to):
    raise UserError('--mode=archive and --sweep_archive=DIR go together: DIR is the folder '
                    'that receives the done members\' results')
  sweep = loading.load(source, extra)
  plan = runner.Plan(sweep, source, os.path.abspath(workdir), tuple(launcher), tuple(extra),
                     allow_mixed=allow_mixed)
  if list_only:
    for line in runner.listing(plan):
      print(line)
    return
  if rerun and mode != 'train':
    raise UserError('--sweep_rerun runs members again: use it with --mode=train (the default)')
  names = runner.rerun_names(plan, rerun) if rerun else []
  runner.check_unchanged(plan, names)
  if names:
    moved = runner.move_aside(plan, names)
    _log(f'moved {len(moved)} member folder(s) aside to run again: {", ".join(moved)}')
  if member is not None:
    if runner.run_one(plan, member, log=_log) == 'failed':
      name = plan.sweep.members()[member].name
      raise UserError(f'member {member} ({name}) failed: '
                      f'{runner.failure(plan, name).removeprefix("error: ")} (see '
                      f'{os.path.join(plan.member_dir(plan.sweep.members()[member]), "sweep.log")})')
    return
  if mode == 'archive':
    names = archive.write(plan, archive_to)
    _log(f'archived {len(names)} done member(s) of {source} in {os.path.abspath(archive_to)}')
    return
  split = _split_of(extra)
  failed = []
  if mode == 'train':
    results = runner.run_all(plan, parallel, pin_cores=pin_cores, log=_log,
                             per_device=per_device)
    failed = sorted(n for n, s in results.items() if s == 'failed')
  if mode == 'report' or any(s == 'done' for s in runner.statuses(plan).values()):
    if split != 'validation':
      _evaluate_split(plan, split)
    rows = report.write(plan, split, resamples, also)
    _log(f'wrote {os.path.join(plan.workdir, "report.md")} ({len(rows)} rows)')
  if failed:
    raise UserError(f'{len(failed)} member(s) failed: {", ".join(failed[:5])}'
                    f'{" ..." if len(failed) > 5 else ""} (each one\'s error is in its '
                    'failed.txt): fix the cause and run the same command to retry them')


def _log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)
