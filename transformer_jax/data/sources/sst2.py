"""SST-2 (Socher et al., 2013, in its GLUE form, Wang et al., 2018): sentence -> sentiment.

The raw files `train.tsv.gz` (67,349 phrases and sentences) and `dev.tsv.gz` (872
sentences), header `text<TAB>label`, label 0 = negative and 1 = positive, are read from
`data.raw_dir` by a TFDS builder written as array_record (splits `train` and
`validation`, file order kept) and read back in one batched call of the grain-compatible
data source. The GLUE test labels are not public, so there is no `test` split: dev
accuracy is what the literature reports.

Batches: `inputs` int32 [rows, length] (sentencepiece ids + EOS, 0-padded, bucketed by
length under the token budget) and `label` int32 [rows]. A label rides through
`pipeline.TrainIterator` and `pipeline.eval_data_of` as a one-token target, so the
planning, fingerprint and bitwise resume of the translation data serve unchanged;
`as_labelled` turns such a batch into the classifier's keys (pad rows get label 0).
"""
import dataclasses
import os

import numpy as np
import tensorflow_datasets as tfds

from transformer_jax.base.errors import UserError
from transformer_jax.data import pipeline
from transformer_jax.data import preparation
from transformer_jax.data import raw_text
from transformer_jax.data import tokenizer as tokenizer_lib

# TFDS split name -> raw file.
RAW_FILES = {'train': 'train.tsv.gz', 'validation': 'dev.tsv.gz'}
HEADER = 'text\tlabel'
LABELS = ('negative', 'positive')
SOURCE = ('GLUE SST-2 (https://gluebenchmark.com/tasks, SST-2.zip; Stanford Sentiment '
          'Treebank), gzipped with the header "text<TAB>label"')

_CITATION = """@inproceedings{socher-etal-2013-recursive,
  title = {Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank},
  author = {Socher, Richard and Perelygin, Alex and Wu, Jean and Chuang, Jason and
            Manning, Christopher D. and Ng, Andrew and Potts, Christopher},
  booktitle = {Proceedings of EMNLP},
  year = {2013},
}"""


def check_raw_dir(raw_dir):
  """Raises UserError unless `raw_dir` holds train.tsv.gz and dev.tsv.gz."""
  raw_text.check_folder(raw_dir, 'data.raw_dir', 'train.tsv.gz and dev.tsv.gz')
  missing = [name for name in RAW_FILES.values()
             if not os.path.isfile(os.path.join(raw_dir, name))]
  if missing:
    raise UserError(
        f'no SST-2 files ({", ".join(missing)}) in {os.path.abspath(raw_dir)}: set '
        f'--experiment.data.raw_dir to the folder holding train.tsv.gz and dev.tsv.gz '
        f'(source: {SOURCE})')


def read_tsv(path):
  """(texts, labels) of one raw file, in file order.

  Args:
    path: a gzipped UTF-8 file with the header `text<TAB>label` and label 0 or 1.

  Returns:
    (list of str, list of int).

  Raises:
    UserError naming `path:line` for a wrong header, column count, label or non-UTF-8
    bytes, and naming `path` for a file that is not gzip, is damaged or has no rows.
  """
  lines = raw_text.read_gzip_lines(path, f'replace it with the original from {SOURCE}')
  if lines[0] != HEADER:
    raise UserError(f'{path}:1: header {lines[0][:40]!r} is not {HEADER!r}: use the SST-2 '
                    f'files from {SOURCE}')
  if len(lines) == 1:
    raise UserError(f'{path} has a header but no rows: replace it with the original from '
                    f'{SOURCE}')
  texts, labels = [], []
  for number, line in enumerate(lines[1:], start=2):
    columns = line.split('\t')
    if len(columns) != 2 or columns[1] not in ('0', '1'):
      raise UserError(f'{path}:{number}: expected "sentence<TAB>0|1", got {line[:60]!r}: '
                      f'fix the line or replace the file with the original from {SOURCE}')
    texts.append(columns[0])
    labels.append(int(columns[1]))
  return texts, labels


def check_raw_files(raw_dir):
  """Raises UserError unless `raw_dir` holds both raw files, well formed (see read_tsv).

  Reads them whole (~4 MB of text, about 0.2 s), only while they are not yet prepared."""
  check_raw_dir(raw_dir)
  for name in RAW_FILES.values():
    read_tsv(os.path.join(raw_dir, name))


