"""WMT 2014 English-German (Bojar et al., 2014), the paper's data (Vaswani et al., 2017, §5.1),
as a TFDS builder written as array_record from the raw public files (no TensorFlow).

Splits and features ({'de': Text, 'en': Text}), in file order (shuffling is the pipeline's job):
  train       Europarl v7 + Common Crawl + News Commentary v9, concatenated in that order
              (about 4.5 M pairs; a pair with an empty or blank side is skipped, as TFDS's
              wmt14_translate does).
  validation  newstest2013 (3,000 sentences).
  test        newstest2014, the full set (3,003 sentences) the paper reports BLEU on.

Where the files come from: the WMT14 translation task page,
https://www.statmt.org/wmt14/translation-task.html. Unpack these archives into `data.raw_dir`:

  archive                             files used
  training-parallel-europarl-v7.tgz   training/europarl-v7.de-en.{de,en}
  training-parallel-commoncrawl.tgz   commoncrawl.de-en.{de,en}  (at the top of the archive)
  training-parallel-nc-v9.tgz         training/news-commentary-v9.de-en.{de,en}
  dev.tgz                             dev/newstest2013.{de,en}  (or dev/newstest2013-src.en.sgm
                                      and dev/newstest2013-ref.de.sgm)
  test-full.tgz                       test-full/newstest2014-deen-src.en.sgm and
                                      test-full/newstest2014-deen-ref.de.sgm

(test-filtered.tgz holds files of the same names, under test/, which is not searched, with
2,737 of the sentences: use test-full.tgz.)
Each file is looked up in `data.raw_dir` itself and in its subfolders `training/`, `dev/`
and `test-full/`, as plain text or gzipped (`<name>.gz`); so `tar xzf` of the five archives in
one folder is all the layout needed. For each language of newstest2013 / newstest2014 the
first file found of these is used:
  - plain text, one sentence per line: `newstest2013.<lang>`, `newstest2014.<lang>` (the
    latter e.g. from `sacrebleu -t wmt14/full -l en-de --echo src` / `--echo ref`);
  - the official SGML: one `<seg id="..">sentence</seg>` per line; the text between the tags
    is taken, its XML character references (&amp; &lt; &gt; &quot; &apos; &#NN; &#xHH;)
    decoded and the spaces at its ends stripped. English comes from `-src.en.sgm` (else
    `-ref.en.sgm`), German from `-ref.de.sgm` (else `-src.de.sgm`): sacrebleu's en-de pair.

Everything is checked before anything is written (`check_raw_files`): each file is there,
is UTF-8 (errors name the file and line), is not empty, and the two sides of every corpus
have as many lines (segments). The check streams every file once, at ~0.2 GB/s on 2 cores
(seconds for the ~1.3 GB of training text, against ~8 minutes to prepare it at ~10k pairs/s).
"""
import dataclasses
import os
import re

import tensorflow_datasets as tfds

from transformer_jax.base.errors import UserError
from transformer_jax.data import preparation
from transformer_jax.data import raw_text

LANGUAGES = ('de', 'en')
SOURCE_URL = 'https://www.statmt.org/wmt14/translation-task.html'
# TFDS's own WMT14 builder: read as is where a user already prepared it as array_record.
TFDS_NAME = 'wmt14_translate/de-en'
# Where the archives put their files, relative to data.raw_dir ('' = the folder itself).
SUBFOLDERS = ('', 'training', 'dev', 'test-full')

_CITATION = """@inproceedings{bojar-etal-2014-findings,
  title = {Findings of the 2014 Workshop on Statistical Machine Translation},
  author = {Bojar, Ondrej and Buck, Christian and Federmann, Christian and Haddow, Barry and
            Koehn, Philipp and Leveling, Johannes and Monz, Christof and Pecina, Pavel and
            Post, Matt and Saint-Amand, Herve and Soricut, Radu and Specia, Lucia and
            Tamchyna, Ale{\\v{s}}},
  booktitle = {Proceedings of the Ninth Workshop on Statistical Machine Translation},
  year = {2014},
  pages = {12--58},
}"""


