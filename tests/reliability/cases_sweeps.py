"""Catalogue cases for sweep files and sweep folders: a get_sweep that returns something else
or exits, repeated seeds, an archive target that is a file (see catalogue.py and runner.py;
tests/sweep/sweep_report_test.py covers failed members, changed rows and damaged evaluations)."""
from tests.reliability.runner import Case

T3_MINI = '--sweep=experiments/ablations/table3.py:mini'


def _sweep_file(text: str):
  def setup(tmp, workdir):
    (tmp / 'sweep.py').write_text(text)
  return setup


_HEADER = 'from transformer_jax.sweep import Row, Sweep\n'
_ROWS = "[Row('base'), Row('wide', {'model.mlp_dim': 48})]"

CASES = [
    Case('sweep_get_sweep_returns_a_dict', ['--sweep={tmp}/sweep.py'],
         'get_sweep() returned dict, not a Sweep',
         setup=_sweep_file('def get_sweep(arg=None):\n  return {"rows": []}\n')),
    Case('sweep_file_exits', ['--sweep={tmp}/sweep.py'], 'SystemExit',
         setup=_sweep_file('import sys\nsys.exit(0)\n')),
    Case('sweep_repeated_seeds', ['--sweep={tmp}/sweep.py'], "row 'base' repeats a seed",
         setup=_sweep_file(_HEADER + 'def get_sweep(arg=None):\n'
                           f"  return Sweep('experiments/copy_task.py:smoke', {_ROWS}, 'base',"
                           ' seeds=(0, 0))\n')),
    Case('sweep_compares_an_unknown_row', ['--sweep={tmp}/sweep.py'], 'compare entry',
         setup=_sweep_file(_HEADER + 'def get_sweep(arg=None):\n'
                           f"  return Sweep('experiments/copy_task.py:smoke', {_ROWS}, 'base',"
                           " compare=[('base', 'nope')])\n")),
    Case('sweep_archive_to_a_file', [T3_MINI, '--mode=archive', '--sweep_archive={tmp}/afile'],
         'is a file, not a folder',
         setup=lambda tmp, workdir: (tmp / 'afile').write_text('not a folder\n')),
    Case('sweep_rerun_unknown_member', [T3_MINI, '--sweep_rerun=nobody'],
         "'nobody' is not a member"),
    Case('sweep_resamples_too_few', [T3_MINI, '--mode=report', '--sweep_resamples=10'],
         '--sweep_resamples=10 is too few'),
]