class Sst2(tfds.core.GeneratorBasedBuilder):
  """SST-2 sentences with their binary sentiment label."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'GLUE SST-2 train and dev.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Put train.tsv.gz and dev.tsv.gz ({SOURCE}) in manual_dir.'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description='SST-2: movie-review sentences labelled negative (0) or positive (1).',
        features=tfds.features.FeaturesDict({
            'text': tfds.features.Text(), 'label': tfds.features.ClassLabel(names=LABELS)}),
        homepage='https://nlp.stanford.edu/sentiment/',
        citation=_CITATION,
        disable_shuffling=True,   # eval batches line up with the file order
    )

  def _split_generators(self, dl_manager):
    raw_dir = os.fspath(dl_manager.manual_dir)
    return {split: self._generate_examples(os.path.join(raw_dir, name))
            for split, name in RAW_FILES.items()}

  def _generate_examples(self, path):
    texts, labels = read_tsv(path)
    for i, (text, label) in enumerate(zip(texts, labels)):
      yield i, {'text': text, 'label': label}


def prepare(data_dir, raw_dir):
  """Builds (once) and returns the SST-2 builder; read it with `as_data_source(split)`."""
  return preparation.prepare_once(
      data_dir, 'sst2', lambda: Sst2(data_dir=data_dir, file_format='array_record'),
      lambda builder: builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=os.path.abspath(raw_dir))),
      check=lambda: check_raw_files(raw_dir))   # bad files are refused before TFDS writes


def _check_split(split):
  if split == 'test':
    raise UserError('SST-2 has no test split (the GLUE test labels are not public): set '
                    '--experiment.eval.split=validation (the dev set)')
  if split not in RAW_FILES:
    raise UserError(f'SST-2 has no split {split!r}: use one of {", ".join(RAW_FILES)}')


def load_split(data_config, split, workdir):
  """(texts, labels) of `split` as prepared by the builder, in file order."""
  _check_split(split)
  data_dir = pipeline.data_dir(data_config, workdir)
  builder = prepare(data_dir, data_config.raw_dir)
  records = pipeline.read_all(builder.as_data_source(split))
  return [r['text'].decode('utf-8') for r in records], [int(r['label']) for r in records]


def check_available(data_config, workdir):
  """Raises UserError, before anything is written, if SST-2 cannot be had or batched."""
  if data_config.pack:
    raise UserError('SST-2 batches carry one label per row, so they cannot be packed: set '
                    '--experiment.data.pack=False')
  data_dir = pipeline.data_dir(data_config, workdir)
  if not preparation.quiet_builder(
      lambda: Sst2(data_dir=data_dir, file_format='array_record')).is_prepared():
    check_raw_files(data_config.raw_dir)


def get_tokenizer(data_config, workdir):
  """A sentencepiece model trained on the train sentences (reused when present)."""
  prefix = os.path.join(pipeline.tokenizer_dir(data_config, workdir),
                        f'sst2_{data_config.tokenizer_type}{data_config.vocab_size}')
  return tokenizer_lib.get_or_train_tokenizer(
      prefix, vocab_size=data_config.vocab_size, model_type=data_config.tokenizer_type,
      sentences_fn=lambda: load_split(data_config, 'train', workdir)[0])


def load_examples(data_config, tokenizer, split, *, workdir):
  """`pipeline.Examples` of a split: ids + EOS as inputs, the label as a one-token target."""
  texts, labels = load_split(data_config, split, workdir)
  return pipeline.Examples(
      inputs=[np.asarray(ids, np.int32) for ids in tokenizer.encode(texts)],
      targets=[np.asarray([label], np.int32) for label in labels],
      sources=texts, references=[LABELS[label] for label in labels])


def as_labelled(batch):
  """{'inputs', 'targets'} with one-token targets -> {'inputs', 'label' int32 [rows]}."""
  return {'inputs': batch['inputs'], 'label': np.ascontiguousarray(batch['targets'][:, 0])}


class LabelledIterator(pipeline.TrainIterator):
  """pipeline.TrainIterator whose batches are {'inputs', 'label'}; state and resume as there."""

  def __next__(self):
    return as_labelled(super().__next__())


def make_train_iterator(data_config, tokenizer, *, workdir, batch_multiple, process_index=0,
                        process_count=1):
  """Bucketed training batches of SST-2 train, reshuffled per (shuffle_seed, epoch).

  Args: as `pipeline.make_train_iterator`.

  Returns:
    A LabelledIterator; sentences longer than `data.max_len` tokens are dropped.
  """
  check_available(data_config, workdir)
  examples = load_examples(data_config, tokenizer, 'train', workdir=workdir)
  return pipeline.train_iterator_of(examples, data_config, batch_multiple=batch_multiple,
                                    process_index=process_index, process_count=process_count,
                                    iterator_class=LabelledIterator)


def make_eval_batches(data_config, tokenizer, split, *, workdir, batch_multiple, process_index=0,
                      process_count=1, rows_per_batch=None, max_input_len=None):
  """Every sentence of `split` once, in order; pad rows (label 0) only at the end.

  Args: as `pipeline.make_eval_batches`.

  Returns:
    pipeline.EvalData whose batches are {'inputs', 'label'}; `references` are the label
    names.
  """
  examples = load_examples(data_config, tokenizer, split, workdir=workdir)
  data = pipeline.eval_data_of(examples, data_config, split, batch_multiple=batch_multiple,
                               process_index=process_index, process_count=process_count,
                               rows_per_batch=rows_per_batch, max_input_len=max_input_len)
  return dataclasses.replace(data, batches=[as_labelled(b) for b in data.batches])
