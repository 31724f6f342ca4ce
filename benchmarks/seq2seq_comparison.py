"""One table and one plot of test BLEU by source length for several translation models.

  python benchmarks/seq2seq_comparison.py \\
      'RNN=runs/rnn_plain/eval/test_step3000_avg1_beam5_alpha0.6_<digest>.json' \\
      'RNN+attention=runs/rnn_attention/eval/test_step3000_avg1_beam5_alpha0.6_<digest>.json' \\
      'Transformer=runs/m30k/eval/test_step4000_avg5_beam5_alpha0.6_<digest>.json' \\
      --out=docs/seq2seq_by_length

Each argument is NAME=PATH of the JSON `--mode=eval` writes (it holds the overall BLEU
and `bleu_by_source_length`). Writes OUT.md (one markdown table: a row per source-length
bucket, a column per model, `bleu_tok_lc`, sentence counts beside) and OUT.png (grouped
bars), and prints the table's numbers as JSON.
"""
import argparse
import json
import math

from transformer_jax.evaluation import bleu


def load(spec: str):
  name, sep, path = spec.partition('=')
  if not sep:
    raise SystemExit(f'error: {spec!r} is not NAME=PATH of an eval JSON file')
  with open(path) as f:
    return name, json.load(f)


def table(results, metric='bleu_tok_lc') -> str:
  """Markdown: overall BLEU first, then one row per source-length bucket."""
  names = list(results)
  fmt = lambda x: '–' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.2f}'
  lines = ['| source words | sentences | ' + ' | '.join(names) + ' |',
           '|---|---:|' + '---:|' * len(names)]
  first = results[names[0]]['bleu_by_source_length']
  total = sum(row['count'] for row in first)
  lines.append(f'| all | {total} | ' + ' | '.join(fmt(results[n][metric]) for n in names) + ' |')
  for i, row in enumerate(first):
    scores = [results[n]['bleu_by_source_length'][i][metric] for n in names]
    lines.append(f"| {row['bucket']} | {row['count']} | " + ' | '.join(map(fmt, scores)) + ' |')
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('runs', nargs='+', help='NAME=PATH of an eval JSON file')
  parser.add_argument('--out', default='seq2seq_by_length')
  args = parser.parse_args()
  results = dict(load(spec) for spec in args.runs)
  with open(args.out + '.md', 'w') as f:
    f.write('BLEU (`bleu_tok_lc`) on Multi30k test_2016_flickr by source length\n\n')
    f.write(table(results) + '\n')
  bleu.plot_bleu_by_length({n: r['bleu_by_source_length'] for n, r in results.items()},
                           args.out + '.png')
  print(json.dumps({n: {'bleu_tok_lc': r['bleu_tok_lc'],
                        'sacrebleu': r.get('sacrebleu', r.get('bleu')),   # older files: bleu
                        'by_length': {row['bucket']: row['bleu_tok_lc']
                                      for row in r['bleu_by_source_length']}}
                    for n, r in results.items()}, indent=1))


if __name__ == '__main__':
  main()
