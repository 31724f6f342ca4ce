"""transformer_jax: the Transformer (Vaswani et al., 2017) and its relatives as functional Flax modules.

The public names load lazily, so `import transformer_jax.config` (used by experiment
files, which must not pull in jax) stays cheap.
"""
import importlib

_PUBLIC = {
    'TransformerConfig': 'transformer_jax.config',
    'Transformer': 'transformer_jax.models.transformer',
    'Encoder': 'transformer_jax.models.transformer',
    'Decoder': 'transformer_jax.models.transformer',
    'MultiHeadAttention': 'transformer_jax.attention',
    'dot_product_attention': 'transformer_jax.attention',
    'make_attention_mask': 'transformer_jax.attention',
    'make_causal_mask': 'transformer_jax.attention',
    'make_padding_mask': 'transformer_jax.attention',
    'make_segment_mask': 'transformer_jax.attention',
    'combine_masks': 'transformer_jax.attention',
    'sinusoidal_table': 'transformer_jax.positional',
    'apply_rotary': 'transformer_jax.positional',
    'SinusoidalPositions': 'transformer_jax.positional',
    'LearnedPositions': 'transformer_jax.positional',
    'MultiplicativePositions': 'transformer_jax.positional',
    'FeedForward': 'transformer_jax.layers',
    'EncoderLayer': 'transformer_jax.layers',
    'DecoderLayer': 'transformer_jax.layers',
    'Embedder': 'transformer_jax.layers',
    'TrainState': 'transformer_jax.steps',
    'init_train_state': 'transformer_jax.steps',
    'train_step': 'transformer_jax.steps',
    'eval_step': 'transformer_jax.steps',
    'beam_search': 'transformer_jax.decode',
    'greedy_search': 'transformer_jax.decode',
    'sample_search': 'transformer_jax.decode',
    'UserError': 'transformer_jax.errors',
    'load_pretrained': 'transformer_jax.pretrained',
    'Pretrained': 'transformer_jax.pretrained',
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
  if name not in _PUBLIC:
    raise AttributeError(f'module transformer_jax has no attribute {name!r}')
  return getattr(importlib.import_module(_PUBLIC[name]), name)
