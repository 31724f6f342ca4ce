"""Runs a sweep's members as launch.py processes: one after another, N at once, or one by index.

Each member (row x seed) lives in `<sweep workdir>/<row>_seed<k>/`, an ordinary run folder
with two more files:
  member.json  the row, seed, overrides and the exact commands (written when it starts);
  provenance.json  the code commit (and a hash of uncommitted changes), library versions,
               machine, cores, XLA flags and data checksums it ran with (provenance.py),
               written when it starts and checked when it resumes: a member is finished with
               the code it started with unless --sweep_allow_mixed is given;
  done.json    written only after the member trained to its last step (final checkpoint and
               evaluation) and `--mode=eval` wrote its averaged validation result;
  failed.txt   the one-line error of the last failed attempt (removed when it succeeds).
Running the sweep again skips done members and resumes the others from their own checkpoints,
so a killed sweep loses at most the steps since each member's last checkpoint. Members share
the prepared data and tokenizers under `<sweep workdir>/shared/` (the data modules lock their
preparation, so concurrent members never write the same files at once).

A member's commands are plain launch.py lines (`--sweep_list` prints them), so a cluster's job
array can run members with no code of ours in between (`--sweep_member=K`).
"""
import concurrent.futures
import dataclasses
import json
import os
import queue
import signal
import threading
import time
from typing import Dict, List, Optional, Sequence

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.sweep import loading
from transformer_jax.sweep import processes
from transformer_jax.sweep import provenance
from transformer_jax.sweep import spec
from transformer_jax.train import early_stop

DONE, FAILED, MEMBER, PROVENANCE = 'done.json', 'failed.txt', 'member.json', 'provenance.json'
SHARED = 'shared'


@dataclasses.dataclass(frozen=True)
class Plan:
  """Where a sweep runs and how its members are launched.

  Attributes:
    sweep: the loaded sweep.
    source: the sweep file as given (`path[:variant]`), for messages and records.
    workdir: the sweep's folder.
    launcher: the command that starts launch.py, e.g. [sys.executable, '/repo/launch.py'].
    extra: extra `--experiment.x=y` flags given on the command line, applied to every member.
    allow_mixed: resume members with other code or libraries than they started with
      (--sweep_allow_mixed; their provenance.json records it).
  """
  sweep: spec.Sweep
  source: str
  workdir: str
  launcher: Sequence[str]
  extra: Sequence[str] = ()
  allow_mixed: bool = False

  def repo_dir(self) -> str:
    """The checkout whose code the members run (launch.py's folder), for provenance."""
    script = next((w for w in reversed(self.launcher) if w.endswith('.py')), None)
    return os.path.dirname(os.path.abspath(script)) if script else os.getcwd()

  def member_dir(self, member: spec.Member) -> str:
    return os.path.join(self.workdir, member.name)

  def command(self, member: spec.Member, mode: str = 'train') -> List[str]:
    """The exact launch.py command of one member (train, or eval for its final result)."""
    shared = os.path.join(self.workdir, SHARED)
    overrides = loading.member_overrides(self.sweep, member)
    overrides.update({'data.data_dir': os.path.join(shared, 'tfds'),
                      'data.tokenizer_dir': os.path.join(shared, 'tokenizer')})
    flags = [f'--experiment.{k}={spec.flag_value(v)}' for k, v in overrides.items()]
    # A split asked for on the command line is for the final evaluation (the report's), never
    # for the periodic evaluations during training.
    extra = [a for a in self.extra if mode == 'eval' or not a.startswith('--experiment.eval.split=')]
    return [*self.launcher, f'--experiment={self.sweep.experiment}', *flags, *extra,
            f'--workdir={self.member_dir(member)}', f'--mode={mode}']


def status(plan: Plan, member: spec.Member) -> str:
  """'done', 'running' (another process trains it), 'failed', 'started' (has a checkpoint,
  not done) or 'pending'."""
  folder = plan.member_dir(member)
  if os.path.exists(os.path.join(folder, DONE)):
    return 'done'
  if workdir_lib.lock_holder(folder):
    return 'running'
  if os.path.exists(os.path.join(folder, FAILED)):
    return 'failed'
  if os.path.isdir(os.path.join(folder, 'checkpoints')):
    return 'started'
  return 'pending'


def changed_members(plan: Plan) -> List[str]:
  """Members whose folder records other overrides than the sweep file gives them now (a row
  edited after they ran), as 'name (what changed)'."""
  changed = []
  for member in plan.sweep.members():
    path = os.path.join(plan.member_dir(member), MEMBER)
    recorded = provenance.read(path)
    if recorded is None or 'overrides' not in recorded:
      continue
    now = json.loads(json.dumps(loading.member_overrides(plan.sweep, member)))
    if recorded['overrides'] != now:
      keys = sorted(k for k in set(now) | set(recorded['overrides'])
                    if now.get(k) != recorded['overrides'].get(k))
      shown = ', '.join(f'{k}: {recorded["overrides"].get(k)!r} -> {now.get(k)!r}' for k in keys[:3])
      changed.append(f'{member.name} ({shown})')
  return changed


