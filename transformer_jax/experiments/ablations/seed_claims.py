"""The claims of the tutorials this project grew from, measured on Multi30k en->de around the
Transformer-Tiny recipe (pre-LN; see experiments/ablations/budgets.py).

  python launch.py --sweep=experiments/ablations/seed_claims.py:mini --workdir=runs/claims_mini
  python launch.py --sweep=experiments/ablations/seed_claims.py:mini --workdir=runs/claims_mini \
      --mode=report

(a) "Without the 1/sqrt(d_k) scaling the softmax saturates and the gradients vanish": the
    paper's scaling against none (model.attention_scale=1.0) at d_k 16 / 32 / 64 / 128 (4 heads,
    d_v = d_k). The final evaluation records the attention entropy and the fraction of
    saturated rows (max weight > 0.99) at initialisation and after training
    (eval.attention_stats); the report adds the gradient norm at the start and end of training.
(b) Positional encodings: sinusoidal (baseline), learned, multiplicative, rotary, none.
(c) One head against several at equal parameter count (h x d_k = 128 throughout).
Seeds: 3 for the baseline, 2 for the other rows.

Measured (mini, all 29 members, 2026-12-01/02, the 2-core CPU, two members at a time pinned
one per core; the last 22 took 103 minutes): docs/ablations/seed_claims_mini/ (report.md,
report.csv, report.png, report_scaling.png, report_heads.png; the members' results without
checkpoints). Validation bleu_tok_lc, mean +- s.e.: base 21.47 +- 0.20 (3 seeds); scaled d_k
16 / 64 / 128: 20.30, 21.72, 20.82; unscaled d_k 16 / 32 / 64 / 128: 8.29, 6.90, 5.20, 3.54,
with 58%, 69%, 82%, 88% of attention rows saturated after training (9-29% scaled) but only
7-12% at initialisation at every d_k (the Xavier init keeps the unscaled logits' variance
near 30 whatever d_k); the global gradient norm is not smaller without the scaling but larger
(1.3-2.4 at the start; 0.55 to 9.2 at the end, growing with d_k). Positions: rotary 25.10
(+3.6), learned 20.49, multiplicative 18.78, none 17.70. Heads at h x d_k = 128: one 20.75,
eight 21.28. The members ran with the code of 351ef24 (`git worktree add ../claimscode
351ef24` reproduces them exactly); seed 0 of the baseline trained with the code of 45bb142 and
was evaluated with that of 86412de, which sums the loss's table gradient in another order
(float-level differences only).
"""
from transformer_jax.experiments.ablations import budgets
from transformer_jax.sweep import Curves
from transformer_jax.sweep import Row
from transformer_jax.sweep import Sweep

_DIMS = (16, 32, 64, 128)


def get_sweep(arg=None):
  scaling = []
  for d in _DIMS:
    if d != 32:                                   # d_k 32 scaled is the baseline
      scaling.append(Row(f'scaled_dk{d}', {'model.head_dim': d}, note=f'd_k={d}, scaled'))
    scaling.append(Row(f'unscaled_dk{d}', {'model.head_dim': d, 'model.attention_scale': 1.0},
                       note=f'd_k={d}, no 1/sqrt(d_k)'))
  positions = [Row(f'pos_{kind}', {'model.positional': kind}, note=f'{kind} positions')
               for kind in ('learned', 'multiplicative', 'rotary', 'none')]
  heads = [Row(f'heads{h}_dk{128 // h}', {'model.num_heads': h, 'model.head_dim': 128 // h},
               note=f'{h} head(s) of d_k {128 // h}') for h in (1, 8)]
  scaling_curves = Curves(
      'scaling', 'd_k (4 heads, d_v = d_k)',
      series={'scaled 1/sqrt(d_k)': [(d, 'base' if d == 32 else f'scaled_dk{d}') for d in _DIMS],
              'no scaling': [(d, f'unscaled_dk{d}') for d in _DIMS]},
      panels=[('bleu_tok_lc',), ('init_attention_entropy', 'attention_entropy'),
              ('init_attention_saturated', 'attention_saturated'),
              ('grad_norm_start', 'grad_norm_end')])
  head_curves = Curves('heads', 'heads (h x d_k = 128)',
                       series={'scaled': [(1, 'heads1_dk128'), (4, 'base'), (8, 'heads8_dk16')]},
                       panels=[('bleu_tok_lc',), ('perplexity',), ('attention_entropy',)])
  # Each unscaled row also against the scaled row of its own d_k (d_k 32 scaled is the base).
  compare = [(f'scaled_dk{d}', f'unscaled_dk{d}') for d in _DIMS if d != 32]
  return Sweep(experiment=budgets.BASE, baseline='base', seeds=(0, 1),
               curves=(scaling_curves, head_curves), compare=compare,
               note=budgets.note(arg),
               common={**budgets.common(arg), 'eval.attention_stats': True},
               extra_metrics=('attention_entropy', 'attention_saturated',
                              'init_attention_entropy', 'init_attention_saturated',
                              'grad_norm_start', 'grad_norm_end'),
               rows=[Row('base', seeds=(0, 1, 2), note='d_k=32, scaled, sinusoidal, 4 heads'),
                     *scaling, *positions, *heads])
