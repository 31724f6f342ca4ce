"""The member processes of a sweep: starting and watching them, forwarding a stop, reading a
failed attempt's error, and sharing the machine out (cores to pin, GPUs and memory fractions)."""
import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import Dict, List, Optional, Sequence

from transformer_jax.base.errors import UserError


def quoted(words: Sequence[str]) -> List[str]:
  import shlex
  return [shlex.quote(w) for w in words]


def last_error(log_path: str, returncode: int) -> str:
  """The `error:` line of the attempt that just failed (the log holds every attempt, each after
  its `$ command` line), or that attempt's last line (e.g. a traceback's last line)."""
  with open(log_path, encoding='utf-8', errors='replace') as f:
    lines = [line.rstrip('\n') for line in f if line.strip()]
  starts = [i for i, line in enumerate(lines) if line.startswith('$ ')]
  attempt = lines[starts[-1] + 1:] if starts else lines
  errors = [line for line in attempt if line.startswith('error:')]
  return (errors or attempt[-1:] or [f'error: exit code {returncode} with no output'])[-1]


class Stop:
  """A SIGTERM/SIGINT to the sweep: forwarded to running members (which save and stop), and
  no new member starts."""

  def __init__(self):
    self.requested = False
    self.processes = set()
    self.lock = threading.Lock()

  def handle(self, signum, frame):
    del frame
    self.requested = True
    with self.lock:
      for process in self.processes:
        process.send_signal(signum)


def _stop_with_parent():
  """In the child: a SIGTERM when the sweep process dies, even by SIGKILL (Linux), so a
  member saves and stops instead of training on unwatched and holding its workdir's lock."""
  if sys.platform.startswith('linux'):
    import ctypes
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def run(command: List[str], log_path: str, env: Dict[str, str], stop: Stop,
         cores: Optional[Sequence[int]] = None) -> int:
  def in_child():
    _stop_with_parent()
    if cores:
      os.sched_setaffinity(0, cores)
  with open(log_path, 'a', encoding='utf-8') as log:
    log.write(f'\n$ {" ".join(quoted(command))}\n')
    log.flush()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                               stdin=subprocess.DEVNULL, preexec_fn=in_child)
    with stop.lock:
      stop.processes.add(process)
    try:
      return process.wait()
    finally:
      with stop.lock:
        stop.processes.discard(process)


def visible_gpus() -> List[str]:
  """GPU ids to hand out one per member process (empty on a CPU-only machine)."""
  given = os.environ.get('CUDA_VISIBLE_DEVICES')
  if given is not None:
    return [g for g in given.split(',') if g.strip()]
  if shutil.which('nvidia-smi') is None:
    return []
  result = subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True, check=False)
  return [str(i) for i, line in enumerate(result.stdout.splitlines()) if line.startswith('GPU')]


def cpu_shares(parallel: int) -> List[Optional[List[int]]]:
  """The cores each of `parallel` concurrent members may use: disjoint equal shares of
  this process's cores (Linux), or None each (no pinning: one member, or no affinity).

  Pinned, the members do not contend for cores: on the 2-core machine two members on one
  core each trained 0.67 + 0.67 steps/s where one member on both cores trained 1.07. But
  XLA splits its CPU work by the cores it has, which changes float rounding: the Tiny
  model's params after two steps on one core differ from those on two. So pinning is
  asked for (--sweep_pin_cores) and a pinned sweep is resumed pinned.
  """
  if parallel < 2 or not hasattr(os, 'sched_getaffinity'):
    return [None] * parallel
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < parallel:
    return [None] * parallel
  share = len(cores) // parallel
  return [cores[i * share:(i + 1) * share] for i in range(parallel)]


def device_slots(parallel: int, per_device: int, gpus: Sequence[str]) -> List[Dict[str, str]]:
  """The environment changes of each of `parallel` concurrent members: with GPUs, slot i
  runs on GPU i // per_device with 1/per_device of its memory (XLA's memory fraction, 90%
  shared out); without, nothing (CPU members share the cores, or are pinned)."""
  if per_device < 1:
    raise UserError(f'--sweep_per_device={per_device} must be at least 1')
  if not gpus:
    return [{} for _ in range(parallel)]
  if parallel > len(gpus) * per_device:
    raise UserError(f'--sweep_parallel={parallel} but {len(gpus)} GPU(s) with '
                    f'--sweep_per_device={per_device} hold {len(gpus) * per_device} members: '
                    f'give --sweep_parallel={len(gpus) * per_device} or fewer, or a larger '
                    '--sweep_per_device')
  slots = []
  for slot in range(parallel):
    env = {'CUDA_VISIBLE_DEVICES': gpus[slot // per_device]}
    if per_device > 1:
      env.update(XLA_PYTHON_CLIENT_MEM_FRACTION=f'{0.9 / per_device:.3f}')
    slots.append(env)
  return slots