@dataclasses.dataclass(frozen=True)
class Corpus:
  """One parallel corpus of a split.

  Attributes:
    name: e.g. 'europarl-v7.de-en' or 'newstest2014'.
    archive: the archive on the WMT14 page that holds its files.
    names: {lang: the file names accepted for that side, the first found wins}.
  """
  name: str
  archive: str
  names: dict


def _training(name, archive):
  return Corpus(name, archive, {lang: (f'{name}.{lang}',) for lang in LANGUAGES})


def _news_test(name, archive, sgml):
  return Corpus(name, archive, {lang: (f'{name}.{lang}',) + sgml[lang] for lang in LANGUAGES})


SPLITS = {
    'train': (
        _training('europarl-v7.de-en', 'training-parallel-europarl-v7.tgz'),
        _training('commoncrawl.de-en', 'training-parallel-commoncrawl.tgz'),
        _training('news-commentary-v9.de-en', 'training-parallel-nc-v9.tgz'),
    ),
    'validation': (_news_test('newstest2013', 'dev.tgz', {
        'en': ('newstest2013-src.en.sgm', 'newstest2013-ref.en.sgm'),
        'de': ('newstest2013-ref.de.sgm', 'newstest2013-src.de.sgm')}),),
    'test': (_news_test('newstest2014', 'test-full.tgz', {
        'en': ('newstest2014-deen-src.en.sgm', 'newstest2014-deen-ref.en.sgm'),
        'de': ('newstest2014-deen-ref.de.sgm', 'newstest2014-deen-src.de.sgm')}),),
}
RAW_FILES_HINT = (
    'europarl-v7.de-en.{de,en}, commoncrawl.de-en.{de,en}, news-commentary-v9.de-en.{de,en}, '
    'newstest2013.{de,en} and newstest2014-deen-{src.en,ref.de}.sgm, unpacked from '
    'training-parallel-europarl-v7.tgz, training-parallel-commoncrawl.tgz, '
    f'training-parallel-nc-v9.tgz, dev.tgz and test-full.tgz of {SOURCE_URL}')


def find_file(raw_dir, names):
  """The first of `names` (each plain or `.gz`) in `raw_dir` or its SUBFOLDERS, or None."""
  for name in names:
    for folder in SUBFOLDERS:
      for suffix in ('', '.gz'):
        path = os.path.join(raw_dir, folder, name + suffix)
        if os.path.isfile(path):
          return path
  return None


def find_raw_files(raw_dir):
  """({split: [{lang: path} per corpus]}, [(corpus, lang) of the sides not found])."""
  found, missing = {}, []
  for split, corpora in SPLITS.items():
    found[split] = []
    for corpus in corpora:
      paths = {lang: find_file(raw_dir, corpus.names[lang]) for lang in LANGUAGES}
      missing += [(corpus, lang) for lang, path in paths.items() if path is None]
      found[split].append(paths)
  return found, missing


def check_raw_dir(raw_dir, data_dir=None):
  """Raises UserError unless `raw_dir` is a folder holding a file for every side of every
  corpus; returns {split: [{lang: path} per corpus]}.

  Args:
    raw_dir: data.raw_dir.
    data_dir: the TFDS folder searched for prepared data, named when `raw_dir` is missing.
  """
  raw_text.check_folder(raw_dir, 'data.raw_dir', RAW_FILES_HINT)
  if not raw_dir or not os.path.isdir(raw_dir):
    where = f'data.raw_dir {os.path.abspath(raw_dir)} does not exist' if raw_dir else (
        'data.raw_dir is empty')
    prepared = f'{TFDS_NAME} is not prepared in {data_dir} and ' if data_dir else ''
    raise UserError(f'no WMT14 data: {prepared}{where}: set --experiment.data.raw_dir to '
                    f'the folder holding {RAW_FILES_HINT}')
  found, missing = find_raw_files(raw_dir)
  if missing:
    named = [f'{" or ".join(corpus.names[lang][:2])} (from {corpus.archive})'
             for corpus, lang in missing]
    more = f' and {len(named) - 3} more' if len(named) > 3 else ''
    raise UserError(
        f'missing WMT14 files in {os.path.abspath(raw_dir)}: {", ".join(named[:3])}{more}: '
        f'unpack those archives from {SOURCE_URL} into it (plain or .gz; its subfolders '
        f'{", ".join(f + "/" for f in SUBFOLDERS if f)} are searched too), or set '
        '--experiment.data.raw_dir to the folder holding them')
  return found


