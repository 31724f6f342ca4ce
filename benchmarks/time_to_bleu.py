"""Validation BLEU against wall-clock minutes of training, from a run's metrics.jsonl.

  python benchmarks/time_to_bleu.py runs/m30k [runs/other ...] --out=time_to_bleu.png

Prints one JSON object per evaluation (run, step, minutes, bleu, bleu_tok_lc) and draws
the curves (minutes on x, BLEU on y) into --out. Minutes count from the start of the
process that logged them; a resumed run continues from its last logged minute.
"""
import argparse
import json
import pathlib

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(workdir: str, split: str = 'validation'):
  """[(step, minutes, bleu, bleu_tok_lc)] of the evaluations of `split` that decoded."""
  points, offset, last_minutes = [], 0.0, 0.0
  for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines():
    record = json.loads(line)
    if record.get('split') != split or 'bleu' not in record:
      continue
    if record['minutes'] < last_minutes:       # a resumed process restarts its clock
      offset += last_minutes
    last_minutes = record['minutes']
    points.append((record['step'], offset + record['minutes'], record['bleu'], record['bleu_tok_lc']))
  return points


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--split', default='validation')
  parser.add_argument('--out', default='time_to_bleu.png')
  args = parser.parse_args()
  figure, axes = plt.subplots(figsize=(6, 4))
  for workdir in args.workdirs:
    curve = read_curve(workdir, args.split)
    for step, minutes, score, score_lc in curve:
      print(json.dumps({'run': workdir, 'step': step, 'minutes': round(minutes, 2),
                        'bleu': round(score, 2), 'bleu_tok_lc': round(score_lc, 2)}))
    if curve:
      axes.plot([p[1] for p in curve], [p[3] for p in curve], marker='o', label=f'{workdir} (tok, lc)')
      axes.plot([p[1] for p in curve], [p[2] for p in curve], marker='.', linestyle='--',
                label=f'{workdir} (sacreBLEU)')
  axes.set_xlabel('training wall-clock minutes')
  axes.set_ylabel(f'{args.split} BLEU')
  axes.grid(alpha=0.3)
  axes.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(args.out, dpi=120)
  print(json.dumps({'plot': args.out}))


if __name__ == '__main__':
  main()
