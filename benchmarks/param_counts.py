"""Parameter counts of our Transformer beside the paper's Table 3 (Vaswani et al., 2017).

  python benchmarks/param_counts.py          # prints one JSON object per Table 3 row

Shapes only (jax.eval_shape): nothing is allocated, so `big` costs no memory. The paper
uses a shared source-target vocabulary of about 37,000 tokens (§5.1, WMT 2014 en-de).
"""
import json

from transformer_jax.models import summary
from transformer_jax.nn.config import TransformerConfig

PAPER_VOCAB = 37_000

# Table 3 rows that list a parameter count (in millions): name, changes to base, paper's count.
TABLE3_ROWS = [
    ('base', {}, 65),
    ('B d_k=16', dict(head_dim=16, value_dim=64), 58),
    ('B d_k=32', dict(head_dim=32, value_dim=64), 60),
    ('C N=2', dict(num_layers=2), 36),
    ('C N=4', dict(num_layers=4), 50),
    ('C N=8', dict(num_layers=8), 80),
    ('C d_model=256', dict(model_dim=256, head_dim=32, value_dim=32), 28),
    ('C d_model=1024', dict(model_dim=1024, head_dim=128, value_dim=128), 168),
    ('C d_ff=1024', dict(mlp_dim=1024), 53),
    ('C d_ff=4096', dict(mlp_dim=4096), 90),
    ('big', 'big', 213),
]


def table3_counts(vocab_size: int = PAPER_VOCAB):
  """Yields (row name, our count, paper's count in millions)."""
  for name, changes, paper in TABLE3_ROWS:
    if isinstance(changes, str):
      config = TransformerConfig.named(changes, vocab_size=vocab_size)
    else:
      config = TransformerConfig.named('base', vocab_size=vocab_size, **changes)
    yield name, summary.count_params(summary.transformer_param_shapes(config)), paper


def main():
  for name, ours, paper in table3_counts():
    print(json.dumps({'row': name, 'ours_millions': round(ours / 1e6, 2), 'paper_millions': paper,
                      'ours': ours}))


if __name__ == '__main__':
  main()
