"""What preparing a dataset says: data made on the fly (the copy task) in one line of ours,
without TFDS's download wording, progress bars or repeated warnings; Multi30k files that are
missing, with the config field to set, the public source and the download alternative."""
import gzip
import logging
import os

import pytest
import tensorflow_datasets as tfds

from transformer_jax import data
from transformer_jax.base.errors import UserError
from transformer_jax.data.sources import copy_task
from transformer_jax.data.sources import multi30k
from transformer_jax.experiments import multi30k as multi30k_experiment

TFDS_CHATTER = ('Downloading', 'Unknown size', 'downloaded and prepared', 'dataset_info.json',
                'custom data configuration', 'examples/s')


def _chatter(text):
  return [words for words in TFDS_CHATTER if words in text]


def test_generated_data_is_prepared_in_one_line_of_ours(tmp_path, capfd, caplog):
  tfds.enable_progress_bar()              # as a Python caller has it: the bars stay off anyway
  config = copy_task.make_config('copy', num_train=20, num_eval=4)
  with caplog.at_level(logging.INFO):
    builder = copy_task.prepare(str(tmp_path), config)
    copy_task.prepare(str(tmp_path), config)                   # prepared: reads it, silently
    builder.as_data_source('train')
  out, err = capfd.readouterr()
  assert not _chatter(out + err), out + err
  messages = [r.getMessage() for r in caplog.records]
  assert not [m for m in messages if _chatter(m)], messages
  ours = [m for m in messages if m.startswith('generating copy_task')]
  assert ours == [f'generating copy_task ({config.name}) into {builder.data_dir}'], messages
  assert builder.data_dir.startswith(str(tmp_path)) and len(builder.as_data_source('train')) == 20


def _write_tiny_raw(folder, langs=('de', 'en')):
  os.makedirs(folder, exist_ok=True)
  for prefix in multi30k.RAW_SPLITS.values():
    for lang in langs:
      with gzip.open(os.path.join(folder, f'{prefix}.{lang}.gz'), 'wt', encoding='utf-8') as f:
        f.write(''.join(f'{prefix} {lang} line {i}\n' for i in range(3)))
  return folder


def test_multi30k_from_raw_files_says_where_from_without_download_wording(tmp_path, capfd, caplog):
  raw = _write_tiny_raw(str(tmp_path / 'raw'))
  with caplog.at_level(logging.INFO):
    multi30k.check_prepared_or_raw(str(tmp_path / 'tfds'), 'en', 'de', raw)
    builder = multi30k.prepare(str(tmp_path / 'tfds'), 'en', 'de', raw)
  out, err = capfd.readouterr()
  assert not _chatter(out) and 'Downloading' not in err
  messages = [r.getMessage() for r in caplog.records]
  assert not [m for m in messages if _chatter(m)], messages
  assert f'preparing Multi30k de-en from the raw files in {raw} into {builder.data_dir}' in messages


def test_missing_multi30k_files_name_the_field_the_source_and_the_download(tmp_path, monkeypatch):
  """The default data.raw_dir is relative: from another directory it names nothing there."""
  monkeypatch.chdir(tmp_path)
  config = multi30k_experiment.get_config('smoke').data
  with pytest.raises(UserError) as info:
    data.check_available(config, str(tmp_path / 'run'))
  message = str(info.value)
  assert message.startswith('no Multi30k files (train.en.gz, train.de.gz, ')
  relative = f"data.raw_dir='{config.raw_dir}' is relative to the current directory {tmp_path}"
  assert relative in message
  assert ('set --experiment.data.raw_dir=<folder with train.de.gz, train.en.gz, val.de.gz, '
          'val.en.gz, test_2016_flickr.de.gz, test_2016_flickr.en.gz>') in message
  assert f'Multi30k task 1, public at {multi30k.SOURCE_URL} in data/task1/raw' in message
  assert "or --experiment.data.raw_dir='' to have TFDS download them (needs internet)" in message
  assert '\n' not in message


class _Downloads(tfds.download.DownloadManager):
  """Serves the 'downloads' from a local folder (no network in tests)."""

  folder = None

  def download(self, url_or_urls):
    return {name: os.path.join(self.folder, name + '.gz') for name in url_or_urls}


def test_an_empty_raw_dir_passes_the_checks_and_downloads_the_public_files(tmp_path, monkeypatch):
  """What the message offers holds: data.raw_dir='' is not refused before training, and the
  builder then fetches the files itself."""
  config = multi30k_experiment.get_config('smoke').data
  config.raw_dir = multi30k.DOWNLOAD
  data.check_available(config, str(tmp_path / 'run'))            # refused before this change
  _Downloads.folder = _write_tiny_raw(str(tmp_path / 'served'))
  monkeypatch.setattr(tfds.download, 'DownloadManager', _Downloads)   # the class TFDS makes
  builder = multi30k.prepare(str(tmp_path / 'tfds'), 'en', 'de', multi30k.DOWNLOAD)
  assert builder.as_data_source('validation')[1] == {'de': b'val de line 1', 'en': b'val en line 1'}