def check_unchanged(plan: Plan, rerun: Sequence[str] = ()) -> None:
  """Refuses a sweep whose rows changed under members that already ran: their results would
  be reported under settings they were not trained with."""
  changed = [c for c in changed_members(plan) if c.split(' ', 1)[0] not in rerun]
  if changed:
    raise UserError(f'{len(changed)} member(s) ran with other overrides than the sweep file '
                    f'now gives them: {"; ".join(changed[:3])}: restore the row, or run them '
                    f'again with --sweep_rerun={",".join(c.split(" ", 1)[0] for c in changed)}')


def move_aside(plan: Plan, names: Sequence[str]) -> List[str]:
  """Moves the named members' folders to `<name>.old-<time>` (never deleted) so they run
  again from scratch; returns the new paths."""
  moved = []
  stamp = time.strftime('%Y%m%d-%H%M%S')
  for name in names:
    folder = os.path.join(plan.workdir, name)
    if not os.path.isdir(folder):
      continue
    if workdir_lib.lock_holder(folder):
      raise UserError(f'--sweep_rerun: {name} is running (process {workdir_lib.lock_holder(folder)}):'
                      ' stop it first')
    target = f'{folder}.old-{stamp}'
    os.rename(folder, target)
    moved.append(target)
  return moved


def rerun_names(plan: Plan, given: str) -> List[str]:
  """The members `--sweep_rerun` names (indices or names, comma separated)."""
  members = plan.sweep.members()
  by_name = {m.name: m for m in members}
  names = []
  for item in (i.strip() for i in given.split(',') if i.strip()):
    if item.isdigit() and int(item) < len(members):
      names.append(members[int(item)].name)
    elif item in by_name:
      names.append(item)
    else:
      raise UserError(f'--sweep_rerun: {item!r} is not a member of {plan.source}: give an index '
                      f'0-{len(members) - 1} or a name (see --sweep_list)')
  return names


def listing(plan: Plan) -> List[str]:
  """One line per member: index, name, status and the exact command."""
  return [f'{m.index}\t{m.name}\t{status(plan, m)}\t' + ' '.join(processes.quoted(plan.command(m)))
          for m in plan.sweep.members()]


def run_member(plan: Plan, member: spec.Member, env: Optional[Dict[str, str]] = None,
               stop: Optional[processes.Stop] = None, cores: Optional[Sequence[int]] = None) -> str:
  """Trains and evaluates one member unless done; returns its status afterwards.

  `cores`: the CPU cores its processes may run on (None: all).
  """
  stop = stop or processes.Stop()
  folder = plan.member_dir(member)
  if status(plan, member) in ('done', 'running'):   # running: another sweep process has it
    return status(plan, member)
  env = dict(os.environ if env is None else env)
  config = loading.resolved_config(plan.sweep, member)
  num_steps = config.train.num_steps
  record_path = os.path.join(folder, PROVENANCE)
  current = provenance.collect(repo_dir=plan.repo_dir(), data_paths=data_paths(config),
                               cores=cores, env=env)
  mixed = provenance.check_resume(record_path, current, plan.allow_mixed)   # before any write
  os.makedirs(folder, exist_ok=True)
  _record_provenance(record_path, current, mixed)
  os.makedirs(os.path.join(plan.workdir, SHARED), exist_ok=True)
  record = {'sweep': plan.source, 'row': member.row.name, 'seed': member.seed,
            'overrides': loading.member_overrides(plan.sweep, member),
            'train': plan.command(member), 'eval': plan.command(member, 'eval')}
  _write_json(os.path.join(folder, MEMBER), record)
  log = os.path.join(folder, 'sweep.log')
  for mode in ('train', 'eval'):
    returncode = processes.run(plan.command(member, mode), log, env, stop, cores)
    if stop.requested:
      return status(plan, member)
    if returncode != 0:
      _write_text(os.path.join(folder, FAILED), processes.last_error(log, returncode) + '\n')
      return 'failed'
    if mode == 'train' and early_stop.finished_step(folder, num_steps) is None:
      _write_text(os.path.join(folder, FAILED),
                  f'error: training stopped before step {num_steps} (see {log})\n')
      return 'failed'
  if os.path.exists(os.path.join(folder, FAILED)):
    os.remove(os.path.join(folder, FAILED))
  finished = provenance.finish(record_path) or {}
  finished['tokenizer'] = provenance.checksum_paths(
      [os.path.join(plan.workdir, SHARED, 'tokenizer')])
  provenance.write(record_path, finished)
  _write_json(os.path.join(folder, DONE), {'finished': time.time(),
                                           'steps': early_stop.finished_step(folder, num_steps)})
  return 'done'


