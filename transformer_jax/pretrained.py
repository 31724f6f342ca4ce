"""A trained model in a folder of its own: `--mode=export` writes it, `load_pretrained` reads it.

  import transformer_jax
  model = transformer_jax.load_pretrained('runs/m30k/export')
  model.translate(['A dog runs on the beach.'])       # ['Ein Hund läuft am Strand.']

An export folder (FORMAT 1) holds:
  params.npz       the parameters (averaged over eval.average_last checkpoints, as --mode=eval
                   averages them): one float array per leaf, keyed by its '/'-joined path
                   (e.g. 'encoder/layer_0/attention/query/kernel'); numpy alone reads it
  model.json       {'format', 'family', 'config': every field of the family's config dataclass}
  run.json         {'format', 'tokenizer': {'kind': 'sentencepiece', 'file': 'tokenizer.model'}
                   or {'kind': 'identity', 'vocab_size'}, 'decode': the run's decode section,
                   'data': max_len, bucket_lengths, tokens_per_batch (how translate batches),
                   'source': the run's workdir, the steps averaged, the export time}
  tokenizer.model  the sentencepiece model (sentencepiece tokenizers only)
  README.md        what the model is and the lines that use it

`Pretrained` runs on the default device with `jax.jit` (no pmap, flags, workdir or absl app),
through the same host code as launch.py: `predict.translate_texts` for `translate`, as
--mode=translate, and `generate.generate_texts` for `sample`, as --mode=sample. With the same
decode settings, `translate` gives what --mode=translate gives on that run and steps.
"""
import dataclasses
import datetime
import functools
import json
import os
import shutil
import tempfile
import types
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from transformer_jax import components
from transformer_jax import families
from transformer_jax import generate
from transformer_jax import losses
from transformer_jax import predict
from transformer_jax import validation
from transformer_jax.data import batching
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.errors import UserError

FORMAT = 1
PARAMS_FILE, MODEL_FILE, RUN_FILE = 'params.npz', 'model.json', 'run.json'
TOKENIZER_FILE, README_FILE = 'tokenizer.model', 'README.md'
_DATA_FIELDS = ('max_len', 'bucket_lengths', 'tokens_per_batch', 'dataset', 'source_lang',
                'target_lang')
_MAKE_ONE = ('make one with python launch.py --mode=export --workdir=<a trained run> '
             '[--export_dir=<folder>]')


