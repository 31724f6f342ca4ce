"""How long a sweep report takes: reading the members, the per-sentence BLEU statistics and the
two-level bootstrap of every comparison and metric, as JSON.

  python -m benchmarks.sweep_report_speed                      # the table3 mini archive
  python -m benchmarks.sweep_report_speed --sweep=experiments/ablations/seed_claims.py:mini \
      --workdir=docs/ablations/seed_claims_mini --resamples=2000

Nothing is written: the report's files stay as they are. Measured on the 2-core CPU (Intel Xeon,
AVX-512), 2026-12-07, beside a sweep training on both cores: table3 mini (39 members, 18
comparisons, 6 metrics, 10,000 resamples) 70 s in all: 0.3 s reading the members, the rest the
BLEU statistics (Moses preprocessing of every hypothesis) and the comparisons.
"""
import argparse
import json
import os
import time

from transformer_jax.sweep import loading
from transformer_jax.sweep.reporting import records as records_lib
from transformer_jax.sweep.reporting import report
from transformer_jax.sweep import runner


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sweep', default='experiments/ablations/table3.py:mini')
  parser.add_argument('--workdir', default='docs/ablations/table3_mini')
  parser.add_argument('--resamples', type=int, default=10000)
  args = parser.parse_args()
  sweep = loading.load(args.sweep)
  plan = runner.Plan(sweep, args.sweep, os.path.abspath(args.workdir), ('python', 'launch.py'))
  began = time.perf_counter()
  records = records_lib.collect(plan)
  collected = time.perf_counter()
  rows, comparisons, metrics = report.summarize(sweep, records, args.resamples)
  done = time.perf_counter()
  print(json.dumps({'sweep': args.sweep, 'members': len(records), 'rows': len(rows),
                    'comparisons': len(comparisons), 'metrics': len(metrics),
                    'resamples': args.resamples, 'collect_s': round(collected - began, 2),
                    'statistics_s': round(done - collected, 2),
                    'total_s': round(done - began, 2)}))


if __name__ == '__main__':
  main()
