"""Malformed data and input files end in one-line UserErrors before anything is written:
raw Multi30k / SST-2 files (through pipeline.check_available and the preflight), data folders,
and the lines --mode=translate / --mode=sample read (transformer_jax.data.raw_text)."""
import gzip
import io
import os
import pathlib
import sys

import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.checkpoints import checkpoint
from transformer_jax.data import pipeline
from transformer_jax.data import raw_text
from transformer_jax.data.sources import sst2
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.experiments import copy_task as copy_experiment
from transformer_jax.experiments import multi30k as multi30k_experiment
from transformer_jax.experiments import multi30k_lm
from transformer_jax.pretrained import restored
from transformer_jax.run import defaults as base
from transformer_jax.run import modes
from transformer_jax.train import components

M30K_PREFIXES = ('train', 'val', 'test_2016_flickr')


def _gzip(path, data: bytes):
  with gzip.open(path, 'wb') as f:
    f.write(data)


def _multi30k_raw(folder: pathlib.Path, langs=('en', 'de')):
  folder.mkdir(parents=True, exist_ok=True)
  for prefix in M30K_PREFIXES:
    for lang in langs:
      _gzip(folder / f'{prefix}.{lang}.gz',
            ''.join(f'{prefix} {lang} line {i}\n' for i in range(3)).encode())
  return folder


def _sst2_raw(folder: pathlib.Path):
  folder.mkdir(parents=True, exist_ok=True)
  rows = ''.join(f'sentence {i}\t{i % 2}\n' for i in range(4))
  for name in ('train.tsv.gz', 'dev.tsv.gz'):
    _gzip(folder / name, (sst2.HEADER + '\n' + rows).encode())
  return folder


def _snapshot(folder: pathlib.Path):
  return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob('*'))


def _refused(config, folder: pathlib.Path, expected: str, check=None) -> str:
  """Runs the check, asserts a one-line UserError holding `expected` and no writes."""
  before = _snapshot(folder)
  workdir = folder / 'run'
  with pytest.raises(UserError) as e:
    (check or pipeline.check_available)(config, str(workdir))
  message = str(e.value)
  assert expected in message and '\n' not in message, message
  assert _snapshot(folder) == before and not workdir.exists()
  return message


# name of the file to replace -> its new content (bytes are gzipped, `raw:` bytes are not).
MULTI30K_CASES = [
    ('empty train file', 'train.en.gz', b'', 'train.en.gz is empty: replace it with the original'),
    ('zero-byte file', 'train.en.gz', 'raw:', 'train.en.gz is empty'),
    ('blank lines only', 'train.de.gz', b'\n\n', 'train.de.gz is empty'),
    ('plain text named .gz', 'train.de.gz', 'raw:Ein Hund.\n',
     "train.de.gz is not gzip-compressed (it starts with b'Ein Hund'): compress it with gzip"),
    ('random bytes named .gz', 'train.de.gz', 'raw:\x93\x11\xfe\x00\x07',
     'train.de.gz is not gzip-compressed'),
    ('gzip cut short', 'val.en.gz', 'cut:', 'val.en.gz is a damaged gzip file'),
    ('latin-1 bytes', 'val.de.gz', 'val 0\nein M\xe4dchen\nval 2\n'.encode('latin-1'),
     'val.de.gz:2: byte 0xe4 at column 6 is not UTF-8: re-encode it as UTF-8 or replace it'),
    ('line counts differ', 'val.de.gz', b'a\nb\nc\nd\n', 'has 3 lines but'),
]


def _replace(path: pathlib.Path, content):
  if content == 'cut:':
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
  elif isinstance(content, str):
    path.write_bytes(content[len('raw:'):].encode('latin-1'))
  else:
    _gzip(path, content)


@pytest.mark.parametrize('name, content, expected', [c[1:] for c in MULTI30K_CASES],
                         ids=[c[0] for c in MULTI30K_CASES])
def test_malformed_multi30k_files_are_refused_before_any_write(tmp_path, name, content,
                                                               expected):
  raw = _multi30k_raw(tmp_path / 'raw')
  _replace(raw / name, content)
  config = base.get_base_config().data
  config.update(dataset='multi30k', raw_dir=str(raw), source_lang='en', target_lang='de')
  message = _refused(config, tmp_path, expected)
  assert str(raw / name) in message


def test_multi30k_line_count_message_names_both_files(tmp_path):
  raw = _multi30k_raw(tmp_path / 'raw')
  _gzip(raw / 'val.de.gz', b'a\nb\nc\nd\n')
  config = base.get_base_config().data
  config.update(dataset='multi30k', raw_dir=str(raw), source_lang='en', target_lang='de')
  _refused(config, tmp_path, f'{raw / "val.en.gz"} has 3 lines but {raw / "val.de.gz"} has 4: '
           'parallel files must match line by line')