def check_raw_files(raw_dir, data_dir=None):
  """Raises UserError unless every raw file is there, UTF-8, not empty, and both sides of
  each corpus have the same number of lines (SGML: segments). Streams each file once
  (seconds for the ~1.3 GB of training text, see `raw_text.count_lines`)."""
  for paths_of_corpora in check_raw_dir(raw_dir, data_dir).values():
    for paths in paths_of_corpora:
      counts = {lang: _count(path) for lang, path in paths.items()}
      _check_same_length(paths, counts)


def _count(path):
  if _is_sgml(path):
    return len(read_segments(path))
  return raw_text.count_lines(path, _fix(path))


def _check_same_length(paths, counts):
  (lang_a, path_a), (lang_b, path_b) = paths.items()
  if counts[lang_a] != counts[lang_b]:
    unit_b = '' if _unit(path_b) == _unit(path_a) else ' ' + _unit(path_b)
    raise UserError(
        f'{path_a} has {counts[lang_a]} {_unit(path_a)} but {path_b} has {counts[lang_b]}'
        f'{unit_b}: parallel files must match line by line; replace both with the originals '
        f'from {_archive(path_a)} ({SOURCE_URL})')


def _is_sgml(path):
  return path.endswith(('.sgm', '.sgm.gz'))


def _unit(path):
  return 'segments' if _is_sgml(path) else 'lines'


def _archive(path):
  """The archive on the WMT14 page that holds the raw file `path`."""
  name = os.path.basename(path)
  for corpora in SPLITS.values():
    for corpus in corpora:
      if name.startswith(corpus.name):
        return corpus.archive
  return 'its archive'


def _fix(path):
  """How to get a good copy of the raw file `path`."""
  return f'replace it with the original from {_archive(path)} ({SOURCE_URL})'


_SEGMENT = re.compile(r'<seg\b[^>]*>(.*?)</seg>', re.IGNORECASE)
_CHARACTER_REFERENCE = re.compile(r'&(amp|lt|gt|quot|apos|#[0-9]+|#[xX][0-9a-fA-F]+);')
_NAMED_REFERENCES = {'amp': '&', 'lt': '<', 'gt': '>', 'quot': '"', 'apos': "'"}


def decode_references(text):
  """`text` with XML's five named references and numeric ones (&#NN;, &#xHH;) decoded, in
  one pass (so '&amp;lt;' gives '&lt;'); anything else, such as a bare '&', is kept."""
  def replace(match):
    name = match.group(1)
    if not name.startswith('#'):
      return _NAMED_REFERENCES[name]
    code = int(name[2:], 16) if name[1] in 'xX' else int(name[1:])
    return chr(code) if code <= 0x10FFFF else match.group(0)
  return _CHARACTER_REFERENCE.sub(replace, text)


def read_segments(path):
  """The sentences of a WMT SGML file (`<seg id="..">text</seg>`, one a line), in file
  order, references decoded and ends stripped.

  Raises:
    UserError naming `path` (and line) for a `<seg>` not closed on its line, a file with
    no segments, or bytes that are not UTF-8.
  """
  segments = []
  for number, line in enumerate(raw_text.iter_lines(path, _fix(path)), start=1):
    found = _SEGMENT.findall(line)
    if not found and '<seg' in line.lower():
      raise UserError(f'{path}:{number}: <seg> is not closed by </seg> on the same line: '
                      f'{_fix(path)}')
    segments += [decode_references(text).strip() for text in found]
  if not segments:
    raise UserError(f'{path} holds no <seg> lines: {_fix(path)}')
  return segments


