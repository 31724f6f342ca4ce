"""word2vec with negative sampling (Mikolov et al., 2013a, §3; 2013b, §2.2).

Two tables: input vectors v (the word vectors kept afterwards, initialised uniformly in
±0.5/dim as in the word2vec tool) and output vectors u (initialised to zero). A row scores
an input representation h against the output vectors of its true word and K noise words:
  skip-gram: h = v[center],                            true word = context[:, 0]
  CBOW:      h = mean of v over the non-pad context,   true word = center[:, 0]
The scores [batch, 1 + K] go to objectives.NEGATIVE_SAMPLING.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from transformer_jax.base.errors import UserError
from transformer_jax.nn.config import Word2VecConfig
from transformer_jax.nn import objectives


def uniform_init(scale):
  """Initializer drawing uniformly from [-scale, scale)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def masked_mean(vectors, ids, pad_id):
  """Mean of `vectors` [batch, n, dim] over the positions where `ids` [batch, n] != pad_id."""
  mask = (ids != pad_id).astype(vectors.dtype)[..., None]
  count = jnp.maximum(mask.sum(axis=1), 1.0)           # an all-pad row gives zeros, not NaN
  return (vectors * mask).sum(axis=1) / count


class Word2Vec(nn.Module):
  """Skip-gram or CBOW scores for negative sampling."""
  config: Word2VecConfig

  OBJECTIVE = objectives.NEGATIVE_SAMPLING

  def setup(self):
    cfg = self.config
    self.input_embed = nn.Embed(cfg.vocab_size, cfg.embed_dim,
                                embedding_init=uniform_init(0.5 / cfg.embed_dim))
    self.output_embed = nn.Embed(cfg.vocab_size, cfg.embed_dim,
                                 embedding_init=nn.initializers.zeros)

  def __call__(self, center, context, negatives, deterministic=True, **unused_batch):
    """Scores of the true word and the noise words.

    Args:
      center: int32 [batch, 1] center words.
      context: int32 [batch, 1] (skip-gram) or [batch, 2 * window] (CBOW, 0 = pad).
      negatives: int32 [batch, K] noise words.
      deterministic: unused (no dropout); part of the common call signature.
      **unused_batch: other batch keys, ignored.

    Returns:
      float32 [batch, 1 + K]: column 0 the true pair, then the K noise words.
    """
    del deterministic, unused_batch
    cfg = self.config
    if cfg.mode == 'skipgram':
      if context.shape[-1] != 1 and not self.is_initializing():
        raise UserError(f'skip-gram needs one context word a row, got {context.shape[-1]}: set '
                        '--experiment.data.word2vec_mode to model.mode')
      inputs, true_word = center, context[:, :1]
    else:
      inputs, true_word = context, center[:, :1]
    hidden = masked_mean(self.input_embed(inputs), inputs, cfg.pad_id)       # [batch, dim]
    outputs = self.output_embed(jnp.concatenate([true_word, negatives], axis=1))  # [b, 1+K, d]
    return jnp.einsum('bd,bkd->bk', hidden, outputs).astype(jnp.float32)


def input_embeddings(params):
  """The word vectors: the input table [vocab_size, embed_dim] of Word2Vec params."""
  return params['input_embed']['embedding']