def check_export_dir(export_dir: str) -> None:
  """Refuses, before anything is built, a target that is a file, holds files or cannot be written.

  An export is never overwritten: a folder that holds anything is refused, whatever it holds.
  """
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise UserError(f'--export_dir {export_dir} is a file: give a folder path')
  if os.path.isdir(export_dir) and os.listdir(export_dir):
    raise UserError(f'--export_dir {export_dir} already holds files and an export is never '
                    'overwritten: give a new or empty folder with --export_dir, or delete '
                    f'{export_dir} first')
  existing = os.path.abspath(export_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:     # a real probe, as workdir.check_path: os.access says yes to root on a read-only mount
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise UserError(f'{existing} is not writable ({e.strerror}), so --export_dir {export_dir} '
                    'could not be written: fix its permissions or give another --export_dir'
                    ) from None


def check_exportable(family: families.Family) -> None:
  if not (family.decodes or family.samples):
    raise UserError(f'--mode=export writes translation models and language models, and '
                    f'model.family={family.name!r} is neither: export a run of the transformer, '
                    'rnn_seq2seq or lm family')


def tokenizer_record(tokenizer) -> Dict[str, Any]:
  """run.json's 'tokenizer' entry; UserError for a tokenizer an export cannot carry."""
  if isinstance(tokenizer, tokenizer_lib.Tokenizer):
    return {'kind': 'sentencepiece', 'file': TOKENIZER_FILE}
  if isinstance(tokenizer, tokenizer_lib.IdentityTokenizer):
    return {'kind': 'identity', 'vocab_size': tokenizer.vocab_size}
  raise UserError(f'--mode=export cannot carry a {type(tokenizer).__name__}: export a run that '
                  'uses a sentencepiece model or token ids (copy task)')


def write(export_dir: str, parts, params, config, source: Dict[str, Any]) -> None:
  """Writes the export folder; all of it or (on an error) nothing.

  Args:
    export_dir: a new or empty folder (check_export_dir).
    parts: components.Components of the run.
    params: host params (averaged), the tree the model's init makes.
    config: the run's config (its decode and data sections are recorded).
    source: what the export was made from, for run.json and the README (workdir, steps).
  """
  record = tokenizer_record(parts.tokenizer)
  data = {name: config.data[name] for name in _DATA_FIELDS if name in config.data}
  data['bucket_lengths'] = list(data.get('bucket_lengths', ()))
  run = {'format': FORMAT, 'tokenizer': record, 'decode': config.decode.to_dict(), 'data': data,
         'source': {**source,
                    'exported_at': datetime.datetime.now().isoformat(timespec='seconds')}}
  model = {'format': FORMAT, 'family': parts.family.name,
           'config': dataclasses.asdict(parts.model_config)}
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  partial = os.path.join(parent, f'.{os.path.basename(os.path.abspath(export_dir))}.partial'
                         f'-{os.getpid()}')
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(partial)
  try:
    np.savez(os.path.join(partial, PARAMS_FILE), **flat_params(params))
    for name, content in ((MODEL_FILE, model), (RUN_FILE, run)):
      with open(os.path.join(partial, name), 'w') as f:
        json.dump(content, f, indent=2)
    if record['kind'] == 'sentencepiece':
      shutil.copyfile(parts.tokenizer.model_path, os.path.join(partial, TOKENIZER_FILE))
    with open(os.path.join(partial, README_FILE), 'w') as f:
      f.write(readme(os.path.abspath(export_dir), model, run))
    os.rename(partial, export_dir)     # replaces an empty folder; never a full one
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise


def flat_params(params) -> Dict[str, np.ndarray]:
  """{'a/b/kernel': array}; bfloat16 (which .npz cannot name) is widened to float32, exactly."""
  flat = traverse_util.flatten_dict(jax.device_get(params), sep='/')
  return {path: np.asarray(value, np.float32) if value.dtype == jnp.bfloat16
          else np.asarray(value) for path, value in flat.items()}


def readme(path: str, model: Dict[str, Any], run: Dict[str, Any]) -> str:
  """The export's README.md: what it is, three lines that use it, where it came from."""
  family, config, source = model['family'], model['config'], run['source']
  if families.get(family).samples:
    use = 'print(model.sample(n=3))'
    what = f'A decoder-only language model trained on {run["data"].get("dataset")}'
  else:
    data = run['data']
    example = ('5 6 7 8 9' if run['tokenizer']['kind'] == 'identity' else
               'A dog runs on the beach.' if data.get('source_lang') == 'en' else
               f'<a sentence in {data.get("source_lang")}>')
    use = f'print(model.translate([{example!r}]))'
    pair = ('' if run['tokenizer']['kind'] == 'identity' else
            f' {data.get("source_lang")}->{data.get("target_lang")}')
    what = f'An encoder-decoder trained on {data.get("dataset")}{pair}'
  steps = source.get('steps_averaged', [])
  sizes = ', '.join(f'{k}={config[k]}' for k in ('num_layers', 'model_dim', 'num_heads',
                                                  'mlp_dim', 'hidden_dim', 'vocab_size')
                    if config.get(k) is not None)
  return f"""# Exported transformer_jax model

{what}, family `{family}` ({sizes}).

```python
import transformer_jax
model = transformer_jax.load_pretrained({path!r})
{use}
```

Needs only `transformer_jax` importable (e.g. `PYTHONPATH=<the repository>`): no orbax, flags or
workdir. Decoding defaults to the run's `decode` settings (`run.json`); `translate` takes
`beam_size`, `alpha`, `method`, `max_extra_len`, and gives what `launch.py --mode=translate`
gives on the source run with the same settings. Also: `model.score(sources, targets)`
(log-likelihood sums), `model.encode(sentences)`, `model.tokenize(sentences)`.

Source run: `{source.get('workdir')}`, checkpoint steps averaged: {steps}
(eval.average_last={source.get('average_last')}), exported {source.get('exported_at', '')}.

Files: `{PARAMS_FILE}` (parameters by '/'-joined path), `{MODEL_FILE}` (family and config),
`{RUN_FILE}` (tokenizer, decode and batching settings, source), and for sentencepiece runs
`{TOKENIZER_FILE}`.
"""


def load_pretrained(path: str) -> 'Pretrained':
  """The model exported to `path` (by `launch.py --mode=export`), on the default device.

  Raises:
    UserError: `path` is not an export, or its files do not fit together.
  """
  path = os.fspath(path)
  missing = [name for name in (MODEL_FILE, RUN_FILE, PARAMS_FILE)
             if not os.path.isfile(os.path.join(path, name))]
  if missing:
    raise UserError(f'{path} is not a transformer_jax export (no {", ".join(missing)}): '
                    f'give the folder --mode=export wrote, or {_MAKE_ONE}')
  model_record, run = (_read_json(os.path.join(path, name)) for name in (MODEL_FILE, RUN_FILE))
  try:
    family = families.get(model_record['family'])
    fields = {k: tuple(v) if isinstance(v, list) else v
              for k, v in model_record['config'].items()}
    model_config = family.config_class()(**fields)
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f'{path}/{MODEL_FILE} does not describe a model this transformer_jax '
                    f'builds ({e}): export the run again with this version; {_MAKE_ONE}') from None
  parts = components.Components(
      tokenizer=_load_tokenizer(path, run['tokenizer']), model_config=model_config,
      model=family.model_class()(model_config), family=family, tx=optax.identity(),
      learning_rate_fn=None, runner=_DefaultDevice())
  params = _load_params(os.path.join(path, PARAMS_FILE), parts)
  return Pretrained(parts, params, run, path)


