"""An error exit ends the process within seconds even when a thread would never end (orbax's,
after a failed write), and exits normally when no such thread is left."""
import subprocess
import sys
import time

STUCK = '''
import threading, time
threading.Thread(target=time.sleep, args=(600,)).start()      # never ends in time
from transformer_jax.base import process_exit
print('error: something went wrong', flush=True)
process_exit.exit_within(2, grace_s=1)
'''

DONE = '''
import threading, time
threading.Thread(target=time.sleep, args=(0.2,)).start()       # ends within the grace period
from transformer_jax.base import process_exit
process_exit.exit_within(3, grace_s=5)
'''


def test_a_thread_that_never_ends_does_not_hold_the_exit():
  began = time.monotonic()
  done = subprocess.run([sys.executable, '-c', STUCK], capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and done.stdout.strip() == 'error: something went wrong'
  assert time.monotonic() - began < 30


def test_threads_that_end_are_waited_for():
  done = subprocess.run([sys.executable, '-c', DONE], capture_output=True, text=True, timeout=60)
  assert done.returncode == 3
