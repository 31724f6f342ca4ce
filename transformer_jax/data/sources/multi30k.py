"""Multi30k task 1 (Elliott et al., 2016) as a TFDS builder written as array_record.

One BuilderConfig per language pair (`de-en`, `de-fr`, `en-fr`); the translation
direction is chosen later by the caller. Splits: `train` (29,000 pairs),
`validation` (the `val` files, 1,014) and `test` (`test_2016_flickr`, 1,000), in the
original line order (shuffling is the pipeline's job, so the builder keeps order and
eval batches line up with the raw references).

The builder reads the official raw `<split>.<lang>.gz` files from a local folder (the
manual dir) and, when none is given, downloads them through `dl_manager`. TensorFlow
is never needed: prepare with `file_format='array_record'` and read with
`builder.as_data_source(split)`.
"""
import dataclasses
import os

import tensorflow_datasets as tfds
from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.data import preparation
from transformer_jax.data import raw_text

LANGUAGES = ('de', 'en', 'fr')
# TFDS split name -> prefix of the raw files.
RAW_SPLITS = {'train': 'train', 'validation': 'val', 'test': 'test_2016_flickr'}
SOURCE_URL = 'https://github.com/multi30k/dataset'
_RAW_URL = SOURCE_URL + '/raw/master/data/task1/raw/{name}.gz'
_RAW_FILES_HINT = 'train.en.gz, val.en.gz, test_2016_flickr.en.gz and their de/fr twins'
# `data.raw_dir` that has the builder download the public files (needs internet).
DOWNLOAD = ''

_CITATION = """@inproceedings{elliott-etal-2016-multi30k,
  title = {Multi30K: Multilingual English-German Image Descriptions},
  author = {Elliott, Desmond and Frank, Stella and Sima'an, Khalil and Specia, Lucia},
  booktitle = {Proceedings of the 5th Workshop on Vision and Language},
  year = {2016},
  pages = {70--74},
}"""


def pair_name(lang_a, lang_b):
  """Name of the config holding both languages, e.g. ('en', 'de') -> 'de-en'."""
  for lang in (lang_a, lang_b):
    if lang not in LANGUAGES:
      raise UserError(f'Multi30k has no language {lang!r}: set --experiment.data.source_lang/'
                      f'target_lang to two of {", ".join(LANGUAGES)}')
  if lang_a == lang_b:
    raise UserError(f'source and target language are both {lang_a!r}: set '
                    '--experiment.data.source_lang and target_lang to two different languages')
  return '-'.join(sorted((lang_a, lang_b)))


def raw_file_names(split):
  """Names of the raw files of one split (TFDS or raw name), e.g. 'val.en.gz'."""
  prefix = _raw_prefix(split)
  return [f'{prefix}.{lang}.gz' for lang in LANGUAGES]


def _raw_prefix(split):
  if split in RAW_SPLITS:
    return RAW_SPLITS[split]
  if split in RAW_SPLITS.values():
    return split
  raise UserError(f'Multi30k has no split {split!r}: use one of {", ".join(RAW_SPLITS)}')


def missing_raw_files(raw_dir, languages=LANGUAGES):
  """Raw files of all splits for `languages` that are not in `raw_dir`."""
  return [f'{prefix}.{lang}.gz' for prefix in RAW_SPLITS.values() for lang in languages
          if not os.path.isfile(os.path.join(raw_dir, f'{prefix}.{lang}.gz'))]


def check_raw_dir(raw_dir, languages=LANGUAGES):
  """Raises UserError unless `raw_dir` holds every raw file of `languages`."""
  raw_text.check_folder(raw_dir, 'data.raw_dir', _RAW_FILES_HINT)
  missing = missing_raw_files(raw_dir, languages)
  if missing:
    raise UserError(_missing_message(raw_dir, missing, languages))


def _names(languages):
  """The raw files of `languages`, e.g. 'train.de.gz, train.en.gz, val.de.gz, ...'."""
  return ', '.join(f'{prefix}.{lang}.gz' for prefix in RAW_SPLITS.values()
                   for lang in sorted(languages))


