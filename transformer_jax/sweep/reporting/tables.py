"""How a sweep report is written: the markdown tables, the CSVs (one line per row with each
seed's value; one per comparison), the LaTeX table (booktabs) and the bar chart. The numbers
all come from report.summarize; nothing here computes a statistic.
"""
import csv
import json
from typing import Any, Dict, List, Sequence

from transformer_jax.sweep.reporting import statistics
from transformer_jax.sweep import spec
from transformer_jax.train import validation


def fmt(value, digits=2) -> str:
  return '' if value is None else f'{value:.{digits}f}'


def describe(overrides) -> str:
  return ', '.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items()) or 'baseline'


def _spread(line, metric: str) -> str:
  """'mean ± s.e.', with the pooled seed SD's s.e. in brackets where the row has < 3 seeds."""
  mean, se = line.get(metric), line.get(metric + '_se')
  text = f'{fmt(mean)} ± {fmt(se)}' if se is not None else fmt(mean)
  if line['seeds'] < 3 and line.get(metric + '_pooled_se') is not None:
    text += f' [{fmt(line[metric + "_pooled_se"])}]'
  return text


def rows_markdown(sweep: spec.Sweep, rows, metrics: Sequence[str]) -> List[str]:
  main = metrics[0]
  columns = ['row', 'change', 'seeds', 'params (M)', 'steps', 'tokens (M)', 'TFLOP',
             'train min', f'{main} (mean ± s.e.)', f'{main} per seed', 'still improving'] + \
            [f'{m} (mean ± s.e.)' for m in metrics[1:]]
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for line in rows:
    cells = [line['row'], line['note'] or describe(line['overrides']), str(line['seeds']),
             fmt(line['params'] / 1e6 if line['params'] else None), fmt(line['steps'], 0),
             fmt(line['tokens'] / 1e6 if line['tokens'] else None),
             fmt(line['flops'] / 1e12 if line['flops'] else None, 1),
             fmt(line['train_minutes'], 1), _spread(line, main),
             ' / '.join(fmt(v) for v in line[main + '_seeds']),
             {True: f'yes ({line["improving_curve"]})', False: 'no'}.get(line['still_improving'], '')]
    cells += [_spread(line, m).replace(' ± ', ' ± ') for m in metrics[1:]]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _paper_delta(sweep: spec.Sweep, ref: str, row: str):
  mine, base = sweep.row(row).paper.get('bleu'), sweep.row(ref).paper.get('bleu')
  return None if mine is None or base is None else mine - base


def _agreement(paper, ours) -> str:
  if paper is None or ours is None or paper == 0 or ours == 0:
    return ''
  return 'yes' if (paper > 0) == (ours > 0) else 'no'


def improvement(metric: str, delta: float) -> float:
  """`delta` signed so that positive means better: a fall in loss or perplexity is a gain, as a
  rise in BLEU is, so that its sign compares with the paper's Δ BLEU."""
  return -delta if validation.BEST_MODES.get(metric) == 'min' else delta


def comparisons_markdown(sweep: spec.Sweep, comparisons, metric: str, samples: int) -> List[str]:
  has_paper = any(r.paper for r in sweep.rows)
  columns = ['reference → row', f'Δ {metric}', '95% CI', 'p (seeds + sentences)', 'p Holm',
             'Welch p (seeds)', 'perm. p (seeds; min)', 'p sentences only', 'seeds for 80% power']
  if has_paper:
    columns += ['paper Δ BLEU', 'same sign as paper']
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for comparison in comparisons:
    result = comparison['results'].get(metric)
    if not result:
      continue
    mark = ' *' if result['significant'] else ''
    perm = '' if result['perm_p'] is None else f'{result["perm_p"]:.3f} ({result["perm_min_p"]:.2f})'
    noisy = ' ‡' if result.get('seed_sd_above_pool') else ''
    cells = [f'{comparison["ref"]} → {comparison["row"]}{comparison["mixed_mark"]}{noisy}',
             f'{result["delta"]:+.2f}', f'[{result["ci_low"]:+.2f}, {result["ci_high"]:+.2f}]',
             statistics.format_p(result['p'] if not result['p_at_floor'] else 0.0, samples),
             statistics.format_p(result['p_holm']) + mark,
             statistics.format_p(result['welch_p']), perm,
             statistics.format_p(result['sentence_p']),
             _seeds_needed(result)]
    if has_paper:
      paper = _paper_delta(sweep, comparison['ref'], comparison['row'])
      cells += [fmt(paper, 1), _agreement(paper, improvement(metric, result['delta']))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _seeds_needed(result) -> str:
  needed = result['seeds_80']
  if needed is None:
    return 'not reachable (the test set\'s own noise hides this Δ)'
  return f'{needed}' + (' (underpowered)' if result['underpowered'] else '')


def write_rows_csv(rows, metrics: Sequence[str], path: str) -> None:
  """One line per row: means, errors, each seed's value (a JSON list) and the settings."""
  keys = ['row', 'note', 'seeds', 'members', 'params', 'steps', 'tokens', 'flops',
          'train_minutes', 'still_improving', 'provenance']
  for m in metrics:
    keys += [m, m + '_se', m + '_sd', m + '_pooled_se', m + '_seeds']
  keys += ['overrides', 'paper']
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=keys, extrasaction='ignore')
    writer.writeheader()
    for line in rows:
      out = {k: line.get(k) for k in keys}
      for name in ('overrides', 'paper', 'members', 'provenance') + tuple(m + '_seeds' for m in metrics):
        out[name] = json.dumps(line.get(name))
      writer.writerow(out)


