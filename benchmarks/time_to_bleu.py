"""Validation BLEU against wall-clock minutes of training, from a run's metrics.jsonl.

  python benchmarks/time_to_bleu.py runs/m30k [runs/other ...] --out=time_to_bleu.png \\
      [--reference='Flax example=15:18.6,30:29.7,45:34.7,60:37.8']

Prints one JSON object per evaluation (run, step, minutes, sacrebleu, bleu_tok_lc) and draws
the curves (minutes on x, BLEU on y) into --out. The trainer's `minutes` continue across a
resume; logs written before it did (each process restarting its clock) are stitched with
the records' wall-clock `time`. --reference adds a measured curve given as NAME=MIN:BLEU,...
(sacreBLEU), e.g. another codebase's run on the same machine.
"""
import argparse
import json
import pathlib

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from transformer_jax.train import metrics_writer


def read_curve(workdir: str, split: str = 'validation'):
  """[(step, minutes, sacrebleu, bleu_tok_lc)] of the evaluations of `split` that decoded
  (logs written before the rename call sacrebleu `bleu`)."""
  records = metrics_writer.read_records(str(pathlib.Path(workdir) / 'metrics.jsonl'))
  # Old logs have `minutes` on evaluations only, counted from each process's start.
  old_style = any('minutes' not in r for r in records)
  points, offset, process = [], 0.0, None      # process: (start, minutes, time) of its last
  for i, record in enumerate(records):         # record with minutes
    if old_style and 'minutes' in record:
      started = record['time'] - 60.0 * record['minutes']
      if process is not None and started > process[0] + 60.0:     # a later process:
        ended = max(r['time'] for r in records[:i] if r['time'] < started)
        offset += process[1] + (ended - process[2]) / 60.0      # add the previous one
      process = (started, record['minutes'], record['time'])
    cased = record.get('sacrebleu', record.get('bleu'))
    if record.get('split') == split and cased is not None:
      points.append((record['step'], offset + record['minutes'], cased, record['bleu_tok_lc']))
  return points


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--split', default='validation')
  parser.add_argument('--out', default='time_to_bleu.png')
  parser.add_argument('--reference', action='append', default=[],
                      help='NAME=MIN:BLEU,MIN:BLEU,... drawn as a dotted sacreBLEU curve')
  args = parser.parse_args()
  figure, axes = plt.subplots(figsize=(6, 4))
  for reference in args.reference:
    name, _, pairs = reference.partition('=')
    points = [tuple(float(v) for v in pair.split(':')) for pair in pairs.split(',')]
    axes.plot(*zip(*points), marker='x', linestyle=':', color='gray', label=f'{name} (sacreBLEU)')
  for workdir in args.workdirs:
    curve = read_curve(workdir, args.split)
    for step, minutes, score, score_lc in curve:
      print(json.dumps({'run': workdir, 'step': step, 'minutes': round(minutes, 2),
                        'sacrebleu': round(score, 2), 'bleu_tok_lc': round(score_lc, 2)}))
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
