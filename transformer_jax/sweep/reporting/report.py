"""A sweep's report: per row, mean ± standard error over seeds (each seed's value beside it);
per comparison (every row against the baseline, and the sweep's `compare` pairs), the
difference with a 95% interval and p-values that count training seeds and test sentences
(comparisons.py, statistics.py), Holm-adjusted over the sweep; the budget each row used and
whether it was still improving (learning.py); the provenance of every member (provenance.py).

Reads each done member's averaged evaluation (`--mode=eval` writes
`eval/<split>_step<N>_avg<K>_<decoding>[_partial..]_<digest>.{json,hyp.txt,ref.txt}`), its
metrics.jsonl and its provenance.json (records.py), and writes in the sweep's folder:
  report.md / report.tex     the tables (markdown; LaTeX booktabs)
  report.csv                 one line per row, each seed's value included
  report_comparisons.csv     one line per comparison and metric, every test
  report.png                 the main metric per row; report_curves.png the learning curves;
                             report_<name>.png for each of the sweep's Curves (curves.py)

Members that ran with other code or library versions are not pooled in a row or a
comparison (UserError, exit 2) unless --sweep_allow_mixed, which marks them (†).
"""
import json
import math
import os
from typing import Any, Dict, List, Sequence

from absl import logging

from transformer_jax.base.errors import UserError
from transformer_jax.base import paths
from transformer_jax.sweep import provenance
from transformer_jax.sweep.reporting import comparisons as comparisons_lib
from transformer_jax.sweep.reporting import curves
from transformer_jax.sweep.reporting import learning
from transformer_jax.sweep.reporting import records as records_lib
from transformer_jax.sweep.reporting import tables
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


def _metric_names(sweep: spec.Sweep, records) -> List[str]:
  present = {k for r in records for k, v in r['metrics'].items() if isinstance(v, (int, float))}
  names = [sweep.metric] + [m for m in (*spec.METRICS, *sweep.extra_metrics) if m != sweep.metric]
  return [m for m in names if m in present]


def _row_line(sweep, name: str, mine, metrics, pools) -> Dict[str, Any]:
  row = sweep.row(name) if name in {r.name for r in sweep.rows} else spec.Row(name)
  params = mine[0]['metrics'].get('num_params')
  tokens = mean_and_error([r['log']['tokens'] for r in mine])[0]
  improving = [learning.still_improving(r['log']) for r in mine]
  judged = [v for v, _ in improving if v is not None]
  line = {'row': name, 'note': row.note, 'seeds': len(mine), 'overrides': dict(row.overrides),
          'paper': dict(row.paper), 'params': params, 'members': [r['member'] for r in mine],
          'steps': mean_and_error([r['log']['steps'] for r in mine])[0], 'tokens': tokens,
          'flops': learning.flops(params, tokens),
          'train_minutes': mean_and_error([r['minutes'] for r in mine])[0],
          'still_improving': (sum(judged) * 2 > len(judged)) if judged else None,
          'improving_curve': next((c for v, c in improving if c), ''),
          'provenance': sorted({provenance.label(r['provenance']) if r['provenance'] else
                                'not recorded' for r in mine})}
  for metric in metrics:
    values = [r['metrics'].get(metric) for r in mine]
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    mean, error = mean_and_error(values)
    sd = error * math.sqrt(len(values)) if error is not None else None
    pooled_sd = pools[metric][2]
    line.update({metric: mean, metric + '_se': error, metric + '_sd': sd,
                 metric + '_seeds': values,
                 metric + '_pooled_se': pooled_sd / math.sqrt(len(values))
                 if pooled_sd and values else None})
  return line


def select_tuned(row: spec.Row, records: List[Dict]):
  """(the records of the tuning setting with the lowest mean validation loss, a note saying
  which was kept out of how many); settings with a missing loss are not chosen."""
  settings = row.tune_settings()
  by_tune: Dict[int, List[float]] = {}
  for record in records:
    loss = record['metrics'].get('loss')
    if isinstance(loss, (int, float)) and math.isfinite(loss):
      by_tune.setdefault(record['tune'], []).append(loss)
  if not by_tune:
    return records, 'tuning grid: no validation loss to choose by'
  best = min(by_tune, key=lambda k: sum(by_tune[k]) / len(by_tune[k]))
  chosen = ', '.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in settings[best].items())
  return ([r for r in records if r['tune'] == best],
          f'tuned: {chosen} (lowest mean validation loss of {len(settings)} settings; '
          'chosen on the split it is reported on)')


def _identity_key(record) -> str:
  return json.dumps(provenance.identity(record['provenance']), sort_keys=True)


