"""Ablation sweeps: a base experiment, named rows of overrides, seeds; runs, resumes and reports.

  spec.py       Sweep, Row, Budget, Grid (what a sweep file's get_sweep returns)
  loading.py    reading a sweep file; checking every member's config before anything runs
  runner.py     members (row x seed) as launch.py processes: sequential, parallel, one by index
  processes.py  the member processes: start, watch, stop; cores, GPUs and memory fractions
  provenance.py the code, libraries, machine and data each member ran with
  archive.py    finished members' results without checkpoints, to keep and resume elsewhere
  commands.py   what launch.py --sweep does in each mode (list, one member, all, report, archive)
  reporting/    the report: members' records, statistics over seeds and sentences, comparisons,
                curves, tables
"""
from transformer_jax.sweep.spec import Budget
from transformer_jax.sweep.spec import Curves
from transformer_jax.sweep.spec import Grid
from transformer_jax.sweep.spec import Row
from transformer_jax.sweep.spec import Sweep
