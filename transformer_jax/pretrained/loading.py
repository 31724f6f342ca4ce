"""A trained model in a folder of its own: `--mode=export` writes it, `load_pretrained` reads it.

  import transformer_jax
  model = transformer_jax.load_pretrained('runs/m30k/export')   # or Pretrained.from_pretrained
  model.translate(['A dog runs on the beach.'])       # ['Ein Hund läuft am Strand.']
  model.translate(['A dog runs.'], method='beam', nbest=2, return_scores=True)
  model.save_pretrained('elsewhere')                   # the same folder, this version's format

The folder's layout is layout.py's; its files are read by reading.py and verified by
verification.py.

`Pretrained` runs on the default device with `jax.jit` (no pmap, flags, workdir or absl app),
through the same host code as launch.py: `predict.translate_texts` for `translate`, as
--mode=translate, and `generate.generate_texts` for `sample`, as --mode=sample. With the same
decode settings, `translate` gives what --mode=translate gives on that run and steps.
"""
import dataclasses
import functools
import os
import re
import types
from typing import Any, Dict, List, Optional, Sequence, Union

import jax
import numpy as np
import optax

from transformer_jax.base.errors import UserError
from transformer_jax.data import batching
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.decoding import generate
from transformer_jax.decoding import predict
from transformer_jax.nn import losses
from transformer_jax.pretrained import export
from transformer_jax.pretrained import layout
from transformer_jax.pretrained import reading
from transformer_jax.pretrained import verification
from transformer_jax.train import components
from transformer_jax.train import validation


def load_pretrained(path: str) -> 'Pretrained':
  """The model exported to `path` (by `launch.py --mode=export`), on the default device.

  The checksums the export recorded (layout.py) are verified before a file is used: a damaged
  or edited file is refused by name. Exports of format 1 (params.npz) load too; those written
  before checksums load unchecked.

  Raises:
    UserError: `path` is not an export, a file of it is damaged or edited, or its files do not
      fit together.
  """
  path = os.fspath(path)
  missing = [name for name in (layout.MODEL_FILE, layout.RUN_FILE)
             if not os.path.isfile(os.path.join(path, name))]
  if not any(os.path.isfile(os.path.join(path, name)) for name in layout.PARAMS_FILES.values()):
    missing.append(layout.PARAMS_FILE)
  if missing:
    raise UserError(f'{path} is not a transformer_jax export (no {", ".join(missing)}): '
                    f'give the folder --mode=export wrote, or {reading.MAKE_ONE}')
  run = reading.read_json(os.path.join(path, layout.RUN_FILE), reading.reexport_fix(path, None))
  fix = reading.reexport_fix(path, run)
  record = verification.verified_record(path, run, fix)
  reading.check_run(path, run, fix)
  family, model_config, model_record = reading.model_config(path, record, fix)
  params_file = layout.PARAMS_FILES[run['format']]
  damaged = None
  if record is not None:
    damaged = verification.damaged_file(path, record)
    if damaged not in (None, params_file):     # before sentencepiece reads a bad model
      raise verification.damage_error(path, damaged, record, fix)
  parts = components.Components(
      tokenizer=reading.load_tokenizer(path, run['tokenizer'], fix), model_config=model_config,
      model=family.model_class()(model_config), family=family, tx=optax.identity(),
      learning_rate_fn=None, runner=_DefaultDevice())
  # Reading a damaged params file first says what is wrong where it can (unreadable, shapes).
  params = reading.load_params(os.path.join(path, params_file), parts, record, fix)
  if damaged is not None:
    raise verification.damage_error(path, damaged, record, fix)
  return Pretrained(parts, params, run, model_record, path)


from_pretrained = load_pretrained        # the name Hugging Face's libraries use


class _DefaultDevice:
  """parallel.py's runner interface with plain jax.jit on the default device.

  Functions are compiled once per bound step (a functools.partial with equal bindings counts
  as the same), so repeated translate/sample calls with the same settings reuse the compilation.
  """

  def __init__(self):
    self._compiled = {}

  def put_state(self, tree):
    return jax.device_put(tree)

  def put_batch(self, batch):
    return jax.device_put(batch)

  def run_replicated(self, fn, params, batch):
    key = _binding(fn)
    if key not in self._compiled:
      self._compiled[key] = jax.jit(fn)
    return jax.tree_util.tree_map(np.asarray, self._compiled[key](params, batch))


