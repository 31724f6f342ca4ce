"""benchmarks/loop_speed.py: the real loop on Multi30k for a few steps prints its JSON report."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow        # a training and a bare-step compile: ~1.5 min on 2 cores
def test_loop_speed_reports_on_a_short_run(shared_data, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)             # the benchmark runs on the real devices
  out = subprocess.run(
      [sys.executable, 'benchmarks/loop_speed.py', '--steps=12', '--steps_per_loop=4',
       '--warmup_steps=4', '--bare_steps=8', '--log_every_steps=4',
       '--checkpoint_every_steps=8', f'--workdir={tmp_path / "run"}',
       f'--experiment.data.raw_dir={shared_data / "multi30k"}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout.strip().splitlines()[-1])
  assert report['calls_by_steps'] == {'4': 2}          # steps 4..12 timed, in calls of 4
  assert report['compile_s_left_out'] == 0             # the program was compiled in warm-up
  assert report['timed_steps'] == 8 and len(report['checkpoint_save_ms']) == 1
  assert report['loop_steps_per_s'] > 0 and report['bare_steps_per_s'] > 0
  assert report['host_ms_per_step'] >= report['dispatch_ms_per_step'] > 0
  assert not (tmp_path / 'run').exists()                # the benchmark cleans up
