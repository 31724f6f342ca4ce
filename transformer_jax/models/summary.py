"""Parameter shapes and counts of a model from shapes alone (jax.eval_shape): no allocation."""
import math
from typing import Any

import jax
import jax.numpy as jnp

from transformer_jax.models.transformer import Transformer
from transformer_jax.nn.config import TransformerConfig


def count_params(params: Any) -> int:
  """Number of scalars in a params tree (arrays or ShapeDtypeStructs)."""
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))


def transformer_param_shapes(config: TransformerConfig, length: int = 8) -> Any:
  """The params tree of Transformer(config) as ShapeDtypeStructs."""
  tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
  model = Transformer(config)
  return jax.eval_shape(lambda t: model.init(jax.random.key(0), t, t), tokens)['params']
