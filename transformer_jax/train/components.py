"""What a run is made of, built from an experiment config: tokenizer, model, optimizer, runner.

train, eval and translate modes all build through here, so they agree on the model.
"""
import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp

from transformer_jax.base.errors import UserError
from transformer_jax.checkpoints import integrity as checkpoint_integrity
from transformer_jax import data
from transformer_jax.data import batching
from transformer_jax.models import families
from transformer_jax.train import memory_check
from transformer_jax.train import optim
from transformer_jax.train import parallel
from transformer_jax.train import steps
from transformer_jax.train import validation


@dataclasses.dataclass
class Components:
  tokenizer: Any
  model_config: Any          # the family's config dataclass (TransformerConfig, RNNConfig, ...)
  model: Any                 # flax module
  family: families.Family
  tx: Any
  learning_rate_fn: Callable[[Any], Any]
  runner: Any


def family_of(config) -> families.Family:
  name = config.model.get('family', 'transformer')
  try:
    return families.get(name)
  except ValueError as e:
    raise UserError(f'{e}: set --experiment.model.family') from None


def make_model_config(model_section, vocab_size: int):
  """The family's config dataclass from `config.model`, with vocab_size 0 taken from the tokenizer."""
  fields = model_section.to_dict()
  family = families.get(fields.pop('family', 'transformer'))
  if not fields.get('vocab_size'):
    fields['vocab_size'] = vocab_size
  elif fields['vocab_size'] < vocab_size:
    raise UserError(f'model.vocab_size={fields["vocab_size"]} is smaller than the tokenizer\'s '
                    f'{vocab_size}: set --experiment.model.vocab_size=0 to follow the tokenizer')
  try:
    return family.config_class()(**fields)
  except (TypeError, ValueError) as e:
    raise UserError(f'{e}') from None


def schedule_dim(config) -> int:
  """The width the paper's default peak learning rate scales with (d_model, or the RNN/embedding size)."""
  for name in ('model_dim', 'hidden_dim', 'embed_dim'):
    if config.model.get(name):
      return config.model[name]
  return 512


def preflight(config, workdir: str) -> None:
  """Every check that needs no data or compilation, so a bad config fails before any write:
  the model family and fields, training sequences the position table covers, the optimizer, the
  parallelism, the data's presence, and a batch that splits evenly over the devices."""
  validation.check_config(config)
  family = family_of(config)
  if config.data.get('pack') and not family.packs:
    raise UserError(f'model family {family.name!r} does not take packed batches: set '
                    '--experiment.data.pack=False')
  vocab_size = data.planned_vocab_size(config.data)
  model_config = make_model_config(config.model,
                                   vocab_size=vocab_size or config.model.get('vocab_size') or 1)
  limit = model_config.max_input_len      # training sequences past a position table give NaN
  if limit is not None and config.data.max_len > limit:
    raise UserError(f'data.max_len={config.data.max_len} exceeds the {limit} positions the '
                    f'model reads (model.max_len={model_config.max_len}, '
                    f'positional={model_config.positional!r}): raise --experiment.model.max_len '
                    'or lower --experiment.data.max_len')
  optim.make_optimizer(config.optim, schedule_dim(config), config.train.num_steps)
  if config.train.parallelism not in parallel.RUNNERS:
    raise UserError(f'unknown train.parallelism {config.train.parallelism!r}: '
                    f'choose one of {sorted(parallel.RUNNERS)}')
  data.check_available(config.data, workdir)
  embeddings = config.train.get('init_embeddings')
  if embeddings and not os.path.isfile(embeddings):
    raise UserError(f'train.init_embeddings={embeddings!r} is not a file: give a word2vec '
                    'vectors.txt (written by experiments/word2vec.py), or '' for none')
  if not config.data.pack:
    buckets = batching.normalize_bucket_lengths(tuple(config.data.bucket_lengths), config.data.max_len)
    batching.rows_for_length(config.data.tokens_per_batch, buckets[-1], jax.device_count())
  memory_check.check_model(config, model_config, family)    # last: the others name the cause


def build(config, workdir: str) -> Components:
  tokenizer = data.get_tokenizer(config.data, workdir)
  family = family_of(config)
  model_config = make_model_config(config.model, tokenizer.vocab_size)
  checkpoint_integrity.check_model_config(workdir, model_config)   # the model it was trained as
  model = family.model_class()(model_config)
  tx, learning_rate_fn = optim.make_optimizer(config.optim, schedule_dim(config),
                                              config.train.num_steps)
  runner = parallel.make_runner(config.train.parallelism, model=model,
                                label_smoothing=config.train.label_smoothing,
                                learning_rate_fn=learning_rate_fn,
                                loss_chunk=config.train.loss_chunk_tokens)
  return Components(tokenizer, model_config, model, family, tx, learning_rate_fn, runner)


def init_state(parts: Components, seed: int) -> steps.TrainState:
  """Fresh host state; only shapes of the example batch matter."""
  example = {key: jax.ShapeDtypeStruct((1, 8)[:rank], jnp.dtype(dtype))
             for key, rank, dtype in parts.family.example_batch}
  return steps.init_train_state(parts.model, jax.random.PRNGKey(seed), example, parts.tx)