def _missing_message(raw_dir, missing, languages):
  """Where the files were looked for, and the two ways to get them: point data.raw_dir at a
  copy (named as the public repository names them), or leave it empty to download them."""
  folder = os.path.abspath(raw_dir)
  relative = (f" (data.raw_dir={raw_dir!r} is relative to the current directory "
              f"{os.getcwd()})" if not os.path.isabs(raw_dir) else '')
  shown = ', '.join(missing[:3]) + (', ...' if len(missing) > 3 else '')
  return (f'no Multi30k files ({shown}) in {folder}{relative}: set '
          f'--experiment.data.raw_dir=<folder with {_names(languages)}> (Multi30k task 1, '
          f"public at {SOURCE_URL} in data/task1/raw), or --experiment.data.raw_dir='' to have "
          'TFDS download them (needs internet)')


def read_lines(path):
  """Lines of one gzipped UTF-8 file, without their line ends (nothing else is stripped).

  Raises:
    UserError naming the file (and line) when it is not gzip, damaged, empty or not UTF-8.
  """
  return raw_text.read_gzip_lines(path, f'replace it with the original from {SOURCE_URL}')


def _read_parallel(paths):
  """{lang: lines} of parallel files ({lang: path}), all with the same number of lines."""
  lines = {lang: read_lines(path) for lang, path in paths.items()}
  first, *others = paths
  for lang in others:
    if len(lines[lang]) != len(lines[first]):
      raise UserError(
          f'{paths[first]} has {len(lines[first])} lines but {paths[lang]} has '
          f'{len(lines[lang])}: parallel files must match line by line; replace them with the '
          f'originals from {SOURCE_URL}')
  return lines


def _read_pair(paths, src_lang, tgt_lang):
  """Reads two parallel files and checks they have the same number of lines."""
  lines = _read_parallel({src_lang: paths[src_lang], tgt_lang: paths[tgt_lang]})
  return lines[src_lang], lines[tgt_lang]


def check_raw_files(raw_dir, languages=LANGUAGES):
  """Raises UserError unless `raw_dir` holds every raw file of `languages` as gzipped UTF-8
  text, none empty, with equal line counts per split.

  Reads every file whole: the task 1 files of two languages are ~4 MB gzipped and take
  about 0.1 s, far less than preparing them.
  """
  check_raw_dir(raw_dir, languages)
  for prefix in RAW_SPLITS.values():
    _read_parallel({lang: os.path.join(raw_dir, f'{prefix}.{lang}.gz') for lang in languages})


def check_prepared_or_raw(data_dir, lang_a, lang_b, raw_dir):
  """Raises UserError, before anything is written, unless the pair is prepared in `data_dir`,
  `raw_dir` holds good raw files for it (see check_raw_files), or `raw_dir` is DOWNLOAD ('':
  `prepare` downloads the public files, and says so if it cannot)."""
  builder = preparation.quiet_builder(lambda: Multi30k(
      data_dir=data_dir, config=pair_name(lang_a, lang_b), file_format='array_record'))
  if not preparation.is_prepared(builder) and raw_dir != DOWNLOAD:
    check_raw_files(raw_dir, (lang_a, lang_b))


def load_text_split(raw_dir, split, src_lang, tgt_lang):
  """The original (detokenized) sentences of one split, straight from the raw files.

  Args:
    raw_dir: folder holding `<split>.<lang>.gz`.
    split: 'train' | 'validation' | 'test' (or the raw names 'val', 'test_2016_flickr').
    src_lang: source language, one of 'de', 'en', 'fr'.
    tgt_lang: target language.

  Returns:
    (sources, targets): two lists of str of equal length, in file order.
  """
  pair_name(src_lang, tgt_lang)  # validates the languages
  prefix = _raw_prefix(split)
  check_raw_dir(raw_dir, (src_lang, tgt_lang))
  paths = {lang: os.path.join(raw_dir, f'{prefix}.{lang}.gz') for lang in (src_lang, tgt_lang)}
  return _read_pair(paths, src_lang, tgt_lang)


@dataclasses.dataclass(eq=False)
class Multi30kConfig(tfds.core.BuilderConfig):
  """One language pair; `languages` is sorted, e.g. ('de', 'en')."""
  languages: tuple[str, ...] = ('de', 'en')


