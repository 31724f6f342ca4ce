"""launch.py --multihost end to end: two launch.py processes on this machine form one JAX
cluster (4 CPU devices each, gloo collectives, a coordinator on 127.0.0.1, TOOLCHAIN §12) and
train the copy-task smoke run as one process with the same 8 devices does.

Compared: the logged train metrics of every step, the validation loss and the final checkpoint's
params, to a relative 1e-5, not bit for bit: the cross-device sums meet in another order (gloo
between the processes, XLA's in-process all-reduce within one), which moves float32 results in
the last bits (measured: grad_norm 1.0215101 against 1.0215100, the losses equal). A wrong split
of the rows or a double count would move them by percents.
"""
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from transformer_jax.base import workdir as workdir_lib
from transformer_jax.pretrained import restored
from transformer_jax.run import defaults as base
from transformer_jax.run import saved_config as run_config
from transformer_jax.train import components

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 4
RUN = ('--experiment=experiments/copy_task.py:smoke', f'--experiment.train.num_steps={STEPS}',
       '--experiment.optim.warmup_steps=2', '--experiment.train.log_every_steps=1',
       f'--experiment.train.eval_every_steps={STEPS}',
       f'--experiment.train.checkpoint_every_steps={STEPS}', '--experiment.eval.bleu=False')
TIMEOUT_S = 480          # the three processes together; each also has --multihost_timeout
TOLERANCE = dict(rtol=1e-5, atol=1e-7)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start(workdir: pathlib.Path, devices: int, *extra: str) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  return subprocess.Popen([sys.executable, 'launch.py', *RUN, f'--workdir={workdir}', *extra],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def finish(processes, timeout_s: float):
  """The output of each process; every one still running at the deadline is killed."""
  deadline = time.monotonic() + timeout_s
  try:
    return [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0] for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.communicate()


def logged(workdir: pathlib.Path):
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return {(row['split'], row['step']): row for row in rows}


def final_params(workdir: pathlib.Path):
  """The params of the newest checkpoint, read as --mode=eval reads them (one process)."""
  config = run_config.from_saved(workdir_lib.load_config(str(workdir)), base.get_base_config())
  parts = components.build(config, str(workdir))
  params, step, _ = restored.restore_params(config, str(workdir), parts, None)
  return params, step


@pytest.mark.slow
def test_two_launch_processes_train_as_one_process_with_eight_devices(tmp_path):
  port = free_port()
  cluster = [start(tmp_path / 'two', 4, '--multihost', f'--coordinator_address=127.0.0.1:{port}',
                   '--num_processes=2', f'--process_id={i}', '--multihost_timeout=240')
             for i in range(2)]
  alone = start(tmp_path / 'one', 8)
  logs = finish([*cluster, alone], TIMEOUT_S)
  for process, log in zip([*cluster, alone], logs):
    assert process.returncode == 0, log[-4000:]
  for i in range(2):
    assert f'process {i}/2, 4 local / 8 global devices' in logs[i], logs[i][-2000:]
  assert 'process 0/1, 8 local / 8 global devices' in logs[2]

  two, one = logged(tmp_path / 'two'), logged(tmp_path / 'one')
  assert sorted(two) == sorted(one)                # process 0 alone writes, once per step
  assert [step for split, step in sorted(two) if split == 'train'] == list(range(1, STEPS + 1))
  for key, expected in one.items():
    for name in ('loss', 'nll', 'accuracy', 'grad_norm', 'param_norm', 'learning_rate',
                 'tokens', 'weight'):
      if name in expected:
        np.testing.assert_allclose(two[key][name], expected[name], **TOLERANCE,
                                   err_msg=f'{key} {name}')

  (params_two, step_two), (params_one, step_one) = (final_params(tmp_path / name)
                                                    for name in ('two', 'one'))
  assert step_two == step_one == STEPS
  flat_two, flat_one = (dict(jax.tree_util.tree_leaves_with_path(p))
                        for p in (params_two, params_one))
  assert flat_two.keys() == flat_one.keys()
  for path, leaf in flat_one.items():
    np.testing.assert_allclose(np.asarray(flat_two[path]), np.asarray(leaf), **TOLERANCE,
                               err_msg=str(path))