def _binding(fn):
  """A hashable stand-in for `fn`: equal for partials of one function with equal bindings."""
  if isinstance(fn, functools.partial):
    key = (fn.func, fn.args, tuple(sorted(fn.keywords.items())))
    try:
      hash(key)
      return key
    except TypeError:
      pass
  return fn


def _encoder_outputs(params, batch, *, model):
  return model.apply({'params': params}, batch['inputs'], method='encode')


def _log_likelihoods(params, batch, *, model):
  """Per row: the sum over target tokens (EOS included) of log p(token | source, prefix)."""
  logits = model.apply({'params': params}, batch['inputs'], batch['targets'], deterministic=True)
  return -jax.vmap(lambda row, targets: losses.nll(row, targets)[0])(logits, batch['targets'])


class Pretrained:
  """An exported model, ready to use: see the module docstring and `load_pretrained`.

  Attributes:
    family: the model family's name ('transformer', 'rnn_seq2seq' or 'lm').
    module: the flax module; `module.apply({'params': params}, ...)` calls it directly.
    params: its parameters, on the default device.
    model_config: its config dataclass.
    decode: the run's decode settings, the defaults of `translate` and `sample`.
    source: what the export was made from (workdir, steps averaged, export time).
    metrics: {split: metrics} of these params as the run measured them (provenance.py; {} for
      exports of format 1).
    versions: {'transformer_jax', 'jax', 'flax': version} that wrote the folder ({} for
      format 1).
    path: the export folder.
  """

  def __init__(self, parts, params, run: Dict[str, Any], model_record: Dict[str, Any],
               path: str):
    self._parts = parts
    self._run = {k: v for k, v in run.items() if k != layout.CHECKSUMS}
    self.params, self.module = params, parts.model
    data = dict(run['data'])
    data['bucket_lengths'] = tuple(data.get('bucket_lengths', ()))
    self._data = types.SimpleNamespace(**data)
    self.family = parts.family.name
    self.model_config = parts.model_config
    self.decode = dict(run['decode'])
    self.source = dict(run.get('source', {}))
    self.metrics = dict(model_record.get('metrics', {}))
    self.versions = dict(model_record.get('versions', {}))
    self.path = path
    self._predict_fns = {}

  def __repr__(self):
    return f'Pretrained({self.path!r}, family={self.family!r})'

  @classmethod
  def from_pretrained(cls, path: str) -> 'Pretrained':
    """`load_pretrained(path)`, by the name Hugging Face's libraries give it."""
    return load_pretrained(path)

  def save_pretrained(self, path: str) -> str:
    """Writes this model to `path`, a new or empty folder, as --mode=export writes an export
    (in this version's format, with fresh checksums), and returns the folder.

    `load_pretrained(path)` reads back the same params, decode and batching settings, source
    and metrics, so it translates (and samples) as this model does; the folder's versions are
    those of the software that saved it.

    Raises:
      UserError: `path` is a file, holds files, or cannot be written.
    """
    path = os.fspath(path)
    export.check_export_dir(path, 'save_pretrained path')
    model = export.model_record(self.family, self.model_config, self.metrics)
    run = {**self._run, 'format': layout.FORMAT,
           'tokenizer': export.tokenizer_record(self._parts.tokenizer)}
    export.write_folder(path, self._parts.tokenizer, self.params, model, run)
    return path

  def tokenize(self, sentences: Sequence[str]) -> List[List[int]]:
    """Token ids of each sentence, EOS (id 1) included, as the model reads them."""
    return self._parts.tokenizer.encode(_sentences(sentences, 'sentences'))

  def translate(self, sentences: Sequence[str], beam_size: Optional[int] = None,
                alpha: Optional[float] = None, method: Optional[str] = None,
                max_extra_len: Optional[int] = None, nbest: int = 1,
                return_scores: bool = False) -> Union[List[str], List[List[Any]]]:
    """The translation of each sentence, in order; unset settings are the run's (self.decode).

    Sentences longer than the model reads (model_config.max_input_len) are cut to it, with a
    warning, as --mode=translate cuts them.

    Args:
      sentences: the source sentences (a list of strings).
      beam_size, alpha, method, max_extra_len: the search (default: the run's).
      nbest: translations per sentence, 1 to beam_size; more than 1 needs method 'beam' (the
        run's decode.nbest is --mode=translate's, not this default).
      return_scores: give each translation with its score: its log-probability under the
        model given the source (PAD excluded, which is never decoded; EOS included) divided
        by the length penalty ((5 + |Y|) / 6) ** alpha of its |Y| tokens with the EOS, the
        beam search's ranking (predict.nbest_step). Needs method 'beam'.

    Returns:
      With nbest=1 and return_scores=False, one string per sentence. Otherwise, per sentence a
      list of its nbest best translations, best first (shorter where the search finds fewer
      hypotheses): strings, or with return_scores (text, score) tuples in descending score.
    """
    self._require('decodes', 'translate', 'use .sample')
    sentences = _sentences(sentences, 'sentences')
    ranked = nbest != 1 or return_scores
    settings = self._settings(beam_size=beam_size, alpha=alpha, method=method,
                              max_extra_len=max_extra_len)
    if ranked and settings.method != 'beam':
      raise UserError(f'translate with nbest={nbest} or return_scores ranks the hypotheses of '
                      f'a beam search, and the method here is {settings.method!r}: give '
                      "method='beam'")
    _check_decode({**dataclasses.asdict(settings), 'nbest': nbest})
    if not sentences:
      return []
    if not ranked:
      return predict.translate_texts(self._parts, self.params, sentences,
                                     self._predict_fn(settings), self._data)
    lists = predict.translate_nbest(self._parts, self.params, sentences,
                                    self._predict_fn(settings, nbest), self._data)
    return [hypotheses if return_scores else [text for text, _ in hypotheses]
            for hypotheses in lists]

  def _predict_fn(self, settings: predict.SearchSettings, nbest: Optional[int] = None):
    """predict_step (or, given nbest, nbest_step) bound to the model and settings: one object
    per binding, so the runner compiles each once per shape."""
    key = (settings, nbest)
    if key not in self._predict_fns:
      step, extra = ((predict.predict_step, {}) if nbest is None
                     else (predict.nbest_step, {'nbest': nbest}))
      self._predict_fns[key] = functools.partial(
          step, model=self._parts.model, settings=settings,
          eos_id=self._parts.tokenizer.eos_id, **extra)
    return self._predict_fns[key]

  def score(self, sources: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """float32 [n]: log p(target | source) of each pair, summed over the target's tokens (its
    EOS included), teacher-forced over the whole vocabulary as the training loss is.

    Raises:
      UserError: unequal counts, or a sentence longer than the model reads.
    """
    self._require('decodes', 'score', 'measure an LM with launch.py --mode=eval')
    sources, targets = _sentences(sources, 'sources'), _sentences(targets, 'targets')
    if len(sources) != len(targets):
      raise UserError(f'score got {len(sources)} sources and {len(targets)} targets: give one '
                      'target per source')
    if not sources:
      return np.zeros((0,), np.float32)
    tokenizer, limit = self._parts.tokenizer, self.model_config.max_input_len
    pairs = list(zip(tokenizer.encode(sources), tokenizer.encode(targets)))
    longest = max(max(len(s), len(t)) for s, t in pairs)
    if limit is not None and longest > limit:
      line = next(i for i, (s, t) in enumerate(pairs) if max(len(s), len(t)) > limit)
      raise UserError(f'pair {line + 1} has {max(map(len, pairs[line]))} tokens (EOS included), '
                      f'more than the {limit} the model reads: score shorter sentences')
    fn = self._bound(_log_likelihoods)
    scores = np.zeros((len(pairs),), np.float32)
    for batch, order in _pair_batches(pairs, self._data, limit):
      out = self._parts.runner.run_replicated(fn, self.params, self._parts.runner.put_batch(batch))
      scores[order] = out[:len(order)]
    return scores

  def encode(self, sentences: Sequence[str]) -> List[Any]:
    """Per sentence, what the decoder reads: for an encoder-decoder the encoder's output with
    the padding removed (Transformer: float [tokens, model_dim], EOS included; RNN: a dict of
    'states' [tokens, ...] and 'final'); for an LM, which has no encoder, its token ids."""
    sentences = _sentences(sentences, 'sentences')
    if not self._parts.family.decodes:
      return self.tokenize(sentences)
    if not sentences:
      return []
    fn, encoded = self._bound(_encoder_outputs), [None] * len(sentences)
    for batch, order in predict.source_batches(self._parts.tokenizer, sentences, self._data,
                                               jax.device_count(),
                                               self.model_config.max_input_len):
      out = self._parts.runner.run_replicated(
          fn, self.params, self._parts.runner.put_batch({'inputs': batch['inputs']}))
      lengths = (batch['inputs'] != tokenizer_lib.PAD_ID).sum(axis=1)
      for row, sentence in enumerate(order):
        encoded[sentence] = jax.tree_util.tree_map(
            lambda x, row=row: x[row, :lengths[row]] if x.ndim >= 3 else x[row], out)
    return encoded

  def sample(self, prompts: Optional[Sequence[str]] = None, n: Optional[int] = None,
             temperature: Optional[float] = None, top_k: Optional[int] = None,
             top_p: Optional[float] = None, seed: Optional[int] = None,
             method: Optional[str] = None, max_extra_len: Optional[int] = None) -> List[str]:
    """LM text: `n` unconditional samples (default decode.num_samples, else 8), or with
    `prompts` each prompt's continuation (`n` of them each when n is given), each starting with
    its prompt. Unset settings are the run's (self.decode); `method` may be greedy or beam."""
    self._require('samples', 'sample', 'use .translate')
    if n is not None and n < 1:
      raise UserError(f'sample got n={n}: give a count >= 1')
    if prompts is None:
      lines = [''] * (n or self.decode.get('num_samples') or 8)
    else:
      lines = [prompt for prompt in _sentences(prompts, 'prompts') for _ in range(n or 1)]
    if not lines:
      return []
    settings = self._settings(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                              method=method, max_extra_len=max_extra_len)
    return generate.generate_texts(self._parts, self.params, lines, settings)

  def _require(self, ability: str, what: str, instead: str) -> None:
    if not getattr(self._parts.family, ability):
      kind = 'an encoder-decoder' if ability == 'decodes' else 'a language model'
      raise UserError(f'{what} needs {kind}, and {self.path} holds a {self.family!r} model: '
                      f'{instead}')

  def _settings(self, **given) -> predict.SearchSettings:
    """The run's decode settings with the given ones (not None) in their place, range-checked."""
    fields = {f.name for f in dataclasses.fields(predict.SearchSettings)}
    settings = {k: v for k, v in self.decode.items() if k in fields and v is not None}
    settings.update({k: v for k, v in given.items() if v is not None})
    _check_decode(settings)
    return predict.SearchSettings(**settings)

  def _bound(self, fn):
    return functools.partial(fn, model=self._parts.model)


def _check_decode(settings: Dict[str, Any]) -> None:
  """validation.py's checks of decode settings, their messages naming arguments, not flags."""
  try:
    validation.check_config({'decode': settings}, training=False)
  except UserError as e:
    message = re.sub(r'set --experiment\.decode\.(\w+) to', r'give \1 as', str(e))
    raise UserError(re.sub(r'--experiment\.decode\.(\w+)', r'\1', message)) from None


def _sentences(texts, name: str) -> List[str]:
  if isinstance(texts, str):
    raise UserError(f'{name} is one string: give a list of strings, e.g. [{texts[:30]!r}]')
  return list(texts)


def _pair_batches(pairs, data, limit):
  """(batch, pair indices): pairs sorted by length, padded to the bucket of their longest side,
  every batch with the token budget's rows at the longest bucket (as source_batches)."""
  lengths = [max(len(s), len(t)) for s, t in pairs]
  order = np.argsort(lengths, kind='stable')
  buckets, rows = batching.eval_layout(data.bucket_lengths, data.max_len, max(lengths),
                                       data.tokens_per_batch, jax.device_count(), limit=limit)
  for start in range(0, len(order), rows):
    chosen = order[start:start + rows]
    length = buckets[batching.bucket_ids(max(lengths[i] for i in chosen), buckets)]
    batch = batching.pad_batch([np.asarray(pairs[i][0]) for i in chosen],
                               [np.asarray(pairs[i][1]) for i in chosen], rows, length)
    yield batch, chosen
