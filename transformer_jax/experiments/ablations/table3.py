"""The paper's Table 3 (Vaswani et al., 2017) in miniature: Multi30k en->de around the
Transformer-Tiny recipe (d_model 128, 4 heads of d_k 32, FFN 256, 4+4 layers, dropout 0.3,
label smoothing 0.1, pre-LN; see experiments/ablations/budgets.py).

  python launch.py --sweep=experiments/ablations/table3.py:mini --workdir=runs/table3_mini
  python launch.py --sweep=experiments/ablations/table3.py:mini --workdir=runs/table3_mini \
      --sweep_list                                  # members, status, commands
  python launch.py --sweep=experiments/ablations/table3.py:mini --workdir=runs/table3_mini \
      --mode=report                                 # report.{md,csv,png} from what is done
  python launch.py --sweep=experiments/ablations/table3.py --workdir=runs/table3   # full recipe

Rows, each the baseline with one change, as in the paper's groups:
  (A) heads 1 / 2 / 8 / 16 at fixed d_model (d_k = d_v = 128 / h);
  (B) smaller d_k (16, 8) at 4 heads, d_v kept at 32;
  (C) 2 or 6 layers (each side), d_model 64 or 256 (d_k = d_model / 4), FFN 128 or 512;
  (D) dropout 0 / 0.1 / 0.5, label smoothing 0 / 0.2;
  (E) learned positions instead of sinusoids.
Each row carries the paper's dev BLEU and perplexity of its counterpart row (the paper's
base has 8 heads, 6 layers, d_model 512: our rows map by direction of the change, e.g. our
h=2 beside the paper's h=4), so the report shows whether the sign of each change agrees.
Seeds: 3 for the baseline, 2 for every other row (39 members).

Measured (mini, all 39 members, 2026-12-01/02, the 2-core CPU, two members at a time pinned one
per core: about 5.3 machine-hours): validation bleu_tok_lc of the baseline 21.41 +- 0.17 (3 seeds);
12 of the 16 rows beside a paper row that changed BLEU move the same way as the paper's (8 with
p < 0.05), 4 the other way (N=2, d_model=256, dropout 0: significant; label smoothing 0: not),
the significant three towards what trains fastest in 600 steps; dropout 0 gives 29.04 (+7.63). The report
(docs/ablations/table3_mini/report.{md,csv,png}) and the table in docs/ablations.md hold every row. The
members' results are archived there without checkpoints (`--mode=archive`); they ran with the
code of commit d8fb6e9 (dropout from 32-bit words, whole logits): later commits draw dropout
masks differently, so a member retrained with them is not the same experiment bit for bit.
The report was written with the code of today's main (that of d8fb6e9 does not find the
archived members' hypotheses, so it leaves their p-values empty).
"""
from transformer_jax.experiments.ablations import budgets
from transformer_jax.sweep import Row
from transformer_jax.sweep import Sweep


def get_sweep(arg=None):
  heads = [Row(f'A_h{h}', {'model.num_heads': h, 'model.head_dim': 128 // h},
               note=f'h={h}, d_k=d_v={128 // h}', paper=paper)
           for h, paper in ((1, dict(bleu=24.9, ppl=5.29)), (2, dict(bleu=25.5, ppl=5.00)),
                            (8, dict(bleu=25.8, ppl=4.91)), (16, dict(bleu=25.4, ppl=5.01)))]
  key_sizes = [Row(f'B_dk{d}', {'model.head_dim': d, 'model.value_dim': 32},
                   note=f'd_k={d}, d_v=32', paper=paper)
               for d, paper in ((16, dict(bleu=25.4, ppl=5.01)), (8, dict(bleu=25.1, ppl=5.16)))]
  sizes = [
      Row('C_N2', {'model.num_layers': 2}, note='N=2', paper=dict(bleu=23.7, ppl=6.11)),
      Row('C_N6', {'model.num_layers': 6}, note='N=6', paper=dict(bleu=25.5, ppl=4.88)),
      Row('C_d64', {'model.model_dim': 64, 'model.head_dim': 16}, note='d_model=64, d_k=16',
          paper=dict(bleu=24.5, ppl=5.75)),
      Row('C_d256', {'model.model_dim': 256, 'model.head_dim': 64}, note='d_model=256, d_k=64',
          paper=dict(bleu=26.0, ppl=4.66)),
      Row('C_ff128', {'model.mlp_dim': 128}, note='d_ff=128', paper=dict(bleu=25.4, ppl=5.12)),
      Row('C_ff512', {'model.mlp_dim': 512}, note='d_ff=512', paper=dict(bleu=26.2, ppl=4.75)),
  ]
  regularisation = [
      Row('D_drop0', {'model.dropout_rate': 0.0}, note='P_drop=0', paper=dict(bleu=24.6, ppl=5.77)),
      Row('D_drop0.1', {'model.dropout_rate': 0.1}, note='P_drop=0.1'),
      Row('D_drop0.5', {'model.dropout_rate': 0.5}, note='P_drop=0.5',
          paper=dict(bleu=25.5, ppl=4.95)),
      Row('D_ls0', {'train.label_smoothing': 0.0}, note='eps_ls=0', paper=dict(bleu=25.3, ppl=4.67)),
      Row('D_ls0.2', {'train.label_smoothing': 0.2}, note='eps_ls=0.2',
          paper=dict(bleu=25.7, ppl=5.47)),
  ]
  positions = [Row('E_learned', {'model.positional': 'learned'}, note='learned positions',
                   paper=dict(bleu=25.7, ppl=4.92))]
  baseline = Row('base', seeds=(0, 1, 2), note='Tiny, pre-LN', paper=dict(bleu=25.8, ppl=4.92))
  return Sweep(experiment=budgets.BASE, baseline='base', seeds=(0, 1),
               common=budgets.common(arg), note=budgets.note(arg),
               rows=[baseline, *heads, *key_sizes, *sizes, *regularisation, *positions])