def data_paths(config) -> List[str]:
  """The raw data a member reads (made-up copy-task data has none to checksum)."""
  raw_dir = config.data.get('raw_dir', '')
  if config.data.get('dataset') in ('copy', 'reverse') or not raw_dir:
    return []
  return [os.path.abspath(raw_dir)]


def _record_provenance(path: str, current, mixed: Sequence[str]) -> None:
  """Writes the member's first provenance record; a resume with other code (allowed by
  --sweep_allow_mixed) is added to it as `resumed_with`."""
  old = provenance.read(path)
  if old is None:
    provenance.write(path, current)
  elif mixed:
    old.setdefault('resumed_with', []).append(
        {'label': provenance.label(current), 'differences': list(mixed),
         'started_utc': current['started_utc'], 'code': current['code'],
         'libraries': current['libraries']})
    provenance.write(path, old)


def _write_json(path: str, value) -> None:
  _write_text(path, json.dumps(value, indent=2) + '\n')


def _write_text(path: str, text: str) -> None:
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def run_all(plan: Plan, parallel: int = 1, log=print, pin_cores: bool = False,
            per_device: int = 1) -> Dict[str, str]:
  """Runs every member that is not done, `parallel` at a time; returns {name: status}.

  With GPUs, concurrent members share them `per_device` to a GPU (`device_slots`); on a CPU
  the members share all cores. With `pin_cores` each member also gets its own share of the
  cores (`cpu_shares`), with or without GPUs.
  """
  if parallel < 1:
    raise UserError(f'--sweep_parallel={parallel} must be at least 1')
  gpus = processes.visible_gpus()
  slots = processes.device_slots(parallel, per_device, gpus)
  lock, unlocked_log = threading.Lock(), log

  def log(line):                     # concurrent members: one whole line at a time
    with lock:
      unlocked_log(line)

  free = queue.Queue()
  shares = processes.cpu_shares(parallel) if pin_cores else [None] * parallel
  for slot in range(parallel):
    free.put((slots[slot], shares[slot]))
  members = plan.sweep.members()
  results = {m.name: status(plan, m) for m in members}
  todo = [m for m in members if results[m.name] != 'done']
  log(f'sweep {plan.source}: {len(members)} members, {len(members) - len(todo)} done, '
      f'{len(todo)} to run, {parallel} at a time, in {plan.workdir}')
  stop = processes.Stop()
  previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
  started = time.time()

  def one(member):
    if stop.requested:
      return member, status(plan, member)
    device_env, cores = slot = free.get()
    try:
      env = {**os.environ, **device_env}
      where = f' on cores {cores[0]}-{cores[-1]}' if cores else ''
      if device_env.get('CUDA_VISIBLE_DEVICES'):
        where += f' on GPU {device_env["CUDA_VISIBLE_DEVICES"]}'
      log(f'[{member.index}] {member.name}: {status(plan, member)} -> running{where}')
      began = time.time()
      result = run_member(plan, member, env, stop, cores)
      log(f'[{member.index}] {member.name}: {result} after {(time.time() - began) / 60:.1f} min')
      return member, result
    finally:
      free.put(slot)

  try:
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
      for member, result in pool.map(one, todo):
        results[member.name] = result
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  failed = {n: failure(plan, n) for n, s in results.items() if s == 'failed'}
  done = sum(s == 'done' for s in results.values())
  log(f'sweep {plan.source}: {done}/{len(members)} done in {(time.time() - started) / 60:.1f} min'
      + ('; failed: ' + '; '.join(f'{n} ({e})' for n, e in failed.items()) if failed else '')
      + ('; stopped by a signal (run the same command to resume)' if stop.requested else ''))
  return results


def statuses(plan: Plan) -> Dict[str, str]:
  """{member name: status} of every member."""
  return {m.name: status(plan, m) for m in plan.sweep.members()}


def failure(plan: Plan, name: str) -> str:
  path = os.path.join(plan.workdir, name, FAILED)
  with open(path, encoding='utf-8') as f:
    return f.read().strip()


def run_one(plan: Plan, index: int, log=print) -> str:
  """Runs member `index` only (for a cluster's job array)."""
  members = plan.sweep.members()
  if not 0 <= index < len(members):
    raise UserError(f'--sweep_member={index} is out of range: this sweep has members 0 to '
                    f'{len(members) - 1} (see --sweep_list)')
  member = members[index]
  stop = processes.Stop()
  previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    result = run_member(plan, member, stop=stop)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
  log(f'[{index}] {member.name}: {result}')
  return result
