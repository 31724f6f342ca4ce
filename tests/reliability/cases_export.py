"""Catalogue cases for exports and load_pretrained: damaged or edited exports (see catalogue.py and runner.py).

No launch.py mode reads an export (load_pretrained is Python only, tested with damaged exports in
export_integrity_test.py), so these are the ways `--mode=export` itself is misused: a target
that holds files (a damaged export included) or is a file, a run that cannot be exported, and a
step that cannot be read. Each must leave the workdir as it was: no export folder and no partial
folder beside it.
"""
from tests.reliability.runner import Case

SMOKE = '--experiment=experiments/copy_task.py:smoke'
SST2 = '--experiment=experiments/sst2_classifier.py:smoke'


def damaged_export_at(relative: str):
  """A half-written params file in {workdir}/<relative>, as a damaged earlier export leaves."""
  def setup(tmp, workdir):
    folder = workdir / relative
    folder.mkdir(parents=True)
    (folder / 'params.safetensors').write_bytes(b'\x08\x10\x00\x00 half a file')
  return setup


def a_file(tmp, workdir):
  (tmp / 'afile').write_text('not a folder\n')


def truncated_checkpoint(tmp, workdir):
  from tests.reliability import catalogue  # pylint: disable=import-outside-toplevel
  catalogue.truncate_arrays(2)(tmp, workdir)          # (catalogue imports this module)


CASES = [
    Case('export_over_a_damaged_export', ['--mode=export'], 'already holds files', workdir='run',
         setup=damaged_export_at('export')),
    Case('export_dir_is_a_file', ['--mode=export', '--export_dir={tmp}/afile'], 'is a file',
         workdir='run', setup=a_file),
    Case('export_without_run', [SMOKE, '--mode=export'], 'no config.json'),
    Case('export_of_a_classifier', [SST2, '--mode=export'], 'neither'),
    Case('export_missing_step', ['--mode=export', '--step=999', '--export_dir={workdir}/out'],
         'no checkpoint step 999', workdir='run'),
    Case('export_damaged_checkpoint', ['--mode=export', '--step=2', '--export_dir={workdir}/out'],
         'checkpoint step 2', workdir='run', setup=truncated_checkpoint),
]
