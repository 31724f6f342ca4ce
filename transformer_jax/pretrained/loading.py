"""A trained model in a folder of its own: `--mode=export` writes it, `load_pretrained` reads it.

  import transformer_jax
  model = transformer_jax.load_pretrained('runs/m30k/export')
  model.translate(['A dog runs on the beach.'])       # ['Ein Hund läuft am Strand.']

The folder's layout is export.py's.

`Pretrained` runs on the default device with `jax.jit` (no pmap, flags, workdir or absl app),
through the same host code as launch.py: `predict.translate_texts` for `translate`, as
--mode=translate, and `generate.generate_texts` for `sample`, as --mode=sample. With the same
decode settings, `translate` gives what --mode=translate gives on that run and steps.
"""
import dataclasses
import functools
import json
import os
import re
import types
import zipfile
import zlib
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from transformer_jax.base.errors import UserError
from transformer_jax.base import workdir as workdir_lib
from transformer_jax.data import batching
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.decoding import generate
from transformer_jax.decoding import predict
from transformer_jax.models import families
from transformer_jax.nn import losses
from transformer_jax.pretrained import export
from transformer_jax.train import components
from transformer_jax.train import validation

_MAKE_ONE = ('make one with python launch.py --mode=export --workdir=<a trained run> '
             '[--export_dir=<folder>]')


def load_pretrained(path: str) -> 'Pretrained':
  """The model exported to `path` (by `launch.py --mode=export`), on the default device.

  The checksums the export recorded (export.py) are verified before a file is used: a damaged
  or edited file is refused by name. Exports written before checksums load unchecked.

  Raises:
    UserError: `path` is not an export, a file of it is damaged or edited, or its files do not
      fit together.
  """
  path = os.fspath(path)
  missing = [name for name in (export.MODEL_FILE, export.RUN_FILE, export.PARAMS_FILE)
             if not os.path.isfile(os.path.join(path, name))]
  if missing:
    raise UserError(f'{path} is not a transformer_jax export (no {", ".join(missing)}): '
                    f'give the folder --mode=export wrote, or {_MAKE_ONE}')
  run = _read_json(os.path.join(path, export.RUN_FILE), _reexport(path, None))
  fix = _reexport(path, run)
  record = export.verified_record(path, run, fix)
  _check_run(path, run, fix)
  family, model_config = _model_config(path, record['model'] if record else None, fix)
  damaged = None
  if record is not None:
    damaged = export.damaged_file(path, record)
    if damaged not in (None, export.PARAMS_FILE):     # before sentencepiece reads a bad model
      raise export.damage_error(path, damaged, record, fix)
  parts = components.Components(
      tokenizer=_load_tokenizer(path, run['tokenizer'], fix), model_config=model_config,
      model=family.model_class()(model_config), family=family, tx=optax.identity(),
      learning_rate_fn=None, runner=_DefaultDevice())
  # Reading a damaged params.npz first says what is wrong where it can (unreadable, shapes).
  params = _load_params(os.path.join(path, export.PARAMS_FILE), parts, record, fix)
  if damaged is not None:
    raise export.damage_error(path, damaged, record, fix)
  return Pretrained(parts, params, run, path)


def _reexport(path: str, run: Optional[Dict[str, Any]]) -> str:
  """The fix for a damaged export: export its run again. The run is run.json's source workdir,
  or, where run.json cannot say, the folder holding the export when it is a run (the default
  --export_dir is <workdir>/export)."""
  source = run.get('source') if isinstance(run, dict) else None
  workdir = source.get('workdir') if isinstance(source, dict) else None
  parent = os.path.dirname(os.path.abspath(path))
  if (not isinstance(workdir, str)
      and os.path.isfile(os.path.join(parent, workdir_lib.CONFIG_FILE))):
    workdir = parent
  return ('re-export it from its run into a new folder: python launch.py --mode=export '
          f'--workdir={workdir if isinstance(workdir, str) else "<run>"} '
          '--export_dir=<new folder>')


def _one_line(error: BaseException) -> str:
  return ' '.join(str(error).split()) or type(error).__name__