COMPARISON_KEYS = ('delta', 'ci_low', 'ci_high', 'p', 'p_at_floor', 'p_holm', 'significant',
                   'welch_p', 'welch_df', 'perm_p', 'perm_min_p', 'sentence_p', 'seed_source',
                   'seed_sd_above_pool',
                   'pooled_sd', 'sentence_var', 'seeds_80', 'underpowered', 'n_ref', 'n_row',
                   'samples')


def write_comparisons_csv(comparisons, path: str) -> None:
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(['ref', 'row', 'metric', 'mixed_provenance', *COMPARISON_KEYS])
    for comparison in comparisons:
      for metric, result in comparison['results'].items():
        if result:
          writer.writerow([comparison['ref'], comparison['row'], metric,
                           bool(comparison['mixed_mark']),
                           *[result.get(k) for k in COMPARISON_KEYS]])


def _tex(text: str) -> str:
  for old, new in (('\\', r'\textbackslash{}'), ('_', r'\_'), ('%', r'\%'), ('&', r'\&'),
                   ('#', r'\#'), ('±', r'$\pm$'), ('→', r'$\to$'), ('Δ', r'$\Delta$')):
    text = text.replace(old, new)
  return text


def to_tex(sweep: spec.Sweep, rows, comparisons, metric: str, samples: int, caption: str) -> str:
  """A booktabs table: one line per row, with its comparison against the baseline."""
  against = {c['row']: c['results'].get(metric) for c in comparisons if c['ref'] == sweep.baseline}
  head = ['row', 'seeds', f'{metric}', r'$\Delta$', '95% CI', r'$p_\mathrm{Holm}$']
  lines = [r'\begin{table}[t]', r'\centering', r'\begin{tabular}{lrrrrr}', r'\toprule',
           ' & '.join(_tex(h) if '$' not in h else h for h in head) + r' \\', r'\midrule']
  for line in rows:
    result = against.get(line['row'])
    cells = [_tex(line['row']), str(line['seeds']), _tex(_spread(line, metric))]
    if result:
      cells += [f'{result["delta"]:+.2f}', f'[{result["ci_low"]:+.2f}, {result["ci_high"]:+.2f}]',
                _tex(statistics.format_p(result['p_holm'])) + ('$^*$' if result['significant'] else '')]
    else:
      cells += ['', '', '']
    lines.append(' & '.join(cells) + r' \\')
  lines += [r'\bottomrule', r'\end{tabular}', r'\caption{' + _tex(caption) + '}', r'\end{table}']
  return '\n'.join(lines) + '\n'


def plot(sweep: spec.Sweep, rows, significant: Dict[str, bool], metric: str, path: str,
         title: str) -> None:
  """Bar chart of the main metric per row with standard-error bars; the baseline as a line;
  rows significantly different from it (Holm) in dark blue."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  shown = [line for line in rows if line.get(metric) is not None]
  if not shown:
    return
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(shown) + 2), 4.2))
  xs = range(len(shown))
  colors = ['tab:gray' if line['row'] == sweep.baseline
            else 'tab:blue' if significant.get(line['row']) else 'tab:cyan' for line in shown]
  errors = [line.get(metric + '_se') or line.get(metric + '_pooled_se') or 0.0 for line in shown]
  ax.bar(xs, [line[metric] for line in shown], color=colors, yerr=errors, capsize=3)
  base = next((line[metric] for line in shown if line['row'] == sweep.baseline), None)
  if base is not None:
    ax.axhline(base, color='black', linewidth=1, linestyle='--', label=f'baseline {base:.2f}')
    ax.legend(loc='lower right')
  ax.set_xticks(list(xs))
  ax.set_xticklabels([line['row'] for line in shown], rotation=60, ha='right', fontsize=8)
  ax.set_ylabel(f'{metric} (mean ± s.e. over seeds)')
  ax.set_title(title, fontsize=9)
  low = min(line[metric] - e for line, e in zip(shown, errors))
  high = max(line[metric] + e for line, e in zip(shown, errors))
  ax.set_ylim(max(0.0, low - 0.15 * (high - low + 1e-9)), high + 0.1 * (high - low + 1e-9))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