def check_provenance(groups: Dict[str, List[Dict]], pairs, allow_mixed: bool) -> Dict[tuple, str]:
  """Refuses to pool members of one row, or of a row and its reference, that ran with other
  code or libraries (unless allow_mixed); returns {pair: '†'} for the mixed pairs allowed."""
  marks = {}
  for ref, row in [(name, name) for name in groups] + list(pairs):
    members = groups.get(ref, []) + (groups.get(row, []) if row != ref else [])
    keys = {_identity_key(r) for r in members}
    if len(keys) < 2:
      continue
    first = members[0]
    other = next(r for r in members if _identity_key(r) != _identity_key(first))
    what = f'row {row!r}' if ref == row else f'rows {ref!r} and {row!r}'
    if not allow_mixed:
      differences = provenance.differences(first['provenance'], other['provenance']) or \
          ['provenance recorded for one, not the other']
      raise UserError(f'{what} pool members that ran with other code or libraries '
                      f'({first["member"]} vs {other["member"]}: {"; ".join(differences)}): '
                      're-run them with one version (--sweep_rerun), or give '
                      '--sweep_allow_mixed to report them marked')
    marks[(ref, row)] = '†'
  return marks


def summarize(sweep: spec.Sweep, records, samples: int = 10000, allow_mixed: bool = False,
              lang: str = 'de'):
  """(rows, comparisons, metrics): one dict per row with results, one per comparison with
  {metric: test results} (comparisons.py), and the metrics reported, main first."""
  metrics = _metric_names(sweep, records)
  groups: Dict[str, List[Dict]] = {}
  for record in records:
    groups.setdefault(record['row'], []).append(record)
  tuned = {name: select_tuned(sweep.row(name), group) for name, group in groups.items()
           if name in {r.name for r in sweep.rows} and sweep.row(name).tune}
  for name, (kept, _) in tuned.items():
    groups[name] = kept
  order = [r.name for r in sweep.rows if r.name in groups] + \
      [name for name in groups if name not in {r.name for r in sweep.rows}]
  pairs = [(a, b) for a, b in sweep.comparisons() + [(sweep.baseline, n) for n in order
                                                     if n not in {r.name for r in sweep.rows}]
           if a in groups and b in groups]
  marks = check_provenance(groups, pairs, allow_mixed)
  pools = {m: comparisons_lib.pooled({n: [r['metrics'][m] for r in groups[n]
                                          if isinstance(r['metrics'].get(m), (int, float))]
                                      for n in order}) for m in metrics}
  rows = [_row_line(sweep, name, groups[name], metrics, pools) for name in order]
  for line in rows:
    if line['row'] in tuned:
      line['note'] = f'{line["note"] or tables.describe(line["overrides"])}; {tuned[line["row"]][1]}'

  comparisons = [{'ref': a, 'row': b, 'mixed_mark': marks.get((a, b), ''), 'results': {}}
                 for a, b in pairs]
  for metric in metrics:
    results = [comparisons_lib.compare(groups[c['ref']], groups[c['row']], metric, lang=lang,
                                       pool=pools[metric], samples=samples,
                                       main=metric == sweep.metric) for c in comparisons]
    comparisons_lib.adjust(results)
    for comparison, result in zip(comparisons, results):
      comparison['results'][metric] = result
  return rows, comparisons, metrics


def _provenance_lines(records) -> List[str]:
  groups: Dict[str, List[str]] = {}
  for record in records:
    label = provenance.label(record['provenance']) if record['provenance'] else \
        'not recorded (the member predates provenance.json)'
    groups.setdefault(label, []).append(record['member'])
  lines = ['| code and libraries | members |', '|---|---|']
  for label, members in groups.items():
    lines.append(f'| {label} | {len(members)}: {", ".join(sorted(members))} |')
  machines = sorted({r['provenance']['machine'].get('cpu_model', '?') for r in records
                     if r['provenance'] and r['provenance'].get('machine')})
  if machines:
    lines += ['', 'Machines: ' + '; '.join(machines) + '.']
  return lines


def _underpowered_lines(comparisons, metric: str, source: str, workdir: str) -> List[str]:
  short = [(c, c['results'][metric]) for c in comparisons if c['results'].get(metric)
           and c['results'][metric]['underpowered']]
  if not any(c['results'].get(metric) for c in comparisons):
    return ['No comparison yet: the report compares rows once both have finished members.']
  if not short:
    return ['Every comparison has the seeds it needs for 80% power at its observed Δ.']
  text = ', '.join(f'{c["row"]} ({r["seeds_80"] if r["seeds_80"] else "not reachable"})'
                   for c, r in short)
  return [f'Underpowered at the observed Δ (seeds per arm needed for 80% power): {text}. '
          f'To add seeds, give the rows more `seeds` in the sweep file and list the new '
          f'members with `python launch.py --sweep={source} --workdir={paths.shown(workdir)} '
          '--sweep_list` '
          '(status pending). "Not reachable": the sentence-level noise of this test set alone '
          'keeps the power below 80% at this Δ, however many seeds; a larger test set would be '
          'needed.']


