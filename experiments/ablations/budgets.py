"""Budgets shared by the ablation sweeps of experiments/ablations/.

Every sweep here starts from experiments/multi30k.py:preln (the Transformer-Tiny recipe with
layer norm before each sublayer: 4+4 layers, d_model 128, 4 heads, FFN 256, dropout 0.3) and
runs either the full recipe (8000 steps of 8192 packed slots; ~4 h per member on a 2-core CPU,
~3.6 training minutes on one H200) or the `:mini` budget below.

The mini budget: 4096-slot batches, 300 warmup updates, 600 steps, checkpoints every 100
steps with the last 3 averaged for the final evaluation (beam 5 on all 1,014 validation
sentences). Measured on the 2-core CPU (table3.py:mini, baseline, seed 0): validation
bleu_tok_lc 28.69, sacreBLEU 28.63, perplexity 12.6, clear of the 20 it aims at; but 0.44-0.48
steps/s there, about 23 minutes a member with its evaluation, so a whole mini sweep is about
15 hours on that machine (it was meant to be about 6).
"""
BASE = 'experiments/multi30k.py:preln'

MINI = {
    'data.tokens_per_batch': 4096,
    'optim.warmup_steps': 300,
    'train.num_steps': 600,
    'train.eval_every_steps': 600,
    'train.checkpoint_every_steps': 100,
    'train.keep_checkpoints': 3,
    'train.log_every_steps': 50,
    'eval.average_last': 3,
    'eval.bleu': False,          # the member's final --mode=eval decodes and scores once
}


def common(arg):
  """The overrides every row gets for variant `arg` (None = the full recipe, 'mini')."""
  if arg is None:
    return {}
  if arg == 'mini':
    return dict(MINI)
  raise ValueError(f'unknown variant {arg!r}: use mini, or none for the full recipe')
