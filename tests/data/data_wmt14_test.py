"""Tests for transformer_jax.data.sources.wmt14 (TFDS builder over the raw WMT14 en-de files) and the
streaming readers of raw_text it uses, on tiny raw files written here."""
import gzip
import pathlib

import pytest
import tensorflow_datasets as tfds

from transformer_jax.base.errors import UserError
from transformer_jax.data import pipeline
from transformer_jax.data import raw_text
from transformer_jax.data.sources import wmt14
from transformer_jax.run import defaults as base

# The three training corpora in the order the train split concatenates them; the third
# pair of Europarl has an empty German side (skipped, as TFDS's wmt14_translate does).
EUROPARL = [('Wiederaufnahme der Sitzungsperiode', 'Resumption of the session'),
            ('Ich bitte Sie, sich zu erheben.', 'Please rise, then.'),
            ('', 'A line whose German side is empty.'),
            ('Die Größe ändert sich.', 'The size changes.')]
COMMONCRAWL = [('Wie geht es?', 'How are you?'), ('Straße & Platz', 'Street & square')]
NEWS_COMMENTARY = [('Gold für 10.000 Dollar?', '$10,000 Gold?')]
NEWSTEST2013 = [('Eine Stadt, zwei Welten.', 'One city, two worlds.'),
                ('Sie sagte „ja“.', 'She said "yes".')]
NEWSTEST2014 = [('Gutach: Mehr Sicherheit für Fußgänger',
                 'Gutach: Increased safety for pedestrians'),
                ('AT&T zahlt 5 € <mehr>', 'AT&T pays 5 € <more>'),
                ("Er sagte: 'Danke'", "He said: 'Thanks'")]


def _write(path: pathlib.Path, lines, compress=False):
  path.parent.mkdir(parents=True, exist_ok=True)
  data = ''.join(line + '\n' for line in lines).encode('utf-8')
  if compress:
    with gzip.open(path.with_name(path.name + '.gz'), 'wb') as f:
      f.write(data)
  else:
    path.write_bytes(data)


def _escape(text):
  return (text.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
          .replace('"', '&quot;').replace("'", '&#39;'))


def _write_sgml(path: pathlib.Path, sentences, set_tag='srcset'):
  lines = [f'<{set_tag} setid="newstest" srclang="any">',
           '<doc sysid="ref" docid="1012-bbc" genre="news" origlang="en">', '<p>']
  lines += [f'<seg id="{i}"> {_escape(s)}</seg>' for i, s in enumerate(sentences, start=1)]
  lines += ['</p>', '</doc>', f'</{set_tag}>']
  _write(path, lines)


def _side(pairs, lang):
  return [pair[wmt14.LANGUAGES.index(lang)] for pair in pairs]


def unpacked_archives(folder: pathlib.Path) -> pathlib.Path:
  """The layout `tar xzf` of the five archives gives, SGML newstest sets; News Commentary
  gzipped to show `.gz` is accepted."""
  for lang in wmt14.LANGUAGES:
    _write(folder / 'training' / f'europarl-v7.de-en.{lang}', _side(EUROPARL, lang))
    _write(folder / f'commoncrawl.de-en.{lang}', _side(COMMONCRAWL, lang))
    _write(folder / 'training' / f'news-commentary-v9.de-en.{lang}',
           _side(NEWS_COMMENTARY, lang), compress=True)
  _write_sgml(folder / 'dev' / 'newstest2013-src.en.sgm', _side(NEWSTEST2013, 'en'))
  _write_sgml(folder / 'dev' / 'newstest2013-ref.de.sgm', _side(NEWSTEST2013, 'de'), 'refset')
  _write_sgml(folder / 'test-full' / 'newstest2014-deen-src.en.sgm', _side(NEWSTEST2014, 'en'))
  _write_sgml(folder / 'test-full' / 'newstest2014-deen-ref.de.sgm', _side(NEWSTEST2014, 'de'),
              'refset')
  return folder