def read_pairs(paths):
  """Yields (de, en) sentence pairs of one corpus ({lang: path}), in file order, streaming
  plain files line by line (SGML files are small and read whole).

  Raises:
    UserError when one side ends before the other (a file changed after the check).
  """
  sides = [read_segments(paths[lang]) if _is_sgml(paths[lang])
           else raw_text.iter_lines(paths[lang], _fix(paths[lang])) for lang in LANGUAGES]
  done = object()
  for count, (de, en) in enumerate(zip(*(_then(side, done) for side in sides))):
    if de is done and en is done:
      return
    if de is done or en is done:
      short, other = (paths['de'], paths['en']) if de is done else (paths['en'], paths['de'])
      raise UserError(f'{short} ends after {count} {_unit(short)} but {other} goes on: '
                      'parallel files must match line by line; replace both with the '
                      f'originals from {_archive(short)} ({SOURCE_URL})')
    yield de, en


def _then(iterable, end):
  yield from iterable
  yield end


def tfds_source(data_dir, split):
  """The split of TFDS's own `wmt14_translate/de-en` if prepared as array_record in
  `data_dir` (by `tfds build` elsewhere), else None."""
  try:
    return tfds.data_source(TFDS_NAME, data_dir=data_dir, split=split, download=False)
  except Exception:  # pylint: disable=broad-except  (tfds raises several kinds)
    return None


def check_prepared_or_raw(data_dir, raw_dir):
  """Raises UserError, before anything is written, unless WMT14 is prepared in `data_dir`
  (TFDS's wmt14_translate or this builder's) or `raw_dir` holds good raw files."""
  if tfds_source(data_dir, 'validation') is not None:
    return
  builder = preparation.quiet_builder(
      lambda: Wmt14(data_dir=data_dir, config='de-en', file_format='array_record'))
  if not builder.is_prepared():
    check_raw_files(raw_dir, data_dir)


class Wmt14(tfds.core.GeneratorBasedBuilder):
  """WMT14 de-en from the raw files of the WMT14 page (see the module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Europarl v7 + Common Crawl + News Commentary v9; newstest2013; '
                            'newstest2014 (full).'}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(
      name='de-en', description='WMT14 English-German, the training corpora of the paper.')]
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Unpack into manual_dir: {RAW_FILES_HINT}.'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='WMT14 English-German translation (statmt.org raw files).',
        features=tfds.features.FeaturesDict({lang: tfds.features.Text() for lang in LANGUAGES}),
        homepage=SOURCE_URL,
        citation=_CITATION,
        disable_shuffling=True,   # file order: eval batches line up with the references
    )

  def _split_generators(self, dl_manager):
    found = check_raw_dir(os.fspath(dl_manager.manual_dir))
    return {split: self._generate_examples(paths) for split, paths in found.items()}

  def _generate_examples(self, paths_of_corpora):
    index = 0                       # increasing integer keys keep the order of the files
    for paths in paths_of_corpora:
      for de, en in read_pairs(paths):
        if de.strip() and en.strip():
          yield index, {'de': de, 'en': en}
        index += 1


def prepare(data_dir, raw_dir):
  """Builds (once) and returns the WMT14 builder from the raw files.

  Args:
    data_dir: TFDS data dir; a split already prepared there is reused as is.
    raw_dir: folder holding the raw files (see the module docstring).

  Returns:
    A prepared `Wmt14` builder; read it with `builder.as_data_source(split)`.
  """
  return preparation.prepare_once(
      data_dir, 'wmt14',
      lambda: Wmt14(data_dir=data_dir, config='de-en', file_format='array_record'),
      lambda builder: builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=os.path.abspath(raw_dir))),
      check=lambda: check_raw_files(raw_dir, data_dir))   # before TFDS writes anything
