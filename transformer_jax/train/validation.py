"""Range checks of an experiment config, run before anything is imported, built or written.

ml_collections checks keys and types; this module checks values: counts that must be
positive, rates that must lie in [0, 1), choices that must be known, and that no float is
NaN or infinite. A bad value ends the run with one `UserError` line that names the key,
the value, what it must be and the flag that fixes it, e.g.

  train.num_steps=0 is out of range: set --experiment.train.num_steps to an integer >= 1

A value that would be clamped or ignored is refused the same way: a silently changed
setting is worse than an error. Integers are also held to what consumes them: jax computes in
int32 (step counters, schedules, batch indices), so no integer may pass 2**31 - 1, and a jax
key keeps only the low 32 bits of a seed, so seeds lie in [0, 2**32 - 1]. A training's
`train.init_embeddings` file is read here too, so a malformed or non-finite one is refused
before anything is written. Nothing here imports jax, so `launch.py` fails in well under a
second on a bad override.
"""
import dataclasses
import math
import os
from typing import Any, Callable, Iterator, Optional, Tuple

from transformer_jax.base.errors import UserError
from transformer_jax.models import families
from transformer_jax.nn.config import DECODE_METHODS
from transformer_jax.nn.config import SPLITS
from transformer_jax.train import profiling


@dataclasses.dataclass(frozen=True)
class Rule:
  """One key's requirement.

  Attributes:
    key: 'section.field'; a rule whose key the config lacks is skipped.
    ok: the test of a (non-None) value.
    requirement: what the value must be, completing "set --experiment.<key> to ...".
    allow_none: None passes (optional fields: learning_rate, head_dim, ...).
    why: an optional consequence, said before the fix (e.g. what 0 would delete).
  """
  key: str
  ok: Callable[[Any], bool]
  requirement: str
  allow_none: bool = False
  why: str = ''


def _at_least(low):
  return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= low


def _rate(v):
  return 0.0 <= v < 1.0


def _one_of(choices):
  return lambda v: v in choices


def _positive(v):
  return v > 0


def _between(low, high):
  return lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


_COUNT = 'an integer >= 1'
INT32_MAX = 2**31 - 1          # jax computes in int32 (x64 off): the largest integer it holds
SEED_MAX = 2**32 - 1           # a jax key keeps a seed's low 32 bits
_SEED = f'an integer in [0, {SEED_MAX}]'
_SEED_WHY = ('a jax key keeps only the low 32 bits of a seed: a larger or negative one would '
             'repeat a seed of that range, or overflow')
_NUMPY_SEED = 'an integer >= 0'
_NUMPY_SEED_WHY = 'numpy random generators take no negative seed'
# Integers that do not reach jax as int32 (numpy seeds), or that have their own range above.
_NOT_INT32 = ('train.seed', 'decode.seed', 'data.shuffle_seed', 'data.copy_seed')
_STEPS_WHY = 'step counters and the learning-rate schedule are int32 on the device'

# The evaluation metrics `train.keep_best` may rank checkpoints by, and which way is better:
# 'min' (lower is better) for the losses, 'max' (higher is better) for the scores.
BEST_MODES = {'loss': 'min', 'nll': 'min', 'perplexity': 'min', 'accuracy': 'max',
              'sacrebleu': 'max', 'bleu_tok_lc': 'max', 'exact_match': 'max',
              'simlex_spearman': 'max'}
_DECODING_METRICS = ('sacrebleu', 'bleu_tok_lc', 'exact_match')   # need eval.bleu
_FAMILY_METRICS = {'word2vec': ('simlex_spearman',)}              # Family.extra_metrics
_RATE = 'a value in [0, 1)'