def _read_json(file: str, fix: str) -> Dict[str, Any]:
  """A JSON object of this export format, or a UserError naming `file`."""
  try:
    with open(file, encoding='utf-8') as f:
      content = json.load(f)
  except ValueError as e:         # UnicodeDecodeError included
    raise UserError(f'{file} is not valid JSON ({_one_line(e)}): {fix}') from None
  except OSError as e:
    raise UserError(f'{file} cannot be read ({e.strerror}): fix its permissions, or {fix}'
                    ) from None
  if not isinstance(content, dict):
    raise UserError(f'{file} holds a JSON {type(content).__name__}, not the object an export '
                    f'writes: {fix}')
  if content.get('format') != export.FORMAT:
    raise UserError(f'{file} has export format {content.get("format")!r}, this transformer_jax '
                    f'reads {export.FORMAT}: export the run again with this version; {_MAKE_ONE}')
  return content


def _check_run(path: str, run: Dict[str, Any], fix: str) -> None:
  """Refuses a run.json without the objects that load_pretrained and Pretrained read."""
  for key in ('tokenizer', 'decode', 'data', 'source'):
    if not isinstance(run.get(key, {}), dict) or (key != 'source' and key not in run):
      raise UserError(f'{path}/{export.RUN_FILE} has no {key!r} object, which an export '
                      f'writes: {fix}')


def _model_config(path: str, exported: Optional[Dict[str, Any]], fix: str):
  """(family, config dataclass) from model.json, checked against the exported model config
  (run.json's checksums) when there is one: as written, then as this version resolves it."""
  model_record = _read_json(os.path.join(path, export.MODEL_FILE), fix)
  if exported is not None:
    export.check_model_record(path, model_record, exported, fix)
  try:
    family = families.get(model_record['family'])
    fields = {k: tuple(v) if isinstance(v, list) else v
              for k, v in model_record['config'].items()}
    model_config = family.config_class()(**fields)
  except (KeyError, TypeError, ValueError, AttributeError) as e:
    raise UserError(f'{path}/{export.MODEL_FILE} does not describe a model this transformer_jax '
                    f'builds ({_one_line(e)}): export the run again with this version; '
                    f'{_MAKE_ONE}') from None
  if exported is not None:
    export.check_resolved_model(path, family.name,
                                json.loads(json.dumps(dataclasses.asdict(model_config))),
                                exported, fix)
  return family, model_config


def _load_tokenizer(path: str, record: Dict[str, Any], fix: str):
  """The tokenizer run.json names; a damaged sentencepiece model is a UserError naming it."""
  if record.get('kind') == 'identity':
    try:
      return tokenizer_lib.IdentityTokenizer(record['vocab_size'])
    except (KeyError, TypeError, ValueError):
      raise UserError(f'{path}/{export.RUN_FILE} has no integer tokenizer vocab_size: '
                      f'{fix}') from None
  if record.get('kind') == 'sentencepiece':
    file = os.path.join(path, str(record.get('file', export.TOKENIZER_FILE)))
    if not os.path.isfile(file) or os.path.getsize(file) == 0:
      how = 'is empty' if os.path.isfile(file) else 'is missing'
      raise UserError(f'{file} {how}, and {export.RUN_FILE} names it as the sentencepiece '
                      f'model: copy the whole export folder again, or {fix}')
    try:
      return tokenizer_lib.Tokenizer(file)
    except (RuntimeError, OSError) as e:
      raise UserError(f'{file} is not a sentencepiece model ({_one_line(e)}): copy the whole '
                      f'export folder again, or {fix}') from None
  raise UserError(f'{path}/{export.RUN_FILE} names an unknown tokenizer kind '
                  f'{record.get("kind")!r}: export the run again with this version; {_MAKE_ONE}')


