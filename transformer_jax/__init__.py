"""transformer_jax: the Transformer (Vaswani et al., 2017) and its relatives as functional Flax modules.

The package is layered; each folder may import only the ones below it (pyproject.toml's
import-linter contract, checked by the test suite):

  experiments  the shipped experiment files (get_config) and ablation sweeps
  cli          the command line (`transformer-jax`, `python launch.py`)
  sweep        ablation sweeps: members, provenance, statistics, reports
  run          the modes (train, eval, translate, sample, export) and config overrides
  analysis     attention statistics and maps
  pretrained   trained runs read back: restored params, export, load_pretrained
  train        the loop, jitted steps, optimiser, parallelism, metrics, run assembly
  evaluation   BLEU, evaluators, word-vector benchmarks
  decoding     greedy/sampled/beam search, predict, generate | checkpoints  save, restore, damage
  data         data sets, tokenizers, batching    | models  the model families and registry
  nn           attention, positional encodings, layers, losses, model configs
  base         the user-error type, path rules, checksums, run-folder rules

The public names below load lazily, so `import transformer_jax.nn.config` (used by experiment
files, which must not pull in jax) stays cheap.
"""
import importlib
import importlib.metadata
import warnings

try:
  __version__ = importlib.metadata.version('transformer-jax')
except importlib.metadata.PackageNotFoundError:    # a checkout on PYTHONPATH, not installed
  __version__ = '0+unknown'

_PUBLIC = {
    'TransformerConfig': 'transformer_jax.nn.config',
    'Transformer': 'transformer_jax.models.transformer',
    'Encoder': 'transformer_jax.models.transformer',
    'Decoder': 'transformer_jax.models.transformer',
    'MultiHeadAttention': 'transformer_jax.nn.attention',
    'dot_product_attention': 'transformer_jax.nn.attention',
    'make_attention_mask': 'transformer_jax.nn.attention',
    'make_causal_mask': 'transformer_jax.nn.attention',
    'make_padding_mask': 'transformer_jax.nn.attention',
    'make_segment_mask': 'transformer_jax.nn.attention',
    'combine_masks': 'transformer_jax.nn.attention',
    'sinusoidal_table': 'transformer_jax.nn.positional',
    'apply_rotary': 'transformer_jax.nn.positional',
    'SinusoidalPositions': 'transformer_jax.nn.positional',
    'LearnedPositions': 'transformer_jax.nn.positional',
    'MultiplicativePositions': 'transformer_jax.nn.positional',
    'FeedForward': 'transformer_jax.nn.layers',
    'EncoderLayer': 'transformer_jax.nn.layers',
    'DecoderLayer': 'transformer_jax.nn.layers',
    'Embedder': 'transformer_jax.nn.layers',
    'TrainState': 'transformer_jax.train.steps',
    'init_train_state': 'transformer_jax.train.steps',
    'train_step': 'transformer_jax.train.steps',
    'eval_step': 'transformer_jax.train.steps',
    'beam_search': 'transformer_jax.decoding.beam',
    'greedy_search': 'transformer_jax.decoding.decode',
    'sample_search': 'transformer_jax.decoding.decode',
    'UserError': 'transformer_jax.base.errors',
    'load_pretrained': 'transformer_jax.pretrained.loading',
    'from_pretrained': 'transformer_jax.pretrained.loading',
    'Pretrained': 'transformer_jax.pretrained.loading',
}

__all__ = sorted(_PUBLIC)


SUBPACKAGES = ('analysis', 'base', 'checkpoints', 'cli', 'data', 'decoding', 'evaluation',
               'experiments', 'models', 'nn', 'pretrained', 'run', 'sweep', 'train')


def __dir__():
  """The public names, `__version__` and the subpackages, for dir(), help() and tab completion."""
  return sorted(set(_PUBLIC) | set(SUBPACKAGES) | {'__version__'})


# Module paths the 0.1 README documented (`from transformer_jax import modes, validation`):
# still importable for one release, with a DeprecationWarning naming the new path.
# (`transformer_jax.config` is a module of its own for the same reason.)
_MOVED = {'modes': 'transformer_jax.run.modes', 'validation': 'transformer_jax.train.validation'}


def __getattr__(name):
  if name in _MOVED:
    warnings.warn(f'transformer_jax.{name} moved to {_MOVED[name]}: import it from there (the old '
                  'path goes away in the next release)', DeprecationWarning, stacklevel=2)
    return importlib.import_module(_MOVED[name])
  if name in SUBPACKAGES:
    return importlib.import_module(f'transformer_jax.{name}')
  if name not in _PUBLIC:
    raise AttributeError(f'module transformer_jax has no attribute {name!r}')
  return getattr(importlib.import_module(_PUBLIC[name]), name)
