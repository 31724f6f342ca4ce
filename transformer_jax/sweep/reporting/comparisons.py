"""The tests of a sweep's report: each comparison (a reference row, a row) on each reported
metric, with both sources of variance counted (statistics.py).

Per comparison and metric:
  delta           mean over the row's seeds minus mean over the reference's seeds (every seed).
  ci_low/ci_high  the 95% interval of the two-level bootstrap (seeds, then sentences).
  p               its two-sided p-value; p_holm is Holm-adjusted over all the sweep's
                  comparisons of that metric, and the significance mark is on p_holm.
  welch_p, perm_p seed-level tests (they ignore the test set's sampling).
  sentence_p      sacrebleu's paired test on cased BLEU with the seeds concatenated (main
                  metric only; it ignores training randomness: for reference, not decisions).
  seeds_80        seeds per arm for 80% power at the observed delta, the pooled seed SD and
                  the sentence-level variance of the delta; `underpowered` when the arms have
                  fewer seeds than that.
Corpus BLEU metrics resample sentences through their sufficient statistics; other metrics
(loss, perplexity, accuracy) have no per-sentence record and are resampled over seeds only.

Seed offsets come from the arms' own seeds when both have at least OWN_SEEDS_MIN, otherwise
from the sweep's pooled residuals (all rows with 2 or more seeds): 2-3 seeds cannot estimate
a variance on their own (tests/sweep/sweep_statistics_test.py: calibration). The pool assumes the
rows share one seed variance; an arm whose own seeds spread more than that allows (one-sided
chi-square test, `_above_pool`) makes its comparisons use the arms' own seeds instead, with
their few degrees of freedom (`seed_sd_above_pool` in the results, ‡ in the report).
"""
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import scipy.stats

from transformer_jax.sweep.reporting import statistics

OWN_SEEDS_MIN = 5
ALPHA = 0.05
HETEROGENEITY_ALPHA = 0.05


def metric_stats(records: Sequence[Dict[str, Any]], metric: str,
                 lang: str) -> Optional[np.ndarray]:
  """[seeds, N, K] per-sentence statistics of `metric` for one arm's records, or [seeds, 1, 2]
  (the value and a weight of 1) when it has no per-sentence form; None if a value is missing."""
  if metric in statistics.BLEU_KINDS and all(r['hypotheses'] and r['references'] for r in records):
    lengths = {len(r['hypotheses']) for r in records}
    if len(lengths) == 1:
      return np.stack([_cached_stats(r, metric, lang) for r in records])
  values = [r['metrics'].get(metric) for r in records]
  if any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
    return None
  return np.stack([statistics.mean_stats([v]) for v in values])


def _cached_stats(record, metric: str, lang: str) -> np.ndarray:
  cache = record.setdefault('_stats', {})
  if metric not in cache:
    cache[metric] = statistics.bleu_stats(record['hypotheses'], record['references'], metric,
                                          lang=lang)
  return cache[metric]


def _corpus_fn(metric: str, stats: np.ndarray):
  if stats.shape[-1] == 2:
    return statistics.corpus_mean
  return statistics.METRIC_FNS[metric]


def pooled(values_by_row: Dict[str, Sequence[float]]):
  """(residuals, df, pooled SD) of one metric over the rows with two or more seeds, or
  (None, 0, None) when no row has two."""
  groups = [np.asarray(v, float) for v in values_by_row.values() if len(v) >= 2]
  if not groups:
    return None, 0, None
  return statistics.pooled_residuals(groups)


def compare(ref: List[Dict], row: List[Dict], metric: str, *, lang: str, pool, samples: int,
            main: bool) -> Optional[Dict[str, Any]]:
  """All tests of one comparison on one metric (see the module docstring); None when either
  arm lacks the metric."""
  stats_a, stats_b = metric_stats(ref, metric, lang), metric_stats(row, metric, lang)
  if stats_a is None or stats_b is None or stats_a.shape[1:] != stats_b.shape[1:]:
    return None
  out = compare_stats(stats_a, stats_b, _corpus_fn(metric, stats_a), pool, samples)
  if out is None:
    return None
  out['metric'] = metric
  if main and stats_a.shape[-1] == 10:
    out['sentence_p'] = _sentence_only(ref, row)
  return out


