"""Budgets shared by the ablation sweeps of experiments/ablations/.

Every sweep here starts from experiments/multi30k.py:preln (the Transformer-Tiny recipe with
layer norm before each sublayer: 4+4 layers, d_model 128, 4 heads, FFN 256, dropout 0.3) and
runs either the full recipe (8000 steps of 8192 packed slots; ~4 h per member on a 2-core CPU,
~3.6 training minutes on one H200) or the `:mini` budget below.

The mini budget: a 6,000-token joint BPE (the recipe has 10,000), 2048-slot batches, 300
warmup updates, 600 steps, checkpoints every 100 steps with the last 3 averaged for the final
evaluation (beam 5 on all 1,014 validation sentences, outputs at most 20 tokens longer than
their source: the pilot's BLEU was the same as with the recipe's 50, and decoding took 31% less
CPU, because beam search's exact stopping rule otherwise runs on long after the ~13-token
references are complete). Measured on the 2-core CPU (AMD EPYC,
jax 0.10.2, a day when a jit 2048^3 f32 matmul ran at 115 GFLOP/s), baseline, seed 0:
validation bleu_tok_lc 20.92, perplexity 20.1; 9.9 training minutes and 2.0 evaluation
minutes on both cores. Pinned one member per core (--sweep_parallel=2 --sweep_pin_cores), two members train
1.25x faster together than one after the other.
(An earlier mini budget, 4096-slot batches and the 10k vocabulary, reached 28.69 but took
about 23 minutes a member: 15 hours a sweep.)
"""
BASE = 'experiments/multi30k.py:preln'

MINI = {
    'data.vocab_size': 6000,
    'data.tokens_per_batch': 2048,
    'optim.warmup_steps': 300,
    'train.num_steps': 600,
    'train.eval_every_steps': 600,
    'train.checkpoint_every_steps': 100,
    'train.keep_checkpoints': 3,
    'train.log_every_steps': 50,
    'eval.average_last': 3,
    'eval.bleu': False,          # the member's final --mode=eval decodes and scores once
    'decode.max_extra_len': 20,  # beam 5 stops 20 tokens past the source (recipe: 50)
}


MINI_NOTE = (
    'What the mini budget measures: early training. Each member sees about 1.19 M target '
    'tokens (600 updates of 2,048 slots, about 2.5 epochs of Multi30k); at the last step the '
    'learning rate is still about 70% of its peak and the losses are still falling (the '
    '"still improving" column, report_curves.png). Settings that change how fast a model '
    'learns (dropout, depth, width) therefore rank by speed here, not by what they converge '
    'to; experiments/ablations/converged.py re-measures those rows to a validation plateau.')


def note(arg):
  """The report's note on what variant `arg`'s budget measures."""
  return MINI_NOTE if arg == 'mini' else ''


def common(arg):
  """The overrides every row gets for variant `arg` (None = the full recipe, 'mini')."""
  if arg is None:
    return {}
  if arg == 'mini':
    return dict(MINI)
  raise ValueError(f'unknown variant {arg!r}: use mini, or none for the full recipe')