def flat_plain(folder: pathlib.Path) -> pathlib.Path:
  """Every file in one folder; newstest2013/2014 as plain text (and a stale SGML file that
  the plain one must win over)."""
  for lang in wmt14.LANGUAGES:
    for name, pairs in (('europarl-v7.de-en', EUROPARL), ('commoncrawl.de-en', COMMONCRAWL),
                        ('news-commentary-v9.de-en', NEWS_COMMENTARY),
                        ('newstest2013', NEWSTEST2013), ('newstest2014', NEWSTEST2014[:2])):
      _write(folder / f'{name}.{lang}', _side(pairs, lang))
  _write_sgml(folder / 'newstest2014-deen-src.en.sgm', ['not used'])
  return folder


def _config(raw_dir, data_dir=''):
  config = base.get_base_config().data
  config.update(dataset='wmt14', raw_dir=str(raw_dir), data_dir=str(data_dir))
  return config


def _pairs(config, split, workdir):
  sources, targets = pipeline.text_pair(config, split, str(workdir))
  return list(zip(targets, sources))          # (de, en): the config translates en -> de


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """(config, workdir) of the unpacked-archive layout, prepared once under workdir/tfds."""
  raw = unpacked_archives(tmp_path_factory.mktemp('raw'))
  workdir = tmp_path_factory.mktemp('run')
  config = _config(raw)
  pipeline.check_available(config, str(workdir))
  return config, workdir


def test_train_split_concatenates_the_three_corpora_in_order(prepared):
  config, workdir = prepared
  expected = [pair for pair in EUROPARL + COMMONCRAWL + NEWS_COMMENTARY if all(pair)]
  assert _pairs(config, 'train', workdir) == expected
  assert ('Die Größe ändert sich.', 'The size changes.') in expected


def test_sgml_eval_sets_keep_order_and_decode_references(prepared):
  config, workdir = prepared
  assert _pairs(config, 'validation', workdir) == NEWSTEST2013
  assert _pairs(config, 'test', workdir) == NEWSTEST2014     # &amp; &lt; &quot; &#39; decoded


def test_split_sizes_and_features(prepared):
  config, workdir = prepared
  builder = wmt14.prepare(pipeline.data_dir(config, str(workdir)), config.raw_dir)
  assert {split: len(builder.as_data_source(split)) for split in wmt14.SPLITS} == {
      'train': 6, 'validation': 2, 'test': 3}
  assert set(builder.info.features.keys()) == {'de', 'en'}
  assert builder.builder_config.name == 'de-en'


def test_load_examples_tokenizes_in_file_order(prepared):
  config, workdir = prepared

  class CharTokenizer:
    def encode(self, texts):
      return [[ord(c) % 50 + 3 for c in text] + [1] for text in texts]

  examples = pipeline.load_examples(config, CharTokenizer(), 'test', workdir=str(workdir))
  assert examples.sources == _side(NEWSTEST2014, 'en')
  assert examples.references == _side(NEWSTEST2014, 'de')
  assert [len(x) for x in examples.targets] == [len(s) + 1 for s in examples.references]


def test_prepared_data_no_longer_needs_the_raw_files(prepared, tmp_path):
  config, workdir = prepared
  moved = _config(tmp_path / 'gone', pipeline.data_dir(config, str(workdir)))
  pipeline.check_available(moved, str(tmp_path / 'run'))
  assert _pairs(moved, 'validation', tmp_path / 'run') == NEWSTEST2013


def test_plain_text_eval_sets_in_a_flat_folder(tmp_path):
  config = _config(flat_plain(tmp_path / 'raw'))
  before = _snapshot(tmp_path)
  pipeline.check_available(config, str(tmp_path / 'run'))     # good files: a check writes nothing
  assert _snapshot(tmp_path) == before
  assert _pairs(config, 'validation', tmp_path / 'run') == NEWSTEST2013
  assert _pairs(config, 'test', tmp_path / 'run') == NEWSTEST2014[:2]   # not the SGML file


