"""Model families: which config dataclass, module class and example batch each one uses.

`config.model.family` names one of FAMILIES; the rest of `config.model` are the fields of
that family's config dataclass. Everything the training loop needs to know about a
family is here, so steps, components, prediction and evaluation stay family-agnostic.
Module paths are strings (imported on use) so experiment files stay free of jax.
"""
import dataclasses
import importlib
from typing import Dict, Tuple

@dataclasses.dataclass(frozen=True)
class Family:
  """How one model family plugs into the loop.

  Attributes:
    name: the value of `config.model.family`.
    config: 'module:Class' of the frozen hyper-parameter dataclass (`vocab_size` field;
      0 in an experiment means "the tokenizer's").
    model: 'module:Class' of the flax module, constructed as `Class(config)`.
    example_batch: {key: (rank, dtype)} of the batch `model.init` is called with.
    packs: the module takes packed batches (`data.pack`: segment ids and positions).
    samples: a decoder-only LM that `generate.py` samples from (`--mode=sample`).
    extra_metrics: 'module:function' called as `fn(evaluator, params, step) -> dict` after
      the loss metrics at every evaluation ('' = none), e.g. word2vec's SimLex-999.
    decodes: the module has `encode(inputs)` and the cached `decode(encoded, inputs,
      targets)` that predict.py searches through.
  """
  name: str
  config: str
  model: str
  example_batch: Tuple[Tuple[str, int, str], ...]
  packs: bool = False
  decodes: bool = False
  samples: bool = False
  extra_metrics: str = ''

  def config_class(self):
    return _load(self.config)

  def model_class(self):
    return _load(self.model)

  def extra_metrics_fn(self):
    return _load(self.extra_metrics) if self.extra_metrics else None


def _load(path: str):
  module, name = path.split(':')
  return getattr(importlib.import_module(module), name)


_PAIR = (('inputs', 2, 'int32'), ('targets', 2, 'int32'))

_ALL = (
    Family('transformer', 'transformer_jax.nn.config:TransformerConfig',
           'transformer_jax.models.transformer:Transformer', _PAIR, packs=True,
           decodes=True),
    Family('rnn_seq2seq', 'transformer_jax.nn.config:RNNConfig',
           'transformer_jax.models.rnn_seq2seq:RNNSeq2Seq', _PAIR, decodes=True),
    Family('lm', 'transformer_jax.nn.config:TransformerConfig',
           'transformer_jax.models.lm:DecoderOnlyLM', (('targets', 2, 'int32'),), packs=True,
           samples=True),
    Family('classifier', 'transformer_jax.nn.config:ClassifierConfig',
           'transformer_jax.models.classifier:EncoderClassifier',
           (('inputs', 2, 'int32'), ('label', 1, 'int32'))),
    Family('word2vec', 'transformer_jax.nn.config:Word2VecConfig',
           'transformer_jax.models.word2vec:Word2Vec',
           (('center', 2, 'int32'), ('context', 2, 'int32'), ('negatives', 2, 'int32')),
           extra_metrics='transformer_jax.evaluation.word_vectors:eval_metrics'),
)
FAMILIES: Dict[str, Family] = {family.name: family for family in _ALL}


def get(name: str) -> Family:
  if name not in FAMILIES:
    raise ValueError(f'unknown model family {name!r}: use one of {", ".join(FAMILIES)}')
  return FAMILIES[name]
