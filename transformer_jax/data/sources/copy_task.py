"""Synthetic copy / reverse tasks as a TFDS builder written as array_record.

The smallest sanity check of a sequence-to-sequence model: the target is the input
(`copy`) or the input reversed (`reverse`). Tokens are drawn uniformly from the ids
`[3, vocab_size)`, since 0 = pad, 1 = EOS and 2 = UNK are reserved as in the
sentencepiece models; EOS is appended to both sides.

Every parameter lives in the BuilderConfig and the config name is derived from all of
them, so two settings never share a folder in one data dir. The data depend only on
the parameters (seed included), never on the machine.
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from transformer_jax.base.errors import UserError
from transformer_jax.data import preparation

TASKS = ('copy', 'reverse')
EOS_ID = 1
FIRST_TOKEN_ID = 3  # 0 = pad, 1 = EOS, 2 = UNK are never drawn.
# Split -> index mixed into the seed, so splits are independent draws.
SPLITS = {'train': 0, 'validation': 1, 'test': 2}


@dataclasses.dataclass(eq=False)
class CopyTaskConfig(tfds.core.BuilderConfig):
  """Parameters of one synthetic task; build it with `make_config` for a unique name.

  Attributes:
    task: 'copy' or 'reverse'.
    min_len: shortest sequence, in tokens before EOS.
    max_len: longest sequence, in tokens before EOS (inclusive).
    vocab_size: ids are in [0, vocab_size); tokens are drawn from [3, vocab_size).
    num_train: examples in the train split.
    num_eval: examples in each of the validation and test splits.
    seed: seed of the draws.
  """
  task: str = 'copy'
  min_len: int = 1
  max_len: int = 20
  vocab_size: int = 32
  num_train: int = 10000
  num_eval: int = 1000
  seed: int = 0


def make_config(task='copy', *, min_len=1, max_len=20, vocab_size=32, num_train=10000,
                num_eval=1000, seed=0):
  """A validated CopyTaskConfig whose name encodes every parameter."""
  if task not in TASKS:
    raise UserError(f'unknown synthetic task {task!r}: set --experiment.data.dataset to one of '
                    f'{", ".join(TASKS)} or multi30k')
  if not 1 <= min_len <= max_len:
    raise UserError(f'copy task lengths {min_len}..{max_len} are not a range: set '
                    '--experiment.data.copy_min_len >= 1 and copy_max_len >= copy_min_len')
  if vocab_size <= FIRST_TOKEN_ID:
    raise UserError(f'copy_vocab_size={vocab_size} leaves no token ids (0, 1, 2 are pad, EOS, '
                    f'UNK): set --experiment.data.copy_vocab_size to at least {FIRST_TOKEN_ID + 1}')
  if num_train < 1 or num_eval < 1:
    raise UserError(f'copy task needs examples (copy_num_train={num_train}, copy_num_eval='
                    f'{num_eval}): set --experiment.data.copy_num_train and copy_num_eval >= 1')
  name = (f'{task}_len{min_len}-{max_len}_vocab{vocab_size}_train{num_train}'
          f'_eval{num_eval}_seed{seed}')
  return CopyTaskConfig(name=name, task=task, min_len=min_len, max_len=max_len,
                        vocab_size=vocab_size, num_train=num_train, num_eval=num_eval,
                        seed=seed, description=f'Synthetic {task} task ({name}).')


def generate(config, split):
  """Draws one split; pure numpy, the single source of the data.

  Args:
    config: a CopyTaskConfig.
    split: 'train' | 'validation' | 'test'.

  Returns:
    (inputs, targets): lists of int32 arrays, each ending in EOS.
  """
  num = config.num_train if split == 'train' else config.num_eval
  rng = np.random.default_rng([config.seed, SPLITS[split]])
  lengths = rng.integers(config.min_len, config.max_len + 1, size=num)
  tokens = rng.integers(FIRST_TOKEN_ID, config.vocab_size, size=lengths.sum(), dtype=np.int32)
  eos = np.array([EOS_ID], np.int32)
  inputs, targets = [], []
  for seq in np.split(tokens, np.cumsum(lengths)[:-1]):
    inputs.append(np.concatenate([seq, eos]))
    targets.append(np.concatenate([seq[::-1] if config.task == 'reverse' else seq, eos]))
  return inputs, targets


class CopyTask(preparation.GeneratedData, tfds.core.GeneratorBasedBuilder):
  """Copy / reverse sequences of random token ids; configs come from `make_config`.
  Made on the fly, so preparing it says so in one line (preparation.GeneratedData)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'copy and reverse, EOS-terminated int32 sequences.'}
  # No predefined configs: every config is custom with a derived name, so TFDS's
  # "custom config named like a registered one" error cannot happen.
  BUILDER_CONFIGS = []

  def _info(self):
    seq = tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self,
        description='Synthetic copy / reverse task over random token ids >= 3, EOS = 1.',
        features=tfds.features.FeaturesDict({'inputs': seq, 'targets': seq}),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split):
    inputs, targets = generate(self.builder_config, split)
    for i, (x, y) in enumerate(zip(inputs, targets)):
      yield i, {'inputs': x, 'targets': y}


def prepare(data_dir, config):
  """Builds (once) and returns the CopyTask builder of `config` under `data_dir`."""
  return preparation.prepare_once(
      data_dir, f'copy_task_{config.name}',
      lambda: CopyTask(data_dir=data_dir, config=config, file_format='array_record'),
      lambda builder: builder.download_and_prepare())