class Wmt14Translate(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Stands for TFDS's own wmt14_translate (its name and config) as `tfds build` leaves it."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='de-en')]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {lang: tfds.features.Text() for lang in wmt14.LANGUAGES}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in wmt14.SPLITS}

  def _generate_examples(self, split):
    for i in range(2):
      yield i, {'de': f'{split} de {i}', 'en': f'{split} en {i}'}


def test_an_existing_tfds_wmt14_translate_is_read_as_is(tmp_path):
  data_dir = tmp_path / 'tfds'
  Wmt14Translate(data_dir=str(data_dir), file_format='array_record').download_and_prepare()
  config = _config(tmp_path / 'no_raw_files', data_dir)
  pipeline.check_available(config, str(tmp_path / 'run'))
  assert sorted(_pairs(config, 'test', tmp_path / 'run')) == [  # TFDS shuffled them
      ('test de 0', 'test en 0'), ('test de 1', 'test en 1')]
  assert not (data_dir / 'wmt14').exists()


def test_tokenizer_sentences_are_spread_over_the_corpora(prepared, monkeypatch):
  config, workdir = prepared
  seen = {}

  def fake_get_or_train(prefix, *, vocab_size, model_type, sentences_fn):
    seen['sentences'] = sentences_fn()
  monkeypatch.setattr(pipeline, 'WMT14_TOKENIZER_PAIRS', 2)
  monkeypatch.setattr(pipeline.tokenizer_lib, 'get_or_train_tokenizer', fake_get_or_train)
  pipeline.get_tokenizer(config, str(workdir))
  train = [pair for pair in EUROPARL + COMMONCRAWL + NEWS_COMMENTARY if all(pair)]
  assert seen['sentences'] == [train[0][1], train[3][1], train[0][0], train[3][0]]


def _snapshot(folder: pathlib.Path):
  return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in folder.rglob('*'))


def _refused(tmp_path, raw_dir, expected):
  """Both the preflight check and prepare refuse with one line holding `expected`, and
  nothing under tmp_path changes (no workdir, no TFDS folder)."""
  before = _snapshot(tmp_path)
  for call in (lambda: pipeline.check_available(_config(raw_dir), str(tmp_path / 'run')),
               lambda: wmt14.prepare(str(tmp_path / 'tfds'), str(raw_dir))):
    with pytest.raises(UserError) as e:
      call()
    message = str(e.value)
    assert expected in message and '\n' not in message, message
  assert _snapshot(tmp_path) == before
  return message


def test_missing_files_are_named_with_their_archives(tmp_path):
  raw = unpacked_archives(tmp_path / 'raw')
  (raw / 'commoncrawl.de-en.de').unlink()
  (raw / 'test-full' / 'newstest2014-deen-ref.de.sgm').unlink()
  message = _refused(tmp_path, raw, f'missing WMT14 files in {raw}: commoncrawl.de-en.de (from '
                     'training-parallel-commoncrawl.tgz), newstest2014.de or '
                     'newstest2014-deen-ref.de.sgm (from test-full.tgz): unpack those archives '
                     f'from {wmt14.SOURCE_URL} into it')
  assert 'set --experiment.data.raw_dir' in message


def test_no_raw_folder_and_nothing_prepared(tmp_path):
  message = _refused(tmp_path, tmp_path / 'nowhere', f'data.raw_dir {tmp_path / "nowhere"} does '
                     'not exist: set --experiment.data.raw_dir to the folder holding '
                     'europarl-v7.de-en.{de,en}')
  assert 'wmt14_translate/de-en is not prepared in' in message
  assert 'test-full.tgz' in message and wmt14.SOURCE_URL in message


def test_raw_dir_that_is_a_file(tmp_path):
  (tmp_path / 'raw').write_text('not a folder\n')
  _refused(tmp_path, tmp_path / 'raw', f'data.raw_dir {tmp_path / "raw"} is a file, not a folder')


@pytest.mark.parametrize('name, lines, expected', [
    ('commoncrawl.de-en.en', ['only one line'],
     '{raw}/commoncrawl.de-en.de has 2 lines but {raw}/commoncrawl.de-en.en has 1: parallel '
     'files must match line by line; replace both with the originals from '
     'training-parallel-commoncrawl.tgz'),
    ('training/europarl-v7.de-en.de', ['a', 'b', 'c', 'd', 'e'],
     'europarl-v7.de-en.de has 5 lines but {raw}/training/europarl-v7.de-en.en has 4:'),
    ('dev/newstest2013-ref.de.sgm', 'sgml:one', 'newstest2013-ref.de.sgm has 1 segments but '
     '{raw}/dev/newstest2013-src.en.sgm has 2: parallel files must match line by line; '
     'replace both with the originals from dev.tgz'),
    ('dev/newstest2013.en', ['One city, two worlds.'], '{raw}/dev/newstest2013-ref.de.sgm has '
     '2 segments but {raw}/dev/newstest2013.en has 1 lines'),
])
def test_mismatched_line_counts(tmp_path, name, lines, expected):
  raw = unpacked_archives(tmp_path / 'raw')
  if lines == 'sgml:one':
    _write_sgml(raw / name, ['Nur einer.'], 'refset')
  else:
    _write(raw / name, lines)
  _refused(tmp_path, raw, expected.format(raw=raw))


