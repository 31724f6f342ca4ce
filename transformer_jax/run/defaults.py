"""Defaults shared by every experiment; each experiment file changes a few keys.

Sections: `model` (every TransformerConfig field, so any can be overridden from the
command line), `data`, `optim`, `train`, `eval`, `decode`. Nothing here imports jax.
"""
import dataclasses
import typing

import ml_collections
from ml_collections import config_dict

from transformer_jax.nn.config import NAMED_SETTINGS, TransformerConfig


def model_config(setting: str = 'tiny', **changes) -> ml_collections.ConfigDict:
  """`family='transformer'` and all TransformerConfig fields for a named setting.

  vocab_size 0 means "take it from the data's tokenizer".
  """
  return dataclass_config(TransformerConfig(**NAMED_SETTINGS[setting]), 'transformer', **changes)


def dataclass_config(defaults, family: str, **changes) -> ml_collections.ConfigDict:
  """`config.model` for any family: its name plus every field of the config dataclass
  instance `defaults` (Optional fields become typed placeholders, so `--x=16` parses),
  with vocab_size 0 and `changes` applied."""
  hints = typing.get_type_hints(type(defaults))
  defaults = dataclasses.asdict(defaults)
  defaults.update(vocab_size=0, **changes)
  fields = {'family': family}
  for name, value in defaults.items():
    if value is None:     # Optional[int] etc.: keep the type so `--x=16` parses
      value = config_dict.placeholder(typing.get_args(hints[name])[0])
    fields[name] = value
  return ml_collections.ConfigDict(fields)


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = model_config('tiny')

  config.data = ml_collections.ConfigDict(dict(
      dataset='copy',                 # copy | reverse | multi30k
      raw_dir='../shared/data/multi30k',
      data_dir='',                    # where TFDS writes array_record; '' = <workdir>/tfds
      tokenizer_dir='',               # sentencepiece models; '' = <workdir>/tokenizer
      source_lang='en',
      target_lang='de',
      vocab_size=8000,                # sentencepiece, joint source+target
      tokenizer_type='bpe',           # bpe | unigram
      max_len=128,                    # longer training pairs are dropped
      tokens_per_batch=4096,          # global, per side, per step (padded slots)
      bucket_lengths=(),              # () = a default ladder up to max_len
      pack=False,
      shuffle_seed=0,
      eval_rows_per_batch=0,          # 0 = derive from tokens_per_batch
      train_examples=0,               # 0 = every training pair; N = the first N (a fixed
                                      # subset, for budgets that must converge; the tokenizer
                                      # is still learnt from the whole training split)
      copy_min_len=4,
      copy_max_len=16,
      copy_vocab_size=32,
      copy_num_train=20000,
      copy_num_eval=500,
      copy_seed=0,
  ))

  config.optim = ml_collections.ConfigDict(dict(
      optimizer='adam',                                   # adam | sgd | adagrad
      schedule='rsqrt',                                   # rsqrt | constant | cosine | linear
      learning_rate=config_dict.placeholder(float),       # peak; None = the paper's d^-0.5 warmup^-0.5
      warmup_steps=4000,                                  # in optimizer updates; the paper's value
      b1=0.9, b2=0.98, eps=1e-9,                          # the paper's Adam
      weight_decay=0.0,
      grad_clip_norm=0.0,                                 # 0 = no clipping
      grad_accum_steps=1,                                 # micro-steps (batches) per update
  ))

  config.train = ml_collections.ConfigDict(dict(
      num_steps=2000,                     # micro-steps (batches); a multiple of grad_accum_steps
      seed=0,
      label_smoothing=0.1,                # the paper's epsilon_ls
      parallelism='pmap',                 # pmap | jit (NamedSharding data parallel)
      steps_per_loop=1,                   # K steps (batches) per compiled call (lax.scan);
                                          # same results as 1 (trainer.py)
      prefetch_depth=2,                   # calls' batches made and put on the devices ahead,
                                          # on a thread; 0 = in the loop's thread
      loss_chunk_tokens=256,              # tied projection + loss formed this many tokens at
                                          # a time (projected_loss.py); 0 = logits whole
      log_every_steps=50,
      eval_every_steps=500,
      checkpoint_every_steps=500,
      keep_checkpoints=5,
      early_stop_patience=0,              # stop once the validation loss has not improved for
                                          # this many evaluations (eval_every_steps apart);
                                          # num_steps is then the cap; 0 = train num_steps
      early_stop_min_delta=0.0,           # an improvement must lower the loss by more than this
      keep_best='',                       # also keep the best step by this eval metric, e.g.
                                          # 'bleu_tok_lc' or 'loss'; '' = off (checkpoint.py)
      init_embeddings='',                 # word2vec vectors.txt for the embedding rows; '' = off
      skip_memory_check=False,            # train even if the memory estimate exceeds what a
                                          # device has (memory_check.py)
      profile_steps='',                   # jax.profiler trace into <workdir>/tensorboard: 'N'
                                          # steps after the first, or 'START:STOP'; '' = off
  ))

  config.eval = ml_collections.ConfigDict(dict(
      split='validation',                 # split for --mode=eval and the periodic eval
      max_batches=0,                      # 0 = the whole split
      bleu=False,                         # decode and score during periodic evaluation
      average_last=1,                     # --mode=eval averages the last K checkpoints
      attention_stats=False,              # --mode=eval: attention entropy and saturation
      tensorboard_examples=3,             # training: the split's first N sources, references
                                          # and translations to TensorBoard's text tab at
                                          # each evaluation; 0 = none
  ))

  config.decode = ml_collections.ConfigDict(dict(
      method='beam',                      # beam | greedy | sample
      beam_size=4,
      alpha=0.6,                          # length penalty (the paper's value)
      max_extra_len=50,                   # output may be this much longer than the source
      temperature=1.0,
      top_k=0,
      top_p=1.0,
      cache_stages=4,                     # the decoding cache grows in this many stages
      nbest=1,                            # --mode=translate prints the n best of a beam search
  ))
  return config
