"""Joining a multi-process run (`jax.distributed.initialize`, TOOLCHAIN §12) for --multihost:
it says what it waits for, and gives up with one line where jax would abort the process.

The command line (transformer_jax/cli.py) reads the flags and chooses the collectives; this
module only joins.
"""
import os
import sys
import threading
from typing import Optional

from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.run import exit_codes


def join(coordinator_address: Optional[str], num_processes: Optional[int],
         process_id: Optional[int], timeout_s: int) -> None:
  """Joins the processes at `coordinator_address`; gives up after `timeout_s` seconds.

  jax aborts the whole process (a C++ fatal error, no Python exception) when its own
  initialization timeout passes, so a watchdog thread gives up first with one line (exit 2).

  Args:
    coordinator_address: host:port of process 0; None where the cluster names it (Slurm, TPU).
    num_processes: how many processes join; None where the cluster says.
    process_id: this process's index; None where the cluster says.
    timeout_s: seconds to wait for every process (--multihost_timeout).

  Raises:
    UserError: `timeout_s` is under a second, or jax refused the settings.
  """
  import jax
  if timeout_s < 1:
    raise UserError(f'--multihost_timeout={timeout_s} must be at least 1 second')
  where = coordinator_address or 'the coordinator the cluster names'
  logging.warning('multihost: joining the processes at %s (waiting up to %d s for all of them; '
                  '--multihost_timeout)', where, timeout_s)
  joined = threading.Event()

  def give_up():
    if not joined.wait(timeout_s):
      print(f'error: --multihost: not all {num_processes or ""} processes joined at {where} '
            f'within {timeout_s} s: start every process with the same --coordinator_address '
            'and --num_processes (and its own --process_id), or raise --multihost_timeout',
            file=sys.stderr, flush=True)
      os._exit(exit_codes.USER_ERROR)   # pylint: disable=protected-access  (blocked in C++)

  threading.Thread(target=give_up, daemon=True).start()
  try:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s + 60)
  except (ValueError, RuntimeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise UserError(f'--multihost could not start ({first}): give --coordinator_address=host:port, '
                    '--num_processes and --process_id, or run under a cluster that provides them '
                    '(Slurm, TPU)') from None
  finally:
    joined.set()
