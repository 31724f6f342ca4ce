"""A sweep's report: per row, mean +- standard error over seeds, delta vs the baseline, and a
paired significance test against the baseline on the same sentences.

Reads each done member's averaged evaluation (`--mode=eval` writes
`eval/<split>_step<N>_avg<K>_<decoding>.{json,hyp.txt,ref.txt}`) and its metrics.jsonl
(training minutes), and writes `report.csv`, `report.md` and `report.png` in the sweep's folder,
plus `report_<name>.png` for each of the sweep's Curves (curves.py).

Standard error: the sample standard deviation over seeds (n - 1 in the denominator) over
sqrt(n); with one seed there is none. Significance: sacrebleu's paired bootstrap (1,000
resamples; approximate randomization as an option) of a row's hypotheses against the
baseline's on the same references, seeds pooled by concatenating each seed's hypotheses with
the same seed's baseline hypotheses (seeds the baseline lacks are left out of the test).
"""
import csv
import glob
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from transformer_jax.errors import UserError
from transformer_jax.sweep import curves
from transformer_jax.sweep import runner
from transformer_jax.sweep import spec


def mean_and_error(values: Sequence[float]):
  """(mean, standard error) of `values`; the error is None for fewer than two values."""
  values = [v for v in values if v is not None and math.isfinite(v)]
  if not values:
    return None, None
  mean = sum(values) / len(values)
  if len(values) < 2:
    return mean, None
  variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
  return mean, math.sqrt(variance / len(values))


def paired_test(baseline: Sequence[str], system: Sequence[str], references: Sequence[str],
                test_type: str = 'bs', samples: int = 1000) -> float:
  """p-value of `system` against `baseline` (same sentences) for corpus BLEU.

  test_type 'bs' is paired bootstrap resampling (Koehn, 2004), 'ar' approximate randomization
  (Riezler and Maxwell, 2005), both as sacrebleu implements them (seeded, so repeatable).
  """
  from sacrebleu.metrics import BLEU
  from sacrebleu.significance import PairedTest
  if not (len(baseline) == len(system) == len(references)):
    raise UserError(f'paired test needs equal sentence counts, got {len(baseline)}, '
                    f'{len(system)} and {len(references)}: evaluate every member on the same split')
  if list(system) == list(baseline):
    # sacrebleu counts resampled differences strictly above the observed one, so two identical
    # systems (every difference 0) would get p = 1/(n+1); there is no evidence of a difference.
    return 1.0
  test = PairedTest([('baseline', list(baseline)), ('system', list(system))],
                    {'BLEU': BLEU()}, [list(references)], test_type=test_type, n_samples=samples)
  _, scores = test()
  return float(scores['BLEU'][1].p_value)


def _eval_files(folder: str, split: str) -> Optional[str]:
  """The stem of the member's newest complete averaged evaluation of `split`, or None
  (a partial one, `eval.max_batches` > 0, is never reported)."""
  found = sorted((p for p in glob.glob(os.path.join(folder, 'eval', f'{split}_step*_avg*.json'))
                  if '_partial' not in os.path.basename(p)), key=os.path.getmtime)
  return found[-1][:-len('.json')] if found else None


def _read_lines(path: str) -> Optional[List[str]]:
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return [line.rstrip('\n') for line in f]


def _training_log(folder: str) -> Dict[str, Optional[float]]:
  """Training minutes, and the first and last logged gradient norm, from metrics.jsonl."""
  records = []
  path = os.path.join(folder, 'metrics.jsonl')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      for line in f:
        try:
          records.append(json.loads(line))
        except ValueError:                      # a line cut short by a kill
          continue
  minutes = [r['minutes'] for r in records if 'minutes' in r]
  norms = [r['grad_norm'] for r in records if 'grad_norm' in r]
  return {'minutes': minutes[-1] if minutes else None,
          'grad_norm_start': norms[0] if norms else None,
          'grad_norm_end': norms[-1] if norms else None}


def collect(plan: runner.Plan, split: str = 'validation') -> List[Dict[str, Any]]:
  """One record per done member: row, seed, metrics, hypotheses, references, minutes."""
  records = []
  for member in plan.sweep.members():
    if runner.status(plan, member) != 'done':
      continue
    folder = plan.member_dir(member)
    stem = _eval_files(folder, split)
    if stem is None:
      continue
    with open(stem + '.json', encoding='utf-8') as f:
      metrics = json.load(f)
    log = _training_log(folder)
    metrics.update({k: v for k, v in log.items() if k != 'minutes'})
    records.append({'row': member.row.name, 'seed': member.seed, 'metrics': metrics,
                    'hypotheses': _read_lines(stem + '.hyp.txt'),
                    'references': _read_lines(stem + '.ref.txt'),
                    'minutes': log['minutes'], 'stem': stem})
  _share_references(records)
  return records


