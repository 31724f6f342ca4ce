"""The export folder's format, in-process on a tiny untrained model (tiny_export.py, no run):
params in safetensors, the versions and the pip-install line in model.json and the card, FORMAT 1
folders (params.npz) still read, from_pretrained, and save_pretrained's round trip."""
import json

import flax
import jax
import numpy as np
import pytest
from safetensors import flax as safetensors_flax

import transformer_jax
from tests.pretrained import tiny_export
from transformer_jax import pretrained
from transformer_jax.base.errors import UserError
from transformer_jax.pretrained import loading

METRICS = {'validation': {'loss': 1.25, 'perplexity': 3.49, 'accuracy': 0.5,
                          'source': 'metrics.jsonl', 'checkpoints': [2]}}


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  return tiny_export.write(tmp_path_factory.mktemp('tiny') / 'export', metrics=METRICS)


@pytest.fixture(scope='module')
def translations(exported):
  return transformer_jax.load_pretrained(exported).translate(tiny_export.LINES)


def flat(params):
  return {'/'.join(k): np.asarray(v) for k, v in flax.traverse_util.flatten_dict(params).items()}


def test_params_are_stored_in_safetensors(exported):
  assert sorted(p.name for p in exported.iterdir()) == [
      'README.md', 'model.json', 'params.safetensors', 'run.json']
  stored = safetensors_flax.load_file(exported / 'params.safetensors')
  _, params = tiny_export.parts_and_params()
  expected = flat(params)
  assert set(stored) == set(expected) and any(name.endswith('/kernel') for name in stored)
  for name, value in expected.items():
    np.testing.assert_array_equal(np.asarray(stored[name]), value)
    assert stored[name].dtype == value.dtype
  record = json.loads((exported / 'run.json').read_text())['checksums']
  assert set(record['files']) == {'params.safetensors'}
  assert record['sizes'] == {'params.safetensors': (exported / 'params.safetensors').stat().st_size}
  model = transformer_jax.load_pretrained(exported)
  for name, value in flat(model.params).items():
    np.testing.assert_array_equal(value, expected[name])


def test_model_json_and_the_card_record_the_versions_and_metrics(exported):
  model = json.loads((exported / 'model.json').read_text())
  versions = {'transformer_jax': transformer_jax.__version__, 'jax': jax.__version__,
              'flax': flax.__version__}
  assert model['format'] == 2 and model['versions'] == versions
  assert model['metrics'] == METRICS
  loaded = transformer_jax.load_pretrained(exported)
  assert loaded.versions == versions and loaded.metrics == METRICS
  card = (exported / 'README.md').read_text()
  assert (f'transformer_jax {transformer_jax.__version__}, jax {jax.__version__}, '
          f'flax {flax.__version__}') in card
  assert '| validation | [2] | 1.25 | 3.49 | 0.5 | `metrics.jsonl` |' in card


def test_the_card_says_to_pip_install_the_package(exported):
  card = (exported / 'README.md').read_text()
  assert 'PYTHONPATH' not in card
  assert '`pip install transformer-jax`' in card and '`pip install .`' in card


def test_edited_metrics_are_refused(exported, tmp_path):
  folder = tiny_export.write(tmp_path / 'export', metrics=METRICS)
  model = json.loads((folder / 'model.json').read_text())
  model['metrics']['validation']['accuracy'] = 0.99
  (folder / 'model.json').write_text(json.dumps(model, indent=2))
  with pytest.raises(UserError, match=r'model\.json was changed after the export \(its content '
                     r'differs from the checksum recorded in run\.json\): re-export it'):
    transformer_jax.load_pretrained(folder)


@pytest.mark.parametrize('with_checksums', [True, False], ids=['checksummed', 'before_checksums'])
def test_a_format_1_export_still_loads(with_checksums, translations, tmp_path):
  folder = tiny_export.write_format_1(tmp_path / 'old', with_checksums=with_checksums)
  model = transformer_jax.load_pretrained(folder)
  assert model.translate(tiny_export.LINES) == translations
  assert model.metrics == {} and model.versions == {}
  (folder / 'params.npz').write_bytes((folder / 'params.npz').read_bytes()[:100])
  with pytest.raises(UserError, match=r'params\.npz (cannot be read|is truncated)'):
    transformer_jax.load_pretrained(folder)


def test_a_format_2_export_without_checksums_is_refused(exported, tmp_path):
  folder = tiny_export.write(tmp_path / 'export')
  run = json.loads((folder / 'run.json').read_text())
  del run['checksums']
  (folder / 'run.json').write_text(json.dumps(run))
  with pytest.raises(UserError, match=r"run\.json has no 'checksums' entry, which every export "
                     r'of format 2 records'):
    transformer_jax.load_pretrained(folder)


def test_from_pretrained_is_load_pretrained(exported, translations):
  assert pretrained.from_pretrained is pretrained.load_pretrained
  for load in (pretrained.from_pretrained, pretrained.Pretrained.from_pretrained,
               loading.Pretrained.from_pretrained):
    model = load(exported)
    assert isinstance(model, pretrained.Pretrained) and model.path == str(exported)
    assert model.translate(tiny_export.LINES) == translations


def test_save_pretrained_writes_a_folder_that_loads_back_the_same(exported, translations,
                                                                  tmp_path):
  model = transformer_jax.load_pretrained(exported)
  assert model.save_pretrained(tmp_path / 'copy') == str(tmp_path / 'copy')
  again = transformer_jax.load_pretrained(tmp_path / 'copy')
  assert again.translate(tiny_export.LINES) == translations
  assert again.translate(tiny_export.LINES, method='beam', beam_size=3) == model.translate(
      tiny_export.LINES, method='beam', beam_size=3)
  assert (again.decode, again.source, again.metrics, again.model_config) == (
      model.decode, model.source, model.metrics, model.model_config)
  ours, theirs = flat(model.params), flat(again.params)
  assert ours.keys() == theirs.keys()
  for name, value in ours.items():
    np.testing.assert_array_equal(theirs[name], value)
  assert f"load_pretrained('{tmp_path / 'copy'}')" in (tmp_path / 'copy' / 'README.md').read_text()


def test_save_pretrained_turns_a_format_1_export_into_this_format(translations, tmp_path):
  old = transformer_jax.load_pretrained(tiny_export.write_format_1(tmp_path / 'old'))
  old.save_pretrained(tmp_path / 'new')
  assert (tmp_path / 'new' / 'params.safetensors').is_file()
  assert json.loads((tmp_path / 'new' / 'run.json').read_text())['format'] == 2
  assert transformer_jax.load_pretrained(tmp_path / 'new').translate(
      tiny_export.LINES) == translations


def test_save_pretrained_never_overwrites(exported, tmp_path):
  model = transformer_jax.load_pretrained(exported)
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'notes.txt').write_text('mine\n')
  with pytest.raises(UserError, match=r'^save_pretrained path \S+full already holds files and an '
                     r'export is never overwritten: give a new or empty folder'):
    model.save_pretrained(tmp_path / 'full')
  assert sorted(p.name for p in (tmp_path / 'full').iterdir()) == ['notes.txt']
