"""Tests for transformer_jax.data.sources.multi30k (TFDS builder over the raw task 1 files)."""
import gzip
import os
import tempfile

import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data.sources import multi30k

FIRST_TRAIN = {'en': 'Two young, White males are outside near many bushes.',
               'de': 'Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.'}
FIRST_TEST_EN = 'A man in an orange hat starring at something.'


@pytest.fixture(scope='module')
def raw_dir(shared_data):
  return os.path.join(shared_data, 'multi30k')


@pytest.fixture(scope='module')
def de_en(raw_dir, tmp_path_factory):
  return multi30k.prepare(str(tmp_path_factory.mktemp('tfds')), 'en', 'de', raw_dir)


def _write_raw(folder, lines_per_file):
  """Writes `<name>.gz` files: lines_per_file maps 'train.en' -> list of lines."""
  os.makedirs(folder, exist_ok=True)
  for name, lines in lines_per_file.items():
    with gzip.open(os.path.join(folder, name + '.gz'), 'wt', encoding='utf-8') as f:
      f.write(''.join(line + '\n' for line in lines))


def _tiny_raw(folder, langs=('en', 'fr'), count=None):
  files = {}
  for split in ('train', 'val', 'test_2016_flickr'):
    for lang in langs:
      n = (count or {}).get(f'{split}.{lang}', 3)
      files[f'{split}.{lang}'] = [f'{split} {lang} line {i}' for i in range(n)]
  _write_raw(folder, files)
  return folder


def test_split_sizes_and_first_lines(de_en):
  sizes = {split: len(de_en.as_data_source(split)) for split in ('train', 'validation', 'test')}
  assert sizes == {'train': 29000, 'validation': 1014, 'test': 1000}
  first = de_en.as_data_source('train')[0]
  assert {lang: text.decode('utf-8') for lang, text in first.items()} == FIRST_TRAIN
  assert de_en.as_data_source('test')[0]['en'].decode('utf-8') == FIRST_TEST_EN
  assert set(de_en.info.features.keys()) == {'de', 'en'}


def test_builder_keeps_file_order(de_en, raw_dir):
  source = de_en.as_data_source('validation')
  records = source.__getitems__(range(len(source)))
  en, de = multi30k.load_text_split(raw_dir, 'validation', 'en', 'de')
  assert [r['en'].decode('utf-8') for r in records] == en
  assert [r['de'].decode('utf-8') for r in records] == de


def test_prepared_pair_is_reused(de_en, raw_dir):
  again = multi30k.prepare(os.path.dirname(os.path.dirname(os.path.dirname(de_en.data_dir))),
                           'de', 'en', raw_dir)
  assert again.data_dir == de_en.data_dir and again.is_prepared()


def test_load_text_split(raw_dir):
  en, de = multi30k.load_text_split(raw_dir, 'train', 'en', 'de')
  assert len(en) == len(de) == 29000
  assert (en[0], de[0]) == (FIRST_TRAIN['en'], FIRST_TRAIN['de'])
  fr, en_test = multi30k.load_text_split(raw_dir, 'test_2016_flickr', 'fr', 'en')
  assert len(fr) == 1000 and en_test[0] == FIRST_TEST_EN
  assert fr[0] == 'Un homme avec un chapeau orange regardant quelque chose.'


def test_other_pair_from_a_local_folder(tmp_path):
  raw = _tiny_raw(str(tmp_path / 'raw'))
  builder = multi30k.prepare(str(tmp_path / 'tfds'), 'fr', 'en', raw)
  assert builder.builder_config.name == 'en-fr'
  record = builder.as_data_source('validation')[2]
  assert record == {'en': b'val en line 2', 'fr': b'val fr line 2'}


def test_preparing_leaves_no_empty_folders_in_the_temporary_directory(tmp_path):
  """TFDS makes a /tmp/tmp*tfds folder for every builder of an unprepared dataset and leaves
  it (preparation.quiet_builder removes them): CI and sweeps made thousands."""
  strays = lambda: {p for p in os.listdir(tempfile.gettempdir()) if p.endswith('tfds')}
  before = strays()
  raw = _tiny_raw(str(tmp_path / 'raw'))
  multi30k.check_prepared_or_raw(str(tmp_path / 'tfds'), 'fr', 'en', raw)
  assert multi30k.prepare(str(tmp_path / 'tfds'), 'fr', 'en', raw).is_prepared()
  assert strays() - before == set()


def test_missing_raw_dir_is_a_user_error(tmp_path):
  empty = tmp_path / 'nothing_here'
  empty.mkdir()
  for call in (lambda: multi30k.prepare(str(tmp_path / 'tfds'), 'en', 'de', str(empty)),
               lambda: multi30k.load_text_split(str(empty), 'train', 'en', 'de')):
    with pytest.raises(UserError) as e:
      call()
    message = str(e.value)
    assert message.startswith('no Multi30k files') and str(empty) in message
    assert '--experiment.data.raw_dir' in message and multi30k.SOURCE_URL in message
    assert '\n' not in message


def test_line_count_mismatch_is_a_user_error(tmp_path):
  raw = _tiny_raw(str(tmp_path / 'raw'), langs=('en', 'de'), count={'val.de': 2})
  with pytest.raises(UserError, match=r'val.en.gz has 3 lines but .*val.de.gz has 2'):
    multi30k.load_text_split(raw, 'validation', 'en', 'de')
  with pytest.raises(UserError, match='must match line by line'):
    multi30k.prepare(str(tmp_path / 'tfds'), 'en', 'de', raw)


@pytest.mark.parametrize('langs, message', [
    (('en', 'en'), 'both'), (('en', 'cs'), "no language 'cs'")])
def test_bad_language_pair_is_a_user_error(langs, message):
  with pytest.raises(UserError, match=message):
    multi30k.pair_name(*langs)


def test_configs_and_splits():
  assert sorted(multi30k.Multi30k.builder_configs) == ['de-en', 'de-fr', 'en-fr']
  assert multi30k.pair_name('en', 'de') == multi30k.pair_name('de', 'en') == 'de-en'
  assert multi30k.raw_file_names('test') == [
      'test_2016_flickr.de.gz', 'test_2016_flickr.en.gz', 'test_2016_flickr.fr.gz']
  with pytest.raises(UserError, match='no split'):
    multi30k.raw_file_names('dev')


class _OfflineDownloads:
  """A dl_manager without a manual dir whose downloads are served from a local folder."""

  def __init__(self, folder):
    self.folder, self.urls = folder, None

  @property
  def manual_dir(self):
    raise AssertionError('Manual directory not enabled.')

  def download(self, urls):
    self.urls = urls
    return {name: os.path.join(self.folder, name + '.gz') for name in urls}


def test_without_raw_files_it_downloads_the_public_files(tmp_path):
  downloads = _OfflineDownloads(_tiny_raw(str(tmp_path / 'raw')))
  builder = multi30k.Multi30k(data_dir=str(tmp_path / 'tfds'), config='en-fr',
                              file_format='array_record')
  generators = builder._split_generators(downloads)  # pylint: disable=protected-access
  url = 'https://github.com/multi30k/dataset/raw/master/data/task1/raw/{}.gz'
  assert downloads.urls == {name: url.format(name) for name in (
      'train.en', 'train.fr', 'val.en', 'val.fr', 'test_2016_flickr.en', 'test_2016_flickr.fr')}
  assert list(generators['test'])[1] == (1, {'en': 'test_2016_flickr en line 1',
                                              'fr': 'test_2016_flickr fr line 1'})