def _pair_config(lang_a, lang_b):
  return Multi30kConfig(name=f'{lang_a}-{lang_b}', languages=(lang_a, lang_b),
                        description=f'Multi30k task 1, {lang_a} and {lang_b}.')


class Multi30k(tfds.core.GeneratorBasedBuilder):
  """Multi30k task 1 raw text, one Text feature per language of the pair."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Task 1 raw files; train / val / test_2016_flickr.'}
  BUILDER_CONFIGS = [_pair_config('de', 'en'), _pair_config('de', 'fr'), _pair_config('en', 'fr')]
  # Declaring it makes TFDS accept DownloadConfig(manual_dir=...) holding the raw files.
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Put the task 1 raw files (train/val/test_2016_flickr).<lang>.gz from {SOURCE_URL} in '
      'manual_dir, or leave it empty to download them.')

  def _log_download_bytes(self):
    pass        # `_prepare_from_raw` says where the files come from (TFDS: "Unknown size")

  def _log_download_done(self):
    pass

  def _info(self):
    languages = self.builder_config.languages
    return tfds.core.DatasetInfo(
        builder=self,
        description='Multi30k task 1: English image captions with German and French translations.',
        features=tfds.features.FeaturesDict({lang: tfds.features.Text() for lang in languages}),
        homepage=SOURCE_URL,
        citation=_CITATION,
        # Keep file order: eval batches must line up with the raw references.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    languages = self.builder_config.languages
    names = [f'{prefix}.{lang}' for prefix in RAW_SPLITS.values() for lang in languages]
    raw_dir = _manual_dir(dl_manager)
    if raw_dir and not missing_raw_files(raw_dir, languages):
      paths = {name: os.path.join(raw_dir, name + '.gz') for name in names}
    else:
      # Online fallback: the same public files; TFDS caches and checksums them.
      paths = dl_manager.download({name: _RAW_URL.format(name=name) for name in names})
    return {split: self._generate_examples(
        {lang: os.fspath(paths[f'{prefix}.{lang}']) for lang in languages})
            for split, prefix in RAW_SPLITS.items()}

  def _generate_examples(self, paths):
    lang_a, lang_b = self.builder_config.languages
    lines_a, lines_b = _read_pair(paths, lang_a, lang_b)
    for i, (a, b) in enumerate(zip(lines_a, lines_b)):
      yield i, {lang_a: a, lang_b: b}


def _manual_dir(dl_manager):
  """The manual dir if one was given and holds files, else None (then we download)."""
  try:
    return os.fspath(dl_manager.manual_dir)
  except (AssertionError, ValueError):  # TFDS raises these for "not given / empty".
    return None


def prepare(data_dir, lang_a, lang_b, raw_dir=''):
  """Builds (once) and returns the Multi30k builder of a language pair.

  Args:
    data_dir: TFDS data dir; an already prepared pair there is reused as is.
    lang_a: one language of the pair (order does not matter).
    lang_b: the other language.
    raw_dir: folder holding the raw `*.gz` files; '' downloads them (needs internet).

  Returns:
    A prepared `Multi30k` builder; read it with `builder.as_data_source(split)`.
  """
  name = pair_name(lang_a, lang_b)
  return preparation.prepare_once(
      data_dir, f'multi30k_{name}',
      lambda: Multi30k(data_dir=data_dir, config=name, file_format='array_record'),
      lambda builder: _prepare_from_raw(builder, raw_dir),
      check=lambda: raw_dir and check_raw_files(raw_dir, (lang_a, lang_b)))


def _prepare_from_raw(builder, raw_dir):
  source = (f'the raw files in {os.path.abspath(raw_dir)}' if raw_dir
            else f'a download of the public files ({SOURCE_URL})')
  logging.info('preparing Multi30k %s from %s into %s', builder.builder_config.name, source,
               builder.data_dir)
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(raw_dir) if raw_dir else None))
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if raw_dir:
      raise  # local files were there, so this is a bug, not a user mistake
    raise UserError(
        f'could not download Multi30k ({type(e).__name__}: {str(e).splitlines()[0][:200]}): '
        f'set --experiment.data.raw_dir=<folder with {_names(builder.builder_config.languages)}>'
        f' (Multi30k task 1, public at {SOURCE_URL} in data/task1/raw)') from e