def test_preflight_refuses_malformed_multi30k_files(tmp_path):
  raw = _multi30k_raw(tmp_path / 'raw')
  _gzip(raw / 'train.en.gz', b'')
  config = multi30k_experiment.get_config('smoke')
  config.data.raw_dir = str(raw)
  _refused(config, tmp_path, 'train.en.gz is empty', check=components.preflight)


def test_language_model_and_word2vec_data_are_checked_too(tmp_path):
  raw = _multi30k_raw(tmp_path / 'raw')
  _gzip(raw / 'test_2016_flickr.en.gz', b'a \xff dog\n')
  config = base.get_base_config().data
  config.update(dataset='multi30k_mono', raw_dir=str(raw), source_lang='de', target_lang='en')
  _refused(config, tmp_path, 'test_2016_flickr.en.gz:1: byte 0xff at column 3 is not UTF-8')
  _multi30k_raw(raw)                                     # good again
  sst = _sst2_raw(tmp_path / 'sst2')
  _gzip(sst / 'train.tsv.gz', (sst2.HEADER + '\nfine\t1\nno tab here\n').encode())
  config = base.get_base_config().data
  config.update(dataset='word2vec_text', raw_dir=str(raw))
  config.sst2_dir = str(sst)
  _refused(config, tmp_path, 'train.tsv.gz:3: expected "sentence<TAB>0|1"')


SST2_CASES = [
    ('empty train file', 'train.tsv.gz', b'', 'train.tsv.gz is empty'),
    ('header only', 'train.tsv.gz', (sst2.HEADER + '\n').encode(),
     'train.tsv.gz has a header but no rows'),
    ('not gzip', 'dev.tsv.gz', 'raw:text\tlabel\n', 'dev.tsv.gz is not gzip-compressed'),
    ('latin-1 bytes', 'dev.tsv.gz', (sst2.HEADER + '\nok\t1\ncaf\xe9\t0\n').encode('latin-1'),
     'dev.tsv.gz:3: byte 0xe9 at column 4 is not UTF-8'),
    ('no tab', 'train.tsv.gz', (sst2.HEADER + '\nok\t1\nno label\n').encode(),
     "train.tsv.gz:3: expected \"sentence<TAB>0|1\", got 'no label'"),
    ('label not 0/1', 'dev.tsv.gz', (sst2.HEADER + '\nok\t1\nok\t1\nmeh\t2\n').encode(),
     "dev.tsv.gz:4: expected \"sentence<TAB>0|1\", got 'meh\\t2'"),
    ('wrong header', 'train.tsv.gz', b'sentence\tlabel\nok\t1\n', "train.tsv.gz:1: header"),
]


@pytest.mark.parametrize('name, content, expected', [c[1:] for c in SST2_CASES],
                         ids=[c[0] for c in SST2_CASES])
def test_malformed_sst2_files_are_refused_before_any_write(tmp_path, name, content, expected):
  raw = _sst2_raw(tmp_path / 'raw')
  _replace(raw / name, content)
  config = base.get_base_config().data
  config.update(dataset='sst2', raw_dir=str(raw))
  message = _refused(config, tmp_path, expected)
  assert str(raw / name) in message


@pytest.mark.parametrize('dataset, key', [
    ('multi30k', 'raw_dir'), ('sst2', 'raw_dir'), ('copy', 'data_dir'), ('multi30k', 'data_dir')])
def test_a_file_where_a_folder_belongs_is_refused(tmp_path, dataset, key):
  _multi30k_raw(tmp_path / 'm30k')
  _sst2_raw(tmp_path / 'sst2')
  not_a_folder = tmp_path / 'notes.txt'
  not_a_folder.write_text('not a folder\n')
  config = base.get_base_config().data
  config.update(dataset=dataset, raw_dir=str(tmp_path / ('sst2' if dataset == 'sst2' else 'm30k')))
  config[key] = str(not_a_folder)
  _refused(config, tmp_path, f'data.{key} {not_a_folder} is a file, not a folder: set '
           f'--experiment.data.{key} to the folder holding')


def test_an_unreadable_raw_dir_is_refused(tmp_path, monkeypatch):
  raw = _multi30k_raw(tmp_path / 'raw')
  real_access = os.access
  monkeypatch.setattr(os, 'access', lambda path, mode: (
      False if os.fspath(path) == str(raw) else real_access(path, mode)))   # root reads all
  config = base.get_base_config().data
  config.update(dataset='multi30k', raw_dir=str(raw))
  _refused(config, tmp_path, f'cannot read the folder {raw} (data.raw_dir): make it readable')


