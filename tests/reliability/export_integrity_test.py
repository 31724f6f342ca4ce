"""Exports verified at load: a damaged or edited export is one UserError naming the file (or the
model.json field) and the fix, an undamaged copy still translates as the export does, and the
partial folders of killed exports are removed by the next export.

One copy-task smoke run (launch.py, about 20 s on 2 cores) is exported once per module by
launch.py; each test damages a copy of that export. The sentencepiece cases use an export that
export.write makes in-process from the same params with a tiny sentencepiece model (the copy
task has no tokenizer.model), so no sentencepiece run is trained. The cases of exports from
before checksums turn a copy into such an export of FORMAT 1 (params.npz, `legacy`).
"""
import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest
from safetensors import flax as safetensors_flax

import transformer_jax
from transformer_jax.base.errors import UserError
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.pretrained import export
from transformer_jax.pretrained import layout
from transformer_jax.pretrained import verification

REPO = pathlib.Path(__file__).resolve().parents[2]
LINES = ['5 6 7', '9 8', '4 4 5 6 7 8', '12 3 7 7 8 9 10 11']
SP_LINES = ['ab ba abab', 'baba ab', 'aab bba']


def launch(*args, timeout=600):
  env = dict(os.environ, PYTHONUNBUFFERED='1')    # keeps conftest's 8 host devices
  result = subprocess.run([sys.executable, 'launch.py', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def dead_pid() -> int:
  """The pid of a process that has exited (and been reaped)."""
  child = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                         capture_output=True, text=True, check=True)
  return int(child.stdout)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  folder = tmp_path_factory.mktemp('export_integrity') / 'run'
  launch('--experiment=experiments/copy_task.py:smoke', f'--workdir={folder}')
  return folder


@pytest.fixture(scope='module')
def exported(trained):
  launch(f'--workdir={trained}', '--mode=export', timeout=300)
  return trained / 'export'


@pytest.fixture(scope='module')
def translations(exported):
  return transformer_jax.load_pretrained(exported).translate(LINES)


@pytest.fixture(scope='module')
def sp_export(exported, tmp_path_factory):
  """An export with a sentencepiece tokenizer.model, written by export.write."""
  folder = tmp_path_factory.mktemp('sp_export')
  tokenizer = tokenizer_lib.train_tokenizer(SP_LINES * 50, 12, 'bpe', str(folder / 'spm'))
  model = transformer_jax.load_pretrained(exported)
  run = json.loads((exported / layout.RUN_FILE).read_text())
  config = ml_collections.ConfigDict({'data': run['data'], 'decode': run['decode']})
  parts = dataclasses.replace(model._parts, tokenizer=tokenizer)
  export.write(str(folder / 'export'), parts, model.params, config, run['source'])
  return folder / 'export'


def copy_of(export_dir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(export_dir, tmp_path / 'export'))


def legacy(folder: pathlib.Path) -> pathlib.Path:
  """`folder` as FORMAT 1 exports were before checksums: params.npz (float32 arrays by path),
  model.json and run.json of format 1, run.json without its checksums entry."""
  params = safetensors_flax.load_file(folder / 'params.safetensors')
  np.savez(folder / 'params.npz', **{name: np.asarray(value, np.float32)
                                     for name, value in params.items()})
  (folder / 'params.safetensors').unlink()
  model = json.loads((folder / layout.MODEL_FILE).read_text())
  model = {'format': 1, 'family': model['family'], 'config': model['config']}
  (folder / layout.MODEL_FILE).write_text(json.dumps(model, indent=2))
  run = json.loads((folder / layout.RUN_FILE).read_text())
  del run[layout.CHECKSUMS]
  run['format'] = 1
  (folder / layout.RUN_FILE).write_text(json.dumps(run, indent=2))
  return folder


def refused(folder: pathlib.Path, match: str, workdir=None) -> str:
  """The one-line UserError message load_pretrained gives, checked to name the fix."""
  with pytest.raises(UserError, match=match) as info:
    transformer_jax.load_pretrained(folder)
  message = str(info.value)
  assert '\n' not in message, message
  if workdir is not None:
    assert f'python launch.py --mode=export --workdir={workdir}' in message, message
  return message


# --- damage -----------------------------------------------------------------------------------

def truncate(name):
  def damage(folder):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[:len(data) // 2])
  return damage


def flip_byte(name, offset=None):
  """Flips every bit of the byte at `offset` (default: the middle of the file)."""
  def damage(folder):
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    (folder / name).write_bytes(bytes(data))
  return damage


def write(name, content: bytes):
  def damage(folder):
    (folder / name).write_bytes(content)
  return damage


def remove(name):
  def damage(folder):
    (folder / name).unlink()
  return damage


def rename(name, new_name):
  def damage(folder):
    (folder / name).rename(folder / new_name)
  return damage


def edit_json(name, edit):
  def damage(folder):
    content = json.loads((folder / name).read_text())
    edit(content)
    (folder / name).write_text(json.dumps(content, indent=2))
  return damage


def set_field(section, field, value):
  def edit(content):
    content[section][field] = value
  return edit


def drop_field(section, field):
  def edit(content):
    del content[section][field]
  return edit


DAMAGES = [
    ('params_truncated', truncate('params.safetensors'),
     r'params\.safetensors cannot be read \(.*the export wrote \d+\): it is truncated or '
     r'damaged'),
    ('params_emptied', write('params.safetensors', b''), r'params\.safetensors cannot be read'),
    ('params_header_byte_flipped', flip_byte('params.safetensors', 10),   # in its JSON header
     r'params\.safetensors cannot be read \(Error while deserializing header'),
    # A byte of a tensor's data, which safetensors never checks: only the export's checksum sees it.
    ('params_data_byte_flipped', flip_byte('params.safetensors'),
     r'params\.safetensors is damaged \(its bytes differ from the checksum recorded in '
     r'run\.json\)'),
    ('params_renamed', rename('params.safetensors', 'params.npz'),       # the old file name
     r'params\.safetensors is missing'),
    ('run_json_a_list', write('run.json', b'[1, 2]\n'), r'run\.json holds a JSON list, not'),
    ('run_json_not_json', write('run.json', b'{"format": 2,'), r'run\.json is not valid JSON'),
    ('run_json_edited', edit_json('run.json', set_field('decode', 'beam_size', 9)),
     r'run\.json was changed after the export'),
    ('run_json_checksums_damaged',
     edit_json('run.json', set_field('checksums', 'model', {'family': 'lm'})),
     r"run\.json: its 'checksums' entry is damaged"),
    ('model_json_edited', edit_json('model.json', set_field('config', 'positional', 'none')),
     r"model\.json: positional is 'none' but the exported params were trained with "
     r"'sinusoidal': set it back"),
    ('model_json_field_removed', edit_json('model.json', drop_field('config', 'positional')),
     r"model\.json: positional is missing but the exported params were trained with "
     r"'sinusoidal'"),
    ('model_json_family_changed', edit_json('model.json', lambda m: m.update(family='lm')),
     r"model\.json: family is 'lm' but the exported params were trained with 'transformer'"),
    ('model_json_not_json', write('model.json', b'{"format": 2, "family": '),
     r'model\.json is not valid JSON'),
    ('model_json_a_string', write('model.json', b'"transformer"'),
     r'model\.json holds a JSON str, not'),
    ('model_json_versions_edited',
     edit_json('model.json', lambda m: m['versions'].update(jax='0.0.1')),
     r'model\.json was changed after the export \(its content differs from the checksum'),
    ('run_json_checksums_dropped', edit_json('run.json', lambda r: r.pop('checksums')),
     r"run\.json has no 'checksums' entry, which every export of format 2 records"),
    ('run_json_params_checksum_dropped',
     edit_json('run.json', lambda r: r['checksums']['files'].pop('params.safetensors')),
     r"run\.json: its 'checksums' entry is damaged"),
]


@pytest.mark.parametrize('name,damage,match', DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_export_is_one_user_error_naming_the_file(name, damage, match, exported,
                                                            trained, tmp_path):
  folder = copy_of(exported, tmp_path)
  damage(folder)
  if name not in ('run_json_a_list', 'run_json_not_json'):
    refused(folder, match, workdir=trained)
  else:        # run.json cannot say which run: the folder holding the export, when it is a run
    refused(folder, match, workdir='<run>')
    inside = trained / 'damaged_export'
    shutil.copytree(folder, inside)
    try:
      refused(inside, match, workdir=trained)
    finally:
      shutil.rmtree(inside)


LEGACY_DAMAGES = [
    ('params_truncated', truncate('params.npz'), r'params\.npz cannot be read'),
    ('run_json_a_list', write('run.json', b'[1, 2]\n'), r'run\.json holds a JSON list'),
    ('model_json_not_json', write('model.json', b'{'), r'model\.json is not valid JSON'),
    ('model_json_config_a_list', edit_json('model.json', lambda m: m.update(config=[1])),
     r'model\.json does not describe a model'),
    ('run_json_without_decode', edit_json('run.json', lambda r: r.pop('decode')),
     r"run\.json has no 'decode' object"),
]


def test_an_export_from_before_checksums_still_loads(exported, translations, tmp_path):
  folder = legacy(copy_of(exported, tmp_path))
  assert transformer_jax.load_pretrained(folder).translate(LINES) == translations


@pytest.mark.parametrize('name,damage,match', LEGACY_DAMAGES, ids=[d[0] for d in LEGACY_DAMAGES])
def test_damage_to_an_export_from_before_checksums_is_still_named(name, damage, match, exported,
                                                                  tmp_path):
  folder = legacy(copy_of(exported, tmp_path))
  damage(folder)
  refused(folder, match)


def test_the_export_records_checksums_and_keeps_its_layout(exported):
  assert sorted(os.listdir(exported)) == ['README.md', 'model.json', 'params.safetensors',
                                          'run.json']
  record = json.loads((exported / 'run.json').read_text())[layout.CHECKSUMS]
  assert set(record['files']) == {'params.safetensors'}
  assert record['files']['params.safetensors'].startswith('uint8:')
  assert record['sizes'] == {'params.safetensors':
                             (exported / 'params.safetensors').stat().st_size}
  model = json.loads((exported / 'model.json').read_text())
  assert record['model.json'] == export.content_checksum(model)
  assert record['model']['family'] == model['family'] == 'transformer'
  assert record['model']['config'] == model['config']
  assert record['model']['checksum'] == export.model_checksum(model['family'], model['config'])


def test_a_config_this_version_resolves_otherwise_is_refused(exported):
  model = json.loads((exported / 'model.json').read_text())
  recorded = json.loads((exported / 'run.json').read_text())[layout.CHECKSUMS]['model']
  verification.check_resolved_model(str(exported), 'transformer', model['config'], recorded,
                                    'fix')
  # A field added to the dataclass since the export keeps its default, unchecked.
  verification.check_resolved_model(str(exported), 'transformer',
                                    {**model['config'], 'new_field': 1}, recorded, 'fix')
  with pytest.raises(UserError, match=r"model\.json: this transformer_jax resolves positional to "
                     r"'rotary' but the exported params were trained with 'sinusoidal'"):
    verification.check_resolved_model(str(exported), 'transformer',
                                      {**model['config'], 'positional': 'rotary'}, recorded,
                                      'fix')


def test_an_undamaged_copy_translates_as_the_export(exported, translations, tmp_path):
  folder = copy_of(exported, tmp_path)
  # Checked by content, not by bytes: reformatted JSON and an edited README are the export.
  for name in ('model.json', 'run.json'):
    (folder / name).write_text(json.dumps(json.loads((folder / name).read_text())))
  (folder / 'README.md').write_text('my notes\n')
  model = transformer_jax.load_pretrained(folder)
  assert model.translate(LINES) == translations
  assert len(translations) == len(LINES) and all(isinstance(t, str) for t in translations)


def test_a_sentencepiece_export_loads(sp_export):
  assert sorted(os.listdir(sp_export)) == ['README.md', 'model.json', 'params.safetensors',
                                           'run.json', 'tokenizer.model']
  record = json.loads((sp_export / 'run.json').read_text())[layout.CHECKSUMS]
  assert set(record['files']) == {'params.safetensors', 'tokenizer.model'}
  model = transformer_jax.load_pretrained(sp_export)
  assert model.tokenize(['ab ba']) == tokenizer_lib.Tokenizer(
      sp_export / 'tokenizer.model').encode(['ab ba'])


TOKENIZER_DAMAGES = [
    ('missing', remove('tokenizer.model'), r'tokenizer\.model is missing'),
    ('empty', write('tokenizer.model', b''), r'tokenizer\.model is empty'),
    ('truncated', truncate('tokenizer.model'), None),
    ('not_a_model', write('tokenizer.model', b'not a sentencepiece model\n'), None),
]


@pytest.mark.parametrize('checked', [True, False], ids=['checksummed', 'before_checksums'])
@pytest.mark.parametrize('name,damage,match', TOKENIZER_DAMAGES,
                         ids=[d[0] for d in TOKENIZER_DAMAGES])
def test_a_damaged_tokenizer_model_is_one_user_error(name, damage, match, checked, sp_export,
                                                     tmp_path):
  folder = copy_of(sp_export, tmp_path)
  if not checked:
    legacy(folder)
  damage(folder)
  if match is None:       # the checksum names it first; sentencepiece's error without one
    match = (r'tokenizer\.model (is damaged|is truncated)' if checked else
             r'tokenizer\.model is not a sentencepiece model')
  refused(folder, match, workdir=json.loads(
      (sp_export / 'run.json').read_text())['source']['workdir'])


# --- partial folders of killed exports --------------------------------------------------------

KILLED_EXPORT = """
    import json, os, signal, sys
    import ml_collections
    import transformer_jax
    from transformer_jax.pretrained import export
    source, target = sys.argv[1:]
    model = transformer_jax.load_pretrained(source)
    run = json.load(open(os.path.join(source, 'run.json')))
    config = ml_collections.ConfigDict({'data': run['data'], 'decode': run['decode']})
    os.rename = lambda *args: os.kill(os.getpid(), signal.SIGKILL)     # killed before the rename
    export.write(target, model._parts, model.params, config, run['source'])
"""


def test_the_next_export_removes_partials_of_killed_exports_only(trained, exported, tmp_path):
  parent = tmp_path / 'exports'
  parent.mkdir()
  killed = subprocess.run([sys.executable, '-c', textwrap.dedent(KILLED_EXPORT), str(exported),
                           str(parent / 'export')], cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True)
  assert killed.returncode == -9, killed.stderr[-2000:]
  left = [p for p in parent.iterdir() if '.partial-' in p.name]      # what SIGKILL left
  assert len(left) == 1 and left[0].name.startswith('.export.partial-'), left
  assert {'params.safetensors', 'run.json'} <= set(os.listdir(left[0]))
  host = socket.gethostname()
  old_form = parent / f'.export.partial-{dead_pid()}'               # as written before the host
  old_form.mkdir()
  (old_form / 'params.npz').write_bytes(b'PK\x03\x04 half an archive')
  kept = [parent / f'.export.partial-{os.getpid()}',            # a live pid: in progress
          parent / f'.export.partial-{os.getpid()}-{host}',
          parent / f'.other.partial-{dead_pid()}-elsewhere.invalid',  # its pid means nothing here
          parent / f'.mine.partial-{dead_pid()}']                  # holds a file no export writes
  for folder in kept:
    folder.mkdir()
  (kept[-1] / 'notes.txt').write_text('not an export file\n')

  launch(f'--workdir={trained}', '--mode=export', f'--export_dir={parent / "export"}', timeout=300)
  assert sorted(p.name for p in parent.iterdir()) == sorted(['export'] + [p.name for p in kept])
  assert (kept[-1] / 'notes.txt').exists()
  assert transformer_jax.load_pretrained(parent / 'export').source['workdir'] == str(trained)


def test_remove_stale_partials_reads_only_its_own_names(tmp_path):
  pid = dead_pid()
  stale = [tmp_path / f'.out.partial-{pid}',
           tmp_path / f'.out.v2.partial-{pid}-{socket.gethostname()}']
  others = [tmp_path / f'out.partial-{pid}', tmp_path / f'.out.partial-{pid}x',
            tmp_path / f'.out.partial-', tmp_path / '.out.partial-0']
  for folder in stale + others:
    folder.mkdir()
  (tmp_path / f'.file.partial-{pid}').write_text('a file, not a folder\n')
  assert sorted(export.remove_stale_partials(str(tmp_path))) == sorted(map(str, stale))
  assert all(folder.is_dir() for folder in others)
  assert (tmp_path / f'.file.partial-{pid}').is_file()