RULES: Tuple[Rule, ...] = (
    # train
    Rule('train.num_steps', _at_least(1), _COUNT),
    Rule('train.seed', _between(0, SEED_MAX), _SEED, why=_SEED_WHY),
    Rule('train.log_every_steps', _at_least(1), _COUNT),
    Rule('train.eval_every_steps', _at_least(1), _COUNT),
    Rule('train.checkpoint_every_steps', _at_least(1), _COUNT),
    Rule('train.keep_checkpoints', _at_least(1), _COUNT,
         why='keeping fewer than one would delete every checkpoint of the run'),
    Rule('train.label_smoothing', _rate, _RATE),
    Rule('train.early_stop_patience', _at_least(0),
         'an integer >= 0 (0 trains num_steps; N stops after N evaluations without improvement)'),
    Rule('train.early_stop_min_delta', _at_least(0), 'a value >= 0'),
    Rule('train.steps_per_loop', _at_least(1), 'an integer >= 1 (1 is one step per call)'),
    Rule('train.prefetch_depth', _at_least(0),
         'an integer >= 0 (0 makes batches in the loop\'s thread)'),
    Rule('train.loss_chunk_tokens', _at_least(0),
         'an integer >= 0 (0 forms the logits of the whole batch at once)'),
    # optim
    Rule('optim.learning_rate', _positive, 'a value > 0 (or None for the paper\'s rsqrt peak)',
         allow_none=True),
    Rule('optim.warmup_steps', _at_least(0), 'an integer >= 0'),
    Rule('optim.b1', _rate, _RATE),
    Rule('optim.b2', _rate, _RATE),
    Rule('optim.eps', _positive, 'a value > 0'),
    Rule('optim.weight_decay', _at_least(0), 'a value >= 0'),
    Rule('optim.grad_clip_norm', _at_least(0), 'a value >= 0 (0 switches clipping off)'),
    Rule('optim.grad_accum_steps', _at_least(1), 'an integer >= 1 (1 switches accumulation off)'),
    # data
    Rule('data.tokens_per_batch', _at_least(1), _COUNT),
    Rule('data.shuffle_seed', _at_least(0), _NUMPY_SEED, why=_NUMPY_SEED_WHY),
    Rule('data.copy_seed', _at_least(0), _NUMPY_SEED, why=_NUMPY_SEED_WHY),
    Rule('data.max_len', _at_least(1), _COUNT),
    Rule('data.train_examples', _at_least(0), 'an integer >= 0 (0 keeps every training pair)'),
    Rule('data.vocab_size', _at_least(4), 'an integer >= 4 (pad, EOS, UNK and one piece)'),
    Rule('data.eval_rows_per_batch', _at_least(0), 'an integer >= 0 (0 derives it)'),
    Rule('data.bucket_lengths', lambda v: all(_at_least(1)(b) for b in v),
         'lengths >= 1 (or () for the default ladder)'),
    Rule('data.copy_vocab_size', _at_least(4), 'an integer >= 4 (pad, EOS and two symbols)'),
    Rule('data.copy_num_train', _at_least(1), _COUNT),
    Rule('data.copy_num_eval', _at_least(1), _COUNT),
    Rule('data.pairs_per_batch', _at_least(1), _COUNT),
    Rule('data.min_count', _at_least(1), _COUNT),
    Rule('data.window', _at_least(1), _COUNT),
    Rule('data.num_negatives', _at_least(1), _COUNT),
    Rule('data.subsample', _at_least(0), 'a value >= 0 (0 switches subsampling off)'),
    # eval
    Rule('eval.split', _one_of(SPLITS), f'one of {", ".join(SPLITS)}'),
    Rule('eval.max_batches', _at_least(0), 'an integer >= 0 (0 is the whole split)'),
    Rule('eval.average_last', _at_least(1), 'an integer >= 1 (1 is no averaging)'),
    Rule('eval.tensorboard_examples', _between(0, 100),
         'an integer in [0, 100] (0 writes none)',
         why='a text summary shows one table of them per evaluation'),
    # decode
    Rule('decode.method', _one_of(DECODE_METHODS), f'one of {", ".join(DECODE_METHODS)}'),
    Rule('decode.beam_size', _at_least(1), _COUNT),
    Rule('decode.alpha', _at_least(0), 'a value >= 0 (0 is no length penalty)'),
    Rule('decode.max_extra_len', _at_least(0), 'an integer >= 0'),
    Rule('decode.temperature', _positive, 'a value > 0'),
    Rule('decode.top_k', _at_least(0), 'an integer >= 0 (0 keeps every token)'),
    Rule('decode.top_p', lambda v: 0.0 < v <= 1.0, 'a value in (0, 1] (1 keeps every token)'),
    Rule('decode.num_samples', _at_least(1), _COUNT),
    Rule('decode.seed', _between(0, SEED_MAX), _SEED, why=_SEED_WHY),
    Rule('decode.cache_stages', _at_least(1), 'an integer >= 1 (1 is a fixed-size cache)'),
    Rule('decode.nbest', _at_least(1), 'an integer >= 1 (1 prints the best translation only)'),
)