def _share_references(records) -> None:
  """Members without a ref.txt (restored from an archive, which leaves the data set's
  sentences behind) take the references of the members that have them, when those all agree
  and have as many lines as the member's hypotheses: every member is evaluated on one split."""
  present = [r['references'] for r in records if r['references'] is not None]
  if not present or any(refs != present[0] for refs in present[1:]):
    return
  for record in records:
    if record['references'] is None and len(record['hypotheses'] or ()) == len(present[0]):
      record['references'] = present[0]


def _metric_names(sweep: spec.Sweep, records) -> List[str]:
  present = {k for r in records for k, v in r['metrics'].items() if isinstance(v, (int, float))}
  names = [sweep.metric] + [m for m in (*spec.METRICS, *sweep.extra_metrics) if m != sweep.metric]
  return [m for m in names if m in present]


def _pooled(records, row: str, baseline: str):
  """(baseline hyps, row hyps, references) concatenated over the seeds both have."""
  by_seed = {(r['row'], r['seed']): r for r in records}
  seeds = sorted(s for (name, s) in by_seed if name == row and (baseline, s) in by_seed)
  base, system, refs = [], [], []
  for seed in seeds:
    b, r = by_seed[(baseline, seed)], by_seed[(row, seed)]
    if b['hypotheses'] is None or r['hypotheses'] is None or r['references'] is None:
      return None
    base += b['hypotheses']
    system += r['hypotheses']
    refs += r['references']
  return (base, system, refs) if seeds else None


def summarize(sweep: spec.Sweep, records, test_type: str = 'bs',
              samples: int = 1000) -> List[Dict[str, Any]]:
  """One dict per row that has results: means, errors, seeds, deltas and the p-value."""
  names = _metric_names(sweep, records)
  rows, baseline_means = [], {}
  for row in sweep.rows:
    mine = [r for r in records if r['row'] == row.name]
    if not mine:
      continue
    line = {'row': row.name, 'note': row.note, 'seeds': len(mine),
            'overrides': dict(row.overrides), 'paper': dict(row.paper),
            'params': mine[0]['metrics'].get('num_params'),
            'train_minutes': mean_and_error([r['minutes'] for r in mine])[0]}
    for name in names:
      mean, error = mean_and_error([r['metrics'].get(name) for r in mine])
      line[name], line[name + '_se'] = mean, error
    if row.name == sweep.baseline:
      baseline_means = {n: line[n] for n in names}
    rows.append(line)
  for line in rows:
    for name in names:
      base = baseline_means.get(name)
      line[name + '_delta'] = (None if base is None or line[name] is None
                               else line[name] - base)
    pooled = _pooled(records, line['row'], sweep.baseline) if line['row'] != sweep.baseline else None
    line['p_value'] = paired_test(*pooled, test_type=test_type, samples=samples) if pooled else None
  return rows


def _fmt(value, digits=2) -> str:
  return '' if value is None else f'{value:.{digits}f}'


def _paper_delta(line, baseline_line, key):
  mine, base = line['paper'].get(key), (baseline_line or {}).get('paper', {}).get(key)
  return None if mine is None or base is None else mine - base


def _agreement(line, baseline_line, metric: str) -> str:
  """'yes'/'no' where the paper's BLEU change and ours have the same sign ('' if either is 0)."""
  paper = _paper_delta(line, baseline_line, 'bleu')
  ours = line.get(metric + '_delta')
  if paper is None or ours is None or paper == 0 or ours == 0:
    return ''
  return 'yes' if (paper > 0) == (ours > 0) else 'no'


