"""Checks a command passes before it loads anything: flags that go together (each mode's, a
sweep's, --multihost's), a standard input that is there to read, and settings this machine can
run (cuDNN attention).

Flag names come in as plain strings (`given`: the flags on the command line, a boolean only
when switched on): the command line (transformer_jax/cli.py) reads the flags, this module only
knows which go together. A flag one command would ignore is an error, not a silent no-op.
Nothing here imports jax.
"""
import os
import sys
from typing import AbstractSet

from transformer_jax.base.errors import UserError

# The modes that use each flag that not every mode uses (--workdir, --experiment and
# --print_config apply to all). Keep it in step with cli.dispatch (and modes.py): a flag is
# listed for a mode that reads it.
FLAG_MODES = {
    'step': ('eval', 'translate', 'sample', 'visualize', 'export'),
    'input': ('translate', 'sample', 'visualize'),
    'buffer_lines': ('translate',),
    'export_dir': ('export',),
    'multihost': ('train', 'eval'),    # the others refuse more than one process
}
# Flags that only tune --multihost.
MULTIHOST_FLAGS = ('coordinator_address', 'num_processes', 'process_id', 'multihost_timeout')
# Flags of one run that a sweep has no use for: its members get theirs from the sweep file.
RUN_ONLY_FLAGS = ('step', 'input', 'print_config', 'buffer_lines', 'export_dir', 'multihost',
                  *MULTIHOST_FLAGS)
SWEEP_ONLY_FLAGS = ('sweep_parallel', 'sweep_pin_cores', 'sweep_list', 'sweep_member',
                    'sweep_archive', 'sweep_allow_mixed', 'sweep_rerun', 'sweep_per_device',
                    'sweep_resamples', 'sweep_also')


def check_mode_flags(mode: str, given: AbstractSet[str], input_path: str) -> None:
  """Refuses a flag that `mode` would ignore (FLAG_MODES, MULTIHOST_FLAGS) and reading a closed
  standard input.

  Args:
    mode: the value of --mode.
    given: names of the flags on the command line (a boolean only when switched on).
    input_path: the value of --input ('-' for standard input).

  Raises:
    UserError: naming the flag and the fix.
  """
  for name, users in FLAG_MODES.items():
    if name in given and mode not in users:
      raise UserError(f'--{name} does not apply to --mode={mode}: it is for --mode='
                      f'{"|".join(users)} only; drop it, or give the mode that uses it')
  if 'multihost' not in given:
    for name in MULTIHOST_FLAGS:
      if name in given:
        raise UserError(f'--{name} only applies to --multihost: add --multihost to join a '
                        f'multi-process run, or drop --{name}')
  if mode == 'translate' and 'buffer_lines' in given and input_path != '-':
    raise UserError(f'--buffer_lines applies to standard input only: --input={input_path} is '
                    'a file and is translated whole; drop --buffer_lines')
  reads_stdin = input_path == '-' and (mode == 'translate' or 'input' in given)
  if reads_stdin and mode in FLAG_MODES['input'] and stdin_is_closed():
    raise UserError(f'--mode={mode} reads standard input, but it is closed: give --input=FILE, '
                    'or pipe the lines in (e.g. `< lines.txt` or `cat lines.txt |`)')


def check_sweep_flags(given: AbstractSet[str]) -> None:
  """Refuses sweep flags without --sweep, and flags of one run (or --experiment) with it.

  Args:
    given: names of the flags on the command line (a boolean only when switched on).

  Raises:
    UserError: naming the flag and the fix.
  """
  if 'sweep' not in given:
    for name in SWEEP_ONLY_FLAGS:
      if name in given:
        raise UserError(f'--{name} needs --sweep=experiments/ablations/<name>.py: it only '
                        'applies to a sweep')
    return
  if 'experiment' in given:
    raise UserError('--experiment does not go with --sweep: the sweep file names its base '
                    'experiment; change its fields for every member with '
                    '--experiment.<section>.<field>=<value>')
  for name in RUN_ONLY_FLAGS:
    if name in given:
      raise UserError(f'--{name} does not apply to --sweep: run it on one member\'s folder '
                      '(<workdir>/<row>_seed<k>) without --sweep')
  if 'sweep_member' in given and given & {'sweep_parallel', 'sweep_list'}:
    other = '--sweep_parallel' if 'sweep_parallel' in given else '--sweep_list'
    raise UserError(f'--sweep_member and {other} do not go together: --sweep_member runs one '
                    'member; drop one of them')


def stdin_is_closed() -> bool:
  """Whether there is no standard input at all (`<&-` in a shell, a daemon): not an empty one
  (/dev/null), which simply ends at once."""
  if sys.stdin is None or sys.stdin.closed:
    return True
  try:
    fd = sys.stdin.fileno()
  except (AttributeError, OSError, ValueError):     # a StringIO (tests): not closed
    return False
  try:
    os.fstat(fd)
  except OSError:
    return True
  return False


def check_attention_impl(config, mode: str, backend: str) -> None:
  """model.attention_impl='cudnn' needs a GPU and bfloat16/float16: refused before the mode
  writes anything (a run trained with it is refused where it cannot be evaluated, too).

  Args:
    config: the command's config (a ConfigDict or dict with a `model` section).
    mode: the value of --mode (the fix differs for a trained run).
    backend: jax.default_backend(), e.g. 'cpu' or 'gpu'.

  Raises:
    UserError: naming the setting and the fix.
  """
  model = config.get('model', {})
  if model.get('attention_impl') != 'cudnn':
    return
  fix = ('set --experiment.model.attention_impl=auto (cuDNN where it applies, else explicit) '
         'or xla' if mode == 'train' else
         'run it on a machine with a GPU (model settings cannot change after training)')
  if backend != 'gpu':
    raise UserError(f"model.attention_impl='cudnn' needs a GPU (cuDNN flash attention), and "
                    f'JAX runs on {backend} here: {fix}')
  if model.get('dtype') not in ('bfloat16', 'float16'):
    raise UserError(f"model.attention_impl='cudnn' needs model.dtype=bfloat16 (cuDNN flash "
                    f"attention takes no {model.get('dtype')}): set "
                    '--experiment.model.dtype=bfloat16, or model.attention_impl=auto')
