"""The Table 3 rows whose sign disagreed with the paper under the mini budget, trained to a
validation plateau: does each sign still disagree once the budget stops measuring how fast a
setting learns?

  python launch.py --sweep=experiments/ablations/converged.py --workdir=runs/converged \
      --sweep_parallel=2 --sweep_pin_cores
  python launch.py --sweep=experiments/ablations/converged.py --workdir=runs/converged \
      --mode=report

Around the Transformer-Tiny recipe (pre-LN, 4+4 layers, d_model 128, 4 heads, FFN 256,
dropout 0.3; experiments/ablations/budgets.py), on a fixed subset so that a 2-core CPU reaches
the plateau: the first 6,000 of Multi30k's 29,000 training pairs (the 6,000-piece joint BPE
is still learnt from all 29,000), 2048-slot packed batches, peak learning rate 5e-3 after 300
warmup updates. Each member trains until its validation loss has not improved for 4
evaluations 100 steps apart (at most 4,000 steps); the last 5 checkpoints, the plateau, are
averaged for the final evaluation (beam 5, all 1,014 validation sentences).

Rows: the baseline; dropout 0 and 0.1 (baseline 0.3); N=2 layers (baseline 4); d_model 256
with the learning rate scaled by the paper's d_model^-0.5 rule (5e-3 * (128/256)^0.5); one
head of d_k 128 and eight of d_k 16 (h x d_k = 128, equal parameters). Three seeds each; the
seed sets initialisation, dropout and data order alike.

`:smoke` is the same sweep on the copy task with a few steps (tests/sweep/sweep_test.py).

Result (2026-12-07/08, 2-core Intel Xeon, two members at a time pinned one per core, all 21
members on the code of commit 5861523; archive and report in docs/ablations/converged/,
discussed in docs/ablations.md). Validation bleu_tok_lc, mean +- s.e. over 3 seeds, Δ vs base
with its 95% interval (seeds and sentences) and Holm p: base 23.67 +- 0.17; dropout 0 19.51,
-4.16 [-4.96, -3.35], p < 0.001; dropout 0.1 22.37, -1.30 [-2.02, -0.58], p < 0.001; N=2
22.91, -0.76 [-1.48, -0.03], p 0.16; d_model 256 23.05, -0.62 [-1.35, +0.10], p 0.26; h=1
24.30, +0.63 [-0.07, +1.34], p 0.26; h=8 23.16, -0.51 [-1.21, +0.20], p 0.26. Every member
stopped on the plateau rule (700-1,800 steps), none at the cap; 8-45 minutes a member on a
pinned core.
"""
from transformer_jax.experiments.ablations import budgets
from transformer_jax.sweep import Budget
from transformer_jax.sweep import Row
from transformer_jax.sweep import Sweep

SUBSET = {
    'data.train_examples': 6000,
    'data.vocab_size': 6000,
    'data.tokens_per_batch': 2048,
    'optim.warmup_steps': 300,
    'train.log_every_steps': 50,
    'eval.bleu': False,          # validation loss only at the periodic evaluations
    'decode.max_extra_len': 20,  # as the mini budget (budgets.py)
}


def get_sweep(arg=None):
  rows = [
      Row('base', note='Tiny, pre-LN, dropout 0.3', paper=dict(bleu=25.8, ppl=4.92)),
      Row('D_drop0', {'model.dropout_rate': 0.0}, note='P_drop=0',
          paper=dict(bleu=24.6, ppl=5.77)),
      Row('D_drop0.1', {'model.dropout_rate': 0.1}, note='P_drop=0.1'),
      Row('C_N2', {'model.num_layers': 2}, note='N=2', paper=dict(bleu=23.7, ppl=6.11)),
      Row('C_d256', {'model.model_dim': 256, 'model.head_dim': 64}, scale_lr_with_width=True,
          note='d_model=256, d_k=64, lr x (128/256)^0.5', paper=dict(bleu=26.0, ppl=4.66)),
      Row('A_h1', {'model.num_heads': 1, 'model.head_dim': 128}, note='h=1, d_k=128',
          paper=dict(bleu=24.9, ppl=5.29)),
      Row('A_h8', {'model.num_heads': 8, 'model.head_dim': 16}, note='h=8, d_k=16',
          paper=dict(bleu=25.8, ppl=4.91)),
  ]
  if arg == 'smoke':
    return Sweep(experiment='experiments/copy_task.py:smoke', baseline='base', seeds=(0, 1),
                 rows=[Row('base'), Row('wide', {'model.model_dim': 32},
                                        scale_lr_with_width=True)],
                 common={'optim.learning_rate': 1e-3},
                 budget=Budget('plateau', patience=2, eval_every_steps=2, max_steps=6),
                 metric='accuracy')
  if arg is not None:
    raise ValueError(f'unknown variant {arg!r} of converged: use smoke, or none')
  return Sweep(experiment=budgets.BASE, baseline='base', seeds=(0, 1, 2), rows=rows,
               common=SUBSET, budget=Budget('plateau', patience=4, eval_every_steps=100,
                                            max_steps=4000))