@pytest.mark.parametrize('name, data, expected', [
    ('training/europarl-v7.de-en.en', b'fine\nstill fine\ncaf\xe9\nok\n',
     'europarl-v7.de-en.en:3: byte 0xe9 at column 4 is not UTF-8: re-encode it as UTF-8 or '
     'replace it with the original from training-parallel-europarl-v7.tgz'),
    ('commoncrawl.de-en.de', b'', 'commoncrawl.de-en.de is empty: replace it with the original'),
    ('test-full/newstest2014-deen-src.en.sgm', b'<seg id="1">open\n',
     'newstest2014-deen-src.en.sgm:1: <seg> is not closed by </seg> on the same line'),
    ('dev/newstest2013-ref.de.sgm', b'<refset>\n</refset>\n',
     'newstest2013-ref.de.sgm holds no <seg> lines: replace it with the original from dev.tgz'),
    ('training/news-commentary-v9.de-en.de.gz', b'plain, not gzip\n',
     "news-commentary-v9.de-en.de.gz is not gzip-compressed (it starts with b'plain, n')"),
])
def test_malformed_files(tmp_path, name, data, expected):
  raw = unpacked_archives(tmp_path / 'raw')
  (raw / name).write_bytes(data)
  message = _refused(tmp_path, raw, expected)
  assert str(raw / name) in message


def test_a_file_changed_after_the_check_is_refused_while_reading(tmp_path):
  _write(tmp_path / 'a.de', ['eins', 'zwei'])
  _write(tmp_path / 'a.en', ['one'])
  pairs = wmt14.read_pairs({'de': str(tmp_path / 'a.de'), 'en': str(tmp_path / 'a.en')})
  assert next(pairs) == ('eins', 'one')
  with pytest.raises(UserError, match=r'a.en ends after 1 lines but .*a.de goes on'):
    next(pairs)


def test_decode_references():
  assert wmt14.decode_references('AT&amp;T &lt;b&gt; &quot;x&quot; &apos;y&#39; &#x20AC;') == (
      'AT&T <b> "x" \'y\' €')
  assert wmt14.decode_references('&amp;lt; & &nbsp; &#1114112;') == '&lt; & &nbsp; &#1114112;'


@pytest.mark.parametrize('compress', [False, True])
def test_iter_and_count_lines_agree_across_chunks(tmp_path, compress):
  lines = ['ä' * 5, '', 'x\ry', 'Größe', 'no end']
  data = ('\r\n'.join(lines[:2]) + '\n' + '\n'.join(lines[2:])).encode('utf-8')
  path = tmp_path / ('f.gz' if compress else 'f')
  if compress:
    with gzip.open(path, 'wb') as f:
      f.write(data)
  else:
    path.write_bytes(data)
  assert list(raw_text.iter_lines(str(path), 'fix')) == lines
  for chunk_bytes in (1, 3, 7, 1 << 20):        # chunks that cut multi-byte characters
    assert raw_text.count_lines(str(path), 'fix', chunk_bytes=chunk_bytes) == len(lines)


def test_not_utf8_names_the_line_past_the_first_chunk(tmp_path):
  path = tmp_path / 'f'
  path.write_bytes(b'ok\n' * 10 + b'bad \xff here\n' + b'ok\n')
  expected = f'{path}:11: byte 0xff at column 5 is not UTF-8: re-encode it as UTF-8 or fix'
  with pytest.raises(UserError, match=expected):
    raw_text.count_lines(str(path), 'fix', chunk_bytes=8)
  with pytest.raises(UserError, match=expected):
    list(raw_text.iter_lines(str(path), 'fix'))