def write(plan: runner.Plan, split: str = 'validation', samples: int = 10000,
          also: Sequence[str] = ()):
  """Collects, summarizes and writes the report files; returns the rows."""
  if samples < 100:
    raise UserError(f'--sweep_resamples={samples} is too few for a 95% interval: give 1000 or '
                    'more (default 10000)')
  damaged: List[str] = []
  records = records_lib.collect(plan, split, also, damaged)
  for line in damaged:
    logging.warning('sweep report: member %s is damaged and left out', line)
  if not records:
    raise UserError(f'no finished member of {plan.source} in {plan.workdir} has a {split} '
                    'evaluation yet: run the sweep first')
  lang = records_lib.member_data_config(records[0]['folder']).get('target_lang', 'de')
  rows, comparisons, metrics = summarize(plan.sweep, records, samples, plan.allow_mixed, lang)
  metric = metrics[0]
  averaged = sorted({r['metrics'].get('checkpoints_averaged',
                                      len(r['metrics'].get('checkpoints', [])) or 1) for r in records})
  header = [f'# Sweep {plan.source}: {split}', '',
            f'{len(records)} of {len(plan.sweep.members())} members finished'
            + (f' (with {", ".join(also)})' if also else '') +
            f'; base experiment `{plan.sweep.experiment}`; budget: {plan.sweep.budget.describe()}'
            f'; each result averages the last {"/".join(map(str, averaged))} checkpoint(s).']
  if damaged:
    header += ['', f'**Left out, damaged**: {"; ".join(damaged)}.']
  partial = sorted(r['member'] for r in records if r['partial'])
  if partial:
    header += ['', f'Partial evaluations (eval.max_batches > 0: part of the split) for '
               f'{len(partial)} member(s): {", ".join(partial)}.']
  if plan.sweep.note:
    header += ['', plan.sweep.note]
  p_note = (f'Δ is the row\'s mean over its seeds minus the reference\'s (every seed of both). '
            f'CI and p: two-level bootstrap ({samples} resamples: seeds within each arm, then '
            'sentences with the same indices in both arms) on the same metric as Δ; seed '
            f'offsets from the sweep\'s pooled seed SD unless both arms have '
            f'{comparisons_lib.OWN_SEEDS_MIN}+ seeds. * marks Holm-adjusted p < 0.05 over the '
            'sweep\'s comparisons of this metric. Welch and the exact permutation test use the '
            'seed means only (they ignore the test set\'s sampling; with 2-3 seeds the '
            'permutation test cannot go below its minimum p in brackets). "p sentences only" '
            'is sacrebleu\'s paired bootstrap on cased BLEU with the seeds concatenated: it '
            'ignores training randomness and is shown for reference only. ‡: an arm\'s seeds '
            'spread more than the pooled SD allows (chi-square, 5%), so this comparison uses '
            'the arms\' own seeds. † marks members with mixed provenance (--sweep_allow_mixed). '
            '"Same sign as paper" reads a fall in loss or perplexity as a gain, like a rise in BLEU.')
  text = header + ['', '## Rows', ''] + tables.rows_markdown(plan.sweep, rows, metrics) + [
      '', f'± is the standard error over seeds; [x] the standard error from the sweep\'s pooled '
      f'seed SD, for rows with fewer than 3 seeds. "Still improving": {learning.RULE}.',
      '', f'## Comparisons: {metric}', ''] + \
      tables.comparisons_markdown(plan.sweep, comparisons, metric, samples) + ['', p_note, ''] + \
      _underpowered_lines(comparisons, metric, plan.source, plan.workdir)
  for other in metrics[1:]:
    text += ['', f'## Comparisons: {other}', ''] + \
        tables.comparisons_markdown(plan.sweep, comparisons, other, samples)
  text += ['', '## Provenance', ''] + _provenance_lines(records)
  suffix = '' if split == 'validation' else f'_{split}'
  out = lambda name: os.path.join(plan.workdir, f'report{suffix}{name}')
  with open(out('.md'), 'w', encoding='utf-8') as f:
    f.write('\n'.join(text) + '\n')
  tables.write_rows_csv(rows, metrics, out('.csv'))
  tables.write_comparisons_csv(comparisons, out('_comparisons.csv'))
  title = f'{plan.source} ({split}, {len(records)} members)'
  with open(out('.tex'), 'w', encoding='utf-8') as f:
    f.write(tables.to_tex(plan.sweep, rows, comparisons, metric, samples, title))
  significant = {c['row']: bool(c['results'].get(metric) and c['results'][metric]['significant'])
                 for c in comparisons if c['ref'] == plan.sweep.baseline}
  tables.plot(plan.sweep, rows, significant, metric, out('.png'), title)
  logs = {}
  for record in records:
    logs.setdefault(record['row'], []).append(record['log'])
  learning.plot(logs, out('_curves.png'), f'{title}: learning curves',
                {line['row']: line['still_improving'] for line in rows})
  for figure in plan.sweep.curves:
    curves.plot(figure, rows, out(f'_{figure.name}.png'), f'{title}: mean ± s.e. over seeds')
  return rows