def _read_params(file: str, record: Optional[Dict[str, Any]], fix: str) -> Dict[str, np.ndarray]:
  """params.npz's arrays by name; a file numpy cannot read is a UserError naming it."""
  try:
    with np.load(file) as saved:
      if not isinstance(saved, np.lib.npyio.NpzFile):
        raise ValueError('not an .npz archive')
      return {name: saved[name] for name in saved.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error,
          AttributeError, TypeError) as e:
    size = os.path.getsize(file)
    expected = (record or {}).get('sizes', {}).get(export.PARAMS_FILE)
    sizes = (f'; it has {size} bytes, the export wrote {expected}' if expected is not None
             and expected != size else f'; it has {size} bytes')
    raise UserError(f'{file} cannot be read ({_one_line(e)[:200]}{sizes}): it is truncated or '
                    f'damaged; copy the whole export folder again, or {fix}') from None


def _load_params(file: str, parts, record: Optional[Dict[str, Any]], fix: str):
  """params.npz as the model's param tree (its dtypes), checked against the shapes init makes."""
  flat = _read_params(file, record, fix)
  template = jax.eval_shape(lambda: components.init_state(parts, 0)).params
  expected = traverse_util.flatten_dict(template, sep='/')
  problems = sorted(set(expected) ^ set(flat))
  problems = ([f'{name} is {"missing" if name in expected else "not in the model"}'
               for name in problems] +
              [f'{name} has shape {flat[name].shape}, the model {expected[name].shape}'
               for name in sorted(set(expected) & set(flat))
               if flat[name].shape != expected[name].shape])
  if problems:
    raise UserError(f'{file} does not fit its {export.MODEL_FILE} ({problems[0]}'
                    f'{f" and {len(problems) - 1} more" if len(problems) > 1 else ""}): '
                    f'{fix}')
  params = {name: jnp.asarray(value, expected[name].dtype) for name, value in flat.items()}
  return parts.runner.put_state(traverse_util.unflatten_dict(params, sep='/'))


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
    path: the export folder.
  """

  def __init__(self, parts, params, run: Dict[str, Any], path: str):
    self._parts = parts
    self.params, self.module = params, parts.model
    data = dict(run['data'])
    data['bucket_lengths'] = tuple(data.get('bucket_lengths', ()))
    self._data = types.SimpleNamespace(**data)
    self.family = parts.family.name
    self.model_config = parts.model_config
    self.decode = dict(run['decode'])
    self.source = dict(run.get('source', {}))
    self.path = path
    self._predict_fns = {}

  def __repr__(self):
    return f'Pretrained({self.path!r}, family={self.family!r})'

  def tokenize(self, sentences: Sequence[str]) -> List[List[int]]:
    """Token ids of each sentence, EOS (id 1) included, as the model reads them."""
    return self._parts.tokenizer.encode(_sentences(sentences, 'sentences'))

  def translate(self, sentences: Sequence[str], beam_size: Optional[int] = None,
                alpha: Optional[float] = None, method: Optional[str] = None,
                max_extra_len: Optional[int] = None) -> List[str]:
    """The translation of each sentence, in order; unset settings are the run's (self.decode).

    Sentences longer than the model reads (model_config.max_input_len) are cut to it, with a
    warning, as --mode=translate cuts them.
    """
    self._require('decodes', 'translate', 'use .sample')
    sentences = _sentences(sentences, 'sentences')
    if not sentences:
      return []
    settings = self._settings(beam_size=beam_size, alpha=alpha, method=method,
                              max_extra_len=max_extra_len)
    if settings not in self._predict_fns:
      self._predict_fns[settings] = functools.partial(
          predict.predict_step, model=self._parts.model, settings=settings,
          eos_id=self._parts.tokenizer.eos_id)
    return predict.translate_texts(self._parts, self.params, sentences,
                                   self._predict_fns[settings], self._data)

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
    try:
      validation.check_config({'decode': settings}, training=False)
    except UserError as e:     # the message names the flag; here it is an argument
      raise UserError(re.sub(r'set --experiment\.decode\.(\w+) to', r'give \1 as', str(e))
                      ) from None
    return predict.SearchSettings(**settings)

  def _bound(self, fn):
    return functools.partial(fn, model=self._parts.model)


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