def _read_json(file: str) -> Dict[str, Any]:
  try:
    with open(file) as f:
      content = json.load(f)
  except ValueError as e:
    raise UserError(f'{file} is not valid JSON ({e}): export the run again; {_MAKE_ONE}') from None
  if content.get('format') != FORMAT:
    raise UserError(f'{file} has export format {content.get("format")!r}, this transformer_jax '
                    f'reads {FORMAT}: export the run again with this version; {_MAKE_ONE}')
  return content


def _load_tokenizer(path: str, record: Dict[str, Any]):
  if record.get('kind') == 'identity':
    return tokenizer_lib.IdentityTokenizer(record['vocab_size'])
  if record.get('kind') == 'sentencepiece':
    return tokenizer_lib.Tokenizer(os.path.join(path, record['file']))
  raise UserError(f'{path}/{RUN_FILE} names an unknown tokenizer kind {record.get("kind")!r}: '
                  f'export the run again with this version; {_MAKE_ONE}')


def _load_params(file: str, parts):
  """params.npz as the model's param tree (its dtypes), checked against the shapes init makes."""
  template = jax.eval_shape(lambda: components.init_state(parts, 0)).params
  expected = traverse_util.flatten_dict(template, sep='/')
  with np.load(file) as saved:
    flat = {name: saved[name] for name in saved.files}
  problems = sorted(set(expected) ^ set(flat))
  problems = ([f'{name} is {"missing" if name in expected else "not in the model"}'
               for name in problems] +
              [f'{name} has shape {flat[name].shape}, the model {expected[name].shape}'
               for name in sorted(set(expected) & set(flat))
               if flat[name].shape != expected[name].shape])
  if problems:
    raise UserError(f'{file} does not fit its {MODEL_FILE} ({problems[0]}'
                    f'{f" and {len(problems) - 1} more" if len(problems) > 1 else ""}): '
                    f'export the run again; {_MAKE_ONE}')
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
    model_config: its config dataclass.
    decode: the run's decode settings, the defaults of `translate` and `sample`.
    source: what the export was made from (workdir, steps averaged, export time).
    path: the export folder.
  """

  def __init__(self, parts, params, run: Dict[str, Any], path: str):
    self._parts, self._params = parts, params
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
    return predict.translate_texts(self._parts, self._params, sentences,
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
      out = self._parts.runner.run_replicated(fn, self._params, self._parts.runner.put_batch(batch))
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
          fn, self._params, self._parts.runner.put_batch({'inputs': batch['inputs']}))
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
    return generate.generate_texts(self._parts, self._params, lines, settings)

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
      raise UserError(str(e).replace('set --experiment.decode.', 'give ')) from None
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
