"""Ablation sweeps: a base experiment, named rows of overrides, seeds; runs, resumes and reports.

  spec.py    Sweep and Row (what a sweep file's get_sweep returns), loading and checking one
  runner.py  members (row x seed) as launch.py processes: sequential, parallel, one by index
  report.py  mean +- standard error over seeds, delta vs the baseline, paired significance
  curves.py  the report's line figures: rows against a numeric setting (e.g. d_k)
  commands.py what launch.py --sweep does in each mode (list, one member, all, report, archive)
  archive.py finished members' results without checkpoints, to keep and resume elsewhere
"""
from transformer_jax.sweep.spec import Budget
from transformer_jax.sweep.spec import Curves
from transformer_jax.sweep.spec import Grid
from transformer_jax.sweep.spec import Row
from transformer_jax.sweep.spec import Sweep