def _model_rule(field: str) -> Optional[Rule]:
  """Rules for `model.<field>` by naming convention, so every family's sizes are covered."""
  key = f'model.{field}'
  if field in ('vocab_size',):
    return Rule(key, _at_least(0), 'an integer >= 0 (0 follows the tokenizer)')
  if field.endswith('dropout_rate'):
    return Rule(key, _rate, _RATE)
  if field == 'num_classes':
    return Rule(key, _at_least(2), 'an integer >= 2')
  if field.endswith('_dim') or field.startswith('num_') or field in ('max_len',
                                                                     'target_vocab_size'):
    return Rule(key, _at_least(1), _COUNT, allow_none=True)
  if field in ('attention_scale', 'rope_max_wavelength'):
    return Rule(key, _positive, 'a value > 0', allow_none=True)
  return None


def _items(config) -> Iterator[Tuple[str, Any]]:
  """('section.field', value) for every leaf of the config (one level of sections)."""
  for section, fields in config.items():
    if hasattr(fields, 'items'):
      for name, value in fields.items():
        yield f'{section}.{name}', value
    else:
      yield section, fields


def _lookup(config, key: str):
  section, _, name = key.partition('.')
  if section not in config or name not in config[section]:
    return False, None
  return True, config[section][name]


def _message(rule: Rule, value: Any) -> str:
  why = f' ({rule.why})' if rule.why else ''
  return (f'{rule.key}={value!r} is out of range{why}: set --experiment.{rule.key} to '
          f'{rule.requirement}')


def _check_rule(rule: Rule, value: Any) -> None:
  if value is None:
    if rule.allow_none:
      return
    raise UserError(f'{rule.key} is None: set --experiment.{rule.key} to {rule.requirement}')
  try:
    ok = rule.ok(value)
  except TypeError:
    ok = False
  if not ok:
    raise UserError(_message(rule, value))


def check_config(config, training: bool = True) -> None:
  """Raises UserError for the first out-of-range value of `config` (an ml_collections
  ConfigDict or nested dict with the sections of transformer_jax/run/defaults.py). `training` adds the
  checks that only matter when the run trains (what it keeps for a later evaluation)."""
  for key, value in _items(config):
    if isinstance(value, float) and not math.isfinite(value):
      raise UserError(f'{key}={value} is not a finite number: set --experiment.{key} to a '
                      'finite value')
  for rule in RULES:
    present, value = _lookup(config, rule.key)
    if present:
      _check_rule(rule, value)
  for name, value in config.get('model', {}).items():
    rule = _model_rule(name)
    if rule is not None:
      _check_rule(rule, value)
  _check_int32(config)
  _check_nbest(config)
  for key in ('model.dtype', 'model.param_dtype'):
    present, value = _lookup(config, key)
    if present and value == 'float16':
      raise UserError(f'{key}=float16 would train without loss scaling (small gradients '
                      f'underflow to 0): set --experiment.{key}=bfloat16 (same range as float32) '
                      'or float32')
  train = config.get('train', {})
  if 'profile_steps' in train:
    profiling.parse(train['profile_steps'])
  if training:
    _check_training_relations(config)
    check_keep_best(config)
    check_init_embeddings(config)
    if 'profile_steps' in train and 'num_steps' in train:   # a fresh run; trainer.py re-checks
      profiling.window(train['profile_steps'], start_step=0,     # from where a run resumes
                       num_steps=train['num_steps'])


def _int32_why(key: str, value: int) -> str:
  """Why `value` of `key` cannot pass int32: what it feeds, in a few words."""
  if key == 'data.tokens_per_batch':
    gib = value * 4 / 2**30
    return (f'one int32 array of a batch of {value} token slots takes {gib:,.0f} GiB, and jax '
            'indexes it in int32')
  if key.endswith('_steps'):
    return _STEPS_WHY
  return 'jax computes integers in int32'