def compare_stats(stats_a: np.ndarray, stats_b: np.ndarray, corpus_fn, pool,
                  samples: int) -> Optional[Dict[str, Any]]:
  """The tests of `compare` on [seeds, N, K] statistics of the two arms (the reference
  first); `pool` is `pooled`'s (residuals, df, SD). None when neither the arms nor the pool
  can give a seed variance."""
  residuals, df, pooled_sd = pool
  n_ref, n_row = len(stats_a), len(stats_b)
  scores_a = [float(corpus_fn(s.sum(0))) for s in stats_a]
  scores_b = [float(corpus_fn(s.sum(0))) for s in stats_b]
  noisier = [_above_pool(scores, pooled_sd) for scores in (scores_a, scores_b)]
  own = min(n_ref, n_row) >= OWN_SEEDS_MIN or (any(noisier) and min(n_ref, n_row) >= 2)
  if not own and residuals is None:
    return None
  boot = statistics.two_level_bootstrap(
      stats_a, stats_b, corpus_fn, residual_pool=None if own else residuals,
      pool_df=None if own else df, samples=samples)
  out = {**boot, **statistics.seed_level_tests(scores_a, scores_b), 'n_ref': n_ref,
         'n_row': n_row, 'pooled_sd': pooled_sd, 'sentence_p': None,
         'seed_sd_above_pool': any(noisier)}
  out['sentence_var'] = _sentence_variance(stats_a, stats_b, corpus_fn)
  out['seeds_80'] = (statistics.seeds_for_power(boot['delta'], pooled_sd, out['sentence_var'])
                     if pooled_sd else None)
  out['underpowered'] = out['seeds_80'] is None or out['seeds_80'] > min(n_ref, n_row)
  return out


def _above_pool(scores: Sequence[float], pooled_sd: Optional[float]) -> bool:
  """Whether an arm's own seeds vary more than the sweep's pooled SD allows (one-sided
  chi-square test of its variance at HETEROGENEITY_ALPHA): its comparisons then use the arms'
  own seeds, wider and with few degrees of freedom, instead of the pool."""
  if pooled_sd is None or pooled_sd <= 0 or len(scores) < 2:
    return False
  values = np.asarray(scores, float)
  statistic = np.sum((values - values.mean()) ** 2) / pooled_sd ** 2
  return bool(scipy.stats.chi2.sf(statistic, len(values) - 1) < HETEROGENEITY_ALPHA)


def _sentence_variance(stats_a, stats_b, corpus_fn, samples: int = 400) -> float:
  """Variance of the delta of seed means from resampling sentences only (seeds fixed)."""
  if stats_a.shape[1] < 2:
    return 0.0
  rng = np.random.default_rng(1)
  n = stats_a.shape[1]
  weights = rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(float)
  a = corpus_fn(np.einsum('bn,snk->bsk', weights, stats_a)).mean(axis=1)
  b = corpus_fn(np.einsum('bn,snk->bsk', weights, stats_b)).mean(axis=1)
  return float(np.var(b - a, ddof=1))


def _sentence_only(ref: List[Dict], row: List[Dict]) -> Optional[float]:
  """sacrebleu's paired bootstrap with every seed of each arm concatenated, pairing the i-th
  seed of the row with the i-th of the reference (cycling the shorter arm)."""
  count = max(len(ref), len(row))
  base, system, refs = [], [], []
  for i in range(count):
    a, b = ref[i % len(ref)], row[i % len(row)]
    base += a['hypotheses']
    system += b['hypotheses']
    refs += b['references']
  return statistics.sentence_paired_test(base, system, refs)


def adjust(results: List[Optional[Dict[str, Any]]]) -> None:
  """Adds p_holm (Holm over these comparisons of one metric) and `significant` to each."""
  adjusted = statistics.holm([r['p'] if r else None for r in results])
  for result, p_holm in zip(results, adjusted):
    if result:
      result['p_holm'] = p_holm
      result['significant'] = p_holm is not None and p_holm < ALPHA