def to_markdown(sweep: spec.Sweep, rows, header: str) -> str:
  """The report table: one line per row."""
  metric = sweep.metric
  names = [n for n in _metric_names_of(sweep, rows) if n != metric]
  has_paper = any(line['paper'] for line in rows)
  base = next((line for line in rows if line['row'] == sweep.baseline), None)
  columns = ['row', 'change', 'seeds', 'params (M)', 'train min', f'{metric} (mean ± s.e.)',
             f'Δ {metric}', 'p vs baseline'] + [f'{n} (mean ± s.e.)' for n in names]
  if has_paper:
    columns += ['paper Δ BLEU', 'paper Δ ppl', 'same sign as paper']
  lines = [header, '', '| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for line in rows:
    p = line['p_value']
    cells = [line['row'], line['note'] or _describe(line['overrides']), str(line['seeds']),
             _fmt(line['params'] / 1e6 if line['params'] else None),
             _fmt(line['train_minutes'], 1),
             f'{_fmt(line[metric])} ± {_fmt(line[metric + "_se"])}',
             _fmt(line[metric + '_delta']),
             '' if p is None else f'{p:.3f}' + (' *' if p < 0.05 else '')]
    cells += [f'{_fmt(line[n], 3)} ± {_fmt(line[n + "_se"], 3)}' for n in names]
    if has_paper:
      cells += [_fmt(_paper_delta(line, base, 'bleu'), 1), _fmt(_paper_delta(line, base, 'ppl')),
                _agreement(line, base, metric)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines += ['', f'Seeds per row as listed; ± is the standard error over seeds; p is the paired '
            f'bootstrap of corpus BLEU against the baseline row `{sweep.baseline}` on the same '
            'sentences, seeds pooled (* p < 0.05).']
  return '\n'.join(lines) + '\n'


def _metric_names_of(sweep: spec.Sweep, rows) -> List[str]:
  return [k for k in (*spec.METRICS, *sweep.extra_metrics) if rows and k in rows[0]]


def _describe(overrides) -> str:
  return ', '.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items()) or 'baseline'


def write_csv(rows, path: str) -> None:
  keys = [k for k in rows[0] if k not in ('overrides', 'paper')] + ['overrides', 'paper']
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for line in rows:
      writer.writerow({**line, 'overrides': json.dumps(line['overrides']),
                       'paper': json.dumps(line['paper'])})


def plot(sweep: spec.Sweep, rows, path: str, title: str) -> None:
  """Bar chart of the main metric per row with standard-error bars; the baseline as a line."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  metric = sweep.metric
  shown = [line for line in rows if line[metric] is not None]
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(shown) + 2), 4.2))
  xs = range(len(shown))
  colors = ['tab:gray' if line['row'] == sweep.baseline
            else 'tab:blue' if (line['p_value'] is not None and line['p_value'] < 0.05)
            else 'tab:cyan' for line in shown]
  ax.bar(xs, [line[metric] for line in shown], color=colors,
         yerr=[line[metric + '_se'] or 0.0 for line in shown], capsize=3)
  base = next((line[metric] for line in shown if line['row'] == sweep.baseline), None)
  if base is not None:
    ax.axhline(base, color='black', linewidth=1, linestyle='--', label=f'baseline {base:.2f}')
    ax.legend(loc='lower right')
  ax.set_xticks(list(xs))
  ax.set_xticklabels([line['row'] for line in shown], rotation=60, ha='right', fontsize=8)
  ax.set_ylabel(f'{metric} (mean ± s.e. over seeds)')
  ax.set_title(title, fontsize=9)
  low = min(line[metric] - (line[metric + '_se'] or 0) for line in shown)
  high = max(line[metric] + (line[metric + '_se'] or 0) for line in shown)
  ax.set_ylim(max(0.0, low - 0.15 * (high - low + 1e-9)), high + 0.1 * (high - low + 1e-9))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write(plan: runner.Plan, split: str = 'validation', test_type: str = 'bs',
          samples: int = 1000) -> List[Dict[str, Any]]:
  """Collects, summarizes and writes report.{csv,md,png}; returns the rows."""
  records = collect(plan, split)
  if not records:
    raise UserError(f'no finished member of {plan.source} in {plan.workdir} has a {split} '
                    'evaluation yet: run the sweep first')
  rows = summarize(plan.sweep, records, test_type, samples)
  averaged = sorted({r['metrics'].get('checkpoints_averaged', len(r['metrics'].get('checkpoints', [])) or 1)
                     for r in records})
  done = len(records)
  # Rows beside the paper's numbers: say how those were made (Vaswani et al., Table 3: one model).
  paper_note = ("; the paper's Table 3, beside which the rows stand, used none"
                if any(row.paper for row in plan.sweep.rows) else '')
  header = (f'# Sweep {plan.source}: {split}\n\n{done} of {len(plan.sweep.members())} members '
            f'finished; base experiment `{plan.sweep.experiment}`; each result averages the last '
            f'{"/".join(map(str, averaged))} checkpoint(s) (eval.average_last of the base '
            f'experiment{paper_note}).')
  suffix = '' if split == 'validation' else f'_{split}'
  write_csv(rows, os.path.join(plan.workdir, f'report{suffix}.csv'))
  with open(os.path.join(plan.workdir, f'report{suffix}.md'), 'w', encoding='utf-8') as f:
    f.write(to_markdown(plan.sweep, rows, header))
  title = f'{plan.source} ({split}, {done} members)'
  plot(plan.sweep, rows, os.path.join(plan.workdir, f'report{suffix}.png'), title)
  for figure in plan.sweep.curves:
    curves.plot(figure, rows, os.path.join(plan.workdir, f'report{suffix}_{figure.name}.png'),
                f'{title}: mean ± s.e. over seeds')
  return rows