def test_an_unreadable_file_is_refused(tmp_path, monkeypatch):
  path = tmp_path / 'train.en.gz'
  _gzip(path, b'a\n')

  def denied(*args, **kwargs):
    raise PermissionError(13, 'Permission denied')
  monkeypatch.setattr(gzip, 'open', denied)
  with pytest.raises(UserError, match=r'cannot read .*train.en.gz \(Permission denied\): make '
                     'it readable'):
    raw_text.read_gzip_lines(str(path), 'replace it')


def test_read_gzip_lines_keeps_the_text_of_each_line(tmp_path):
  path = tmp_path / 'x.gz'
  _gzip(path, 'a\rb\nc\r\n\ndé\n'.encode())
  assert raw_text.read_gzip_lines(str(path), 'fix') == ['a\rb', 'c', '', 'dé']
  _gzip(path, b'no end')
  assert raw_text.read_gzip_lines(str(path), 'fix') == ['no end']


def test_translate_input_that_is_not_utf8_names_the_line(tmp_path, monkeypatch):
  path = tmp_path / 'in.txt'
  path.write_bytes(b'A dog runs.\nEin M\xe4dchen\n')
  with pytest.raises(UserError) as e:
    raw_text.read_input_lines(str(path))  # pylint: disable=protected-access
  assert str(e.value) == (f'{path}:2: byte 0xe4 at column 6 is not UTF-8: give --input as UTF-8 '
                          'text (e.g. convert it with iconv -t UTF-8)')
  monkeypatch.setattr(sys, 'stdin', io.TextIOWrapper(io.BytesIO(b'ok\r\n\xff\n')))
  with pytest.raises(UserError, match=r'^<stdin>:2: byte 0xff at column 1 is not UTF-8'):
    raw_text.read_input_lines('-')  # pylint: disable=protected-access
  monkeypatch.setattr(sys, 'stdin', io.TextIOWrapper(io.BytesIO('ok\r\ndé\n'.encode())))
  assert raw_text.read_input_lines('-') == ['ok', 'dé']  # pylint: disable=protected-access
  with pytest.raises(UserError, match='is a folder'):
    raw_text.read_input_lines(str(tmp_path))  # pylint: disable=protected-access


def _run_without_checkpoints(workdir: pathlib.Path, config):
  """What restored.check_run looks for: config.json and a finished step folder (empty here, so a
  restore would fail: the input is refused before one is tried)."""
  workdir_lib.record_config(str(workdir), config)
  (workdir / checkpoint.CHECKPOINT_SUBDIR / '1').mkdir(parents=True)
  return _snapshot(workdir)


def test_sample_refuses_prompts_that_are_not_utf8(tmp_path):
  prompts = tmp_path / 'prompts.txt'
  prompts.write_bytes(b'\xff\n')
  config, workdir = multi30k_lm.get_config('smoke'), tmp_path / 'run'
  before = _run_without_checkpoints(workdir, config)
  with pytest.raises(UserError, match=r'prompts.txt:1: byte 0xff at column 1 is not UTF-8'):
    modes.sample(config, str(workdir), input_path=str(prompts))
  assert _snapshot(workdir) == before


@pytest.mark.parametrize('line', ['A dog runs.', '5 9 32', '0 5', '-4', '5.0', '٣'])
def test_identity_tokenizer_names_a_line_that_is_not_token_ids(line):
  tokenizer = tokenizer_lib.IdentityTokenizer(32)
  assert tokenizer.encode(['5 9 12', '31 3', '']) == [[5, 9, 12, 1], [31, 3, 1], [1]]
  with pytest.raises(UserError) as e:
    tokenizer.encode(['5 9 12', line])
  assert str(e.value) == (f'line 2 ({line!r}) is not a sequence of token ids: this copy-task run '
                          "takes space-separated integer ids from 3 to 31, e.g. '5 9 12'")


def test_translate_on_a_copy_task_refuses_text_before_reading_a_checkpoint(tmp_path, capsys):
  source = tmp_path / 'in.txt'
  source.write_text('A dog runs.\n')
  config, workdir = copy_experiment.get_config('smoke'), tmp_path / 'run'
  before = _run_without_checkpoints(workdir, config)   # a restore would fail: none is reached
  with pytest.raises(UserError) as e:
    modes.translate(config, str(workdir), input_path=str(source))
  assert str(e.value).startswith("line 1 ('A dog runs.') is not a sequence of token ids: this "
                                 'copy-task run takes space-separated integer ids from 3 to ')
  assert _snapshot(workdir) == before and not capsys.readouterr().out
