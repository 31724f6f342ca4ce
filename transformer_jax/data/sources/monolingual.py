"""The sentences of one Multi30k language, for a language model (dataset 'multi30k_mono').

`data.target_lang` (default 'en' in experiments/multi30k_lm.py) picks the language. The
text comes from the same Multi30k TFDS builder and reading code as translation: the
builder of the pair (`data.source_lang`, `data.target_lang`) is prepared (or reused) and
only the `target_lang` side is kept; when both languages are equal another one stands in
as the partner. The sentencepiece model is trained on that language's train sentences
only. Batches carry `targets` alone (plus `targets_position` and `targets_segmentation`
when `data.pack`), made by pipeline.py's TrainIterator and eval batching, so bucketing,
packing, resuming and multi-host slicing behave exactly as for translation.
"""
import os

import ml_collections
import numpy as np

from transformer_jax.data import pipeline
from transformer_jax.data.sources import multi30k
from transformer_jax.data import tokenizer as tokenizer_lib

SIDES = ('targets',)


def _pair_config(data_config):
  """A copy of `data_config` that reads the Multi30k pair holding `target_lang`."""
  lang, partner = data_config.target_lang, data_config.source_lang
  if partner == lang:
    partner = next(other for other in multi30k.LANGUAGES if other != lang)
  pair = ml_collections.ConfigDict(data_config)
  pair.dataset = 'multi30k'
  pair.source_lang = partner
  return pair


def load_sentences(data_config, split, *, workdir):
  """The `target_lang` sentences of one split (str, original order)."""
  pair = _pair_config(data_config)
  return pipeline.text_pair(pair, split, workdir)[1]


def check_available(data_config, workdir):
  """Raises UserError, before anything is written, when the Multi30k files cannot be had."""
  pipeline.check_available(_pair_config(data_config), workdir)


def get_tokenizer(data_config, workdir):
  """Sentencepiece model of `target_lang`'s train sentences, under pipeline.tokenizer_dir."""
  prefix = os.path.join(pipeline.tokenizer_dir(data_config, workdir), f'multi30k_mono_{data_config.target_lang}_'
                        f'{data_config.tokenizer_type}{data_config.vocab_size}')
  return tokenizer_lib.get_or_train_tokenizer(
      prefix, vocab_size=data_config.vocab_size, model_type=data_config.tokenizer_type,
      sentences_fn=lambda: load_sentences(data_config, 'train', workdir=workdir))


def load_examples(data_config, tokenizer, split, *, workdir):
  """One split as pipeline.Examples whose inputs and targets are the same sentences."""
  sentences = load_sentences(data_config, split, workdir=workdir)
  ids = [np.asarray(x, np.int32) for x in tokenizer.encode(sentences)]
  return pipeline.Examples(ids, ids, sentences, sentences)


def make_train_iterator(data_config, tokenizer, *, workdir, batch_multiple, process_index=0,
                        process_count=1):
  """pipeline.TrainIterator over the train sentences, yielding `targets` batches."""
  examples = load_examples(data_config, tokenizer, 'train', workdir=workdir)
  return pipeline.train_iterator_of(examples, data_config, batch_multiple=batch_multiple,
                                    process_index=process_index, process_count=process_count,
                                    sides=SIDES)


def make_eval_batches(data_config, tokenizer, split, *, workdir, batch_multiple, process_index=0,
                      process_count=1, rows_per_batch=None, max_input_len=None):
  """pipeline.EvalData of `split`: every sentence once, in order, as `targets` batches."""
  examples = load_examples(data_config, tokenizer, split, workdir=workdir)
  return pipeline.eval_data_of(examples, data_config, split, batch_multiple=batch_multiple,
                               process_index=process_index, process_count=process_count,
                               rows_per_batch=rows_per_batch, sides=SIDES,
                               max_input_len=max_input_len)