def _check_int32(config) -> None:
  """Refuses an integer (or an integer in a list) outside int32, naming what it feeds."""
  for key, value in _items(config):
    if key in _NOT_INT32:
      continue
    listed = isinstance(value, (list, tuple))
    for item in value if listed else (value,):
      if not isinstance(item, int) or isinstance(item, bool) or -INT32_MAX - 1 <= item <= INT32_MAX:
        continue
      bound = f'<= {INT32_MAX}' if item > 0 else f'>= {-INT32_MAX - 1}'
      bound = f'integers {bound}' if listed else f'an integer {bound}'
      hint = (' (the paper\'s base model trains on about 25000)'
              if key == 'data.tokens_per_batch' else '')
      raise UserError(f'{key}={value!r} is out of range ({_int32_why(key, item)}): set '
                      f'--experiment.{key} to {bound}{hint}')


def check_init_embeddings(config) -> None:
  """Reads a training's `train.init_embeddings` file (if it exists; a missing one is
  components.preflight's to report), so that a malformed file, or one holding NaN or inf,
  is refused with its line before anything is written; its vectors must also have the width
  of the model's embeddings (`model.model_dim`, or `model.embed_dim`)."""
  path = config.get('train', {}).get('init_embeddings')
  if not path or not os.path.isfile(path):
    return
  from transformer_jax.evaluation import word_vectors  # pylint: disable=import-outside-toplevel
  dim = word_vectors.check_word2vec_text(path)
  model = config.get('model', {})
  width = model.get('model_dim') or model.get('embed_dim')
  if width and dim != width:
    name = 'model_dim' if model.get('model_dim') else 'embed_dim'
    raise UserError(f'{path}: its word vectors have dim {dim} but model.{name} is {width}: '
                    'train vectors of that size (experiments/word2vec.py with '
                    f'--experiment.model.embed_dim={width}) or set '
                    '--experiment.train.init_embeddings=""')


def keep_best_choices(config) -> Tuple[str, ...]:
  """The metrics the run's periodic evaluation measures, so `train.keep_best` can name them."""
  family = families.FAMILIES.get(config.get('model', {}).get('family', 'transformer'))
  names = ['loss', 'nll', 'perplexity', 'accuracy']
  if family is not None and family.decodes and config.get('eval', {}).get('bleu'):
    names += _DECODING_METRICS
  if family is not None:
    names += _FAMILY_METRICS.get(family.name, ())
  return tuple(names)


def check_keep_best(config) -> None:
  """Refuses a `train.keep_best` that names no metric the periodic evaluation measures."""
  metric = config.get('train', {}).get('keep_best', '')
  choices = keep_best_choices(config)
  if not metric or metric in choices:
    return
  unlock = (' (sacrebleu, bleu_tok_lc and exact_match also need --experiment.eval.bleu=True)'
            if metric in _DECODING_METRICS else '')
  raise UserError(f'train.keep_best={metric!r} is not a metric this run\'s evaluation measures'
                  f'{unlock}: set --experiment.train.keep_best to one of {", ".join(choices)} '
                  '(lower is better for loss, nll and perplexity, higher for the others), or '
                  "to '' to keep only the last train.keep_checkpoints")


def _check_training_relations(config) -> None:
  """Settings that are each in range but would make the run's own evaluation fail later."""
  train, evaluation = config.get('train', {}), config.get('eval', {})
  average, keep = evaluation.get('average_last', 1), train.get('keep_checkpoints', 1)
  if average > keep:
    raise UserError(f'eval.average_last={average} averages more checkpoints than '
                    f'train.keep_checkpoints={keep} keeps: set --experiment.train.keep_checkpoints '
                    f'to {average} or more, or lower --experiment.eval.average_last')


def _check_nbest(config) -> None:
  """decode.nbest: more than one ranks a beam search's hypotheses, at most its beam_size."""
  decode = config.get('decode', {})
  nbest = decode.get('nbest', 1)
  if not isinstance(nbest, int) or nbest <= 1:
    return                     # RULES name a value out of range
  if decode.get('method', 'beam') != 'beam':
    raise UserError(f'decode.nbest={nbest} ranks the hypotheses of a beam search, and '
                    f'decode.method={decode["method"]!r} gives one: set '
                    f'--experiment.decode.method=beam (and --experiment.decode.beam_size to '
                    f'{nbest} or more), or --experiment.decode.nbest=1')
  beam_size = decode.get('beam_size', nbest)
  if nbest > beam_size:
    raise UserError(f'decode.nbest={nbest} is more than the {beam_size} hypotheses the beam '
                    f'keeps (decode.beam_size): set --experiment.decode.nbest to {beam_size} or '
                    f'less, or --experiment.decode.beam_size to {nbest} or more')
