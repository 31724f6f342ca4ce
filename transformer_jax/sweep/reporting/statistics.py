"""Significance and power for a sweep: rows trained with several seeds, on the same sentences.

A row's score varies with its training seed and with the test sentences, and a comparison
of two rows must count both: `two_level_bootstrap` resamples the test sentences (the same
draw for both arms and all their seeds) and adds seed offsets drawn from the seeds'
residuals (each arm's own, or `pooled_residuals` of the whole sweep), with two corrections
its docstring explains (few seeds; a seed's sentence luck counted twice). Corpus metrics are
recomputed from per-sentence sufficient statistics (`bleu_stats`, `mean_stats`).

The other tests each ignore one source: `sentence_paired_test` (sacrebleu's paired
bootstrap or approximate randomisation) ignores training randomness, so its p-values are far
too small when seeds disagree; `seed_level_tests` (Welch, exact permutation) ignore the test
sentences' sampling and with 2-3 seeds have few degrees of freedom or permutations.

Calibration (tests/sweep/sweep_statistics_test.py; 5 simulation seeds of 2000 null sweeps): 10
rows, baseline 3 seeds and the others 2, 150 sentences, seed SD 0.1 plus 0.08 of sentence
luck per seed, pooled residuals. At 0.05 the two-level test rejects 0.043-0.059, the old test
(seeds concatenated, sentences resampled) 0.20-0.22; 95% intervals cover 0.94-0.96; a delta
of two seed SDs with 5 seeds an arm is found 0.73-0.79 of the time (a t test on the seed
scores: 0.73). Per-seed metrics without sentences (N = 1) reject 0.050 pooled, 0.053 own.
"""
import itertools
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.stats

from transformer_jax.base.errors import UserError

BLEU_KINDS = ('sacrebleu', 'bleu_tok_lc')
_SMOOTH = {'sacrebleu': 'exp', 'bleu_tok_lc': 'none'}
_MAX_PERMUTATIONS = 20000


def bleu_stats(hypotheses: Sequence[str], references: Sequence[str], kind: str,
               lang: str = 'de') -> np.ndarray:
  """Per-sentence BLEU statistics [N, 10] as sacrebleu extracts them for its own tests.

  Columns: hyp_len, ref_len, correct 1..4-grams, total 1..4-grams (float64). kind
  'sacrebleu' is sacrebleu's default BLEU (cased, 13a, exp smoothing) on the raw strings;
  'bleu_tok_lc' is `transformer_jax.evaluation.bleu.bleu_tok_lc`: `moses_preprocess(text, lang)` on
  both sides, then tokenize 'none' and no smoothing.
  """
  from sacrebleu.metrics import BLEU
  if kind not in BLEU_KINDS:
    raise UserError(f'unknown BLEU kind {kind!r}: use one of {list(BLEU_KINDS)}')
  if len(hypotheses) != len(references):
    raise UserError(f'{len(hypotheses)} hypotheses but {len(references)} references: '
                    'score every hypothesis against its own reference')
  hyps, refs, metric = list(hypotheses), list(references), BLEU()
  if kind == 'bleu_tok_lc':
    from transformer_jax.evaluation.bleu import moses_preprocess
    hyps = [moses_preprocess(h, lang) for h in hyps]
    refs = [moses_preprocess(r, lang) for r in refs]
    metric = BLEU(tokenize='none', smooth_method='none', force=True)
  if not hyps:
    return np.zeros((0, 10))
  return np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=np.float64)


def corpus_bleu(summed: np.ndarray, smooth: str) -> np.ndarray:
  """Corpus BLEU in [0, 100] from summed `bleu_stats` [..., 10], as sacrebleu computes it.

  Leading axes are kept. smooth 'exp' (sacrebleu's default: the k-th order without a match
  has precision 100 / (2**k * total)) or 'none' (an order without a match makes BLEU 0).
  """
  if smooth not in ('exp', 'none'):
    raise UserError(f'unknown BLEU smoothing {smooth!r}: use exp or none')
  summed = np.asarray(summed, dtype=np.float64)
  sys_len, ref_len = summed[..., 0], summed[..., 1]
  correct, total = summed[..., 2:6], summed[..., 6:10]
  with np.errstate(divide='ignore', invalid='ignore'):
    bp = np.where(sys_len < ref_len,
                  np.where(sys_len > 0, np.exp(1 - ref_len / sys_len), 0.0), 1.0)
    zero = correct == 0
    missed = (100.0 / (2.0 ** np.cumsum(zero, axis=-1) * total) if smooth == 'exp'
              else np.zeros_like(total))
    precisions = np.where(zero, missed, 100.0 * correct / total)
    valid = (total > 0).all(-1) & (correct > 0).any(-1) & (precisions > 0).all(-1)
    logs = np.log(np.where(valid[..., None], precisions, 1.0))
    return np.where(valid, bp * np.exp(logs.sum(-1) / 4), 0.0)


def mean_stats(values: Sequence[float]) -> np.ndarray:
  """[N, 2] statistics (value, 1) of a per-sentence metric whose corpus score is the mean."""
  values = np.asarray(values, dtype=np.float64)
  if values.ndim != 1 or not np.isfinite(values).all():
    raise UserError('per-sentence values must be one finite number per sentence: '
                    'drop or fix the NaN/inf entries')
  return np.stack([values, np.ones_like(values)], axis=-1)


def corpus_mean(summed: np.ndarray) -> np.ndarray:
  """The mean from summed `mean_stats` [..., 2]."""
  summed = np.asarray(summed, dtype=np.float64)
  return summed[..., 0] / summed[..., 1]


METRIC_FNS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    kind: (lambda summed, _s=_SMOOTH[kind]: corpus_bleu(summed, _s)) for kind in BLEU_KINDS}


def _sentence_part(resampled: np.ndarray, scores: np.ndarray) -> Optional[float]:
  """Variance of one seed's residual that comes from its test sentences (None for 1 seed)."""
  n = len(scores)
  if n < 2:
    return None
  deviations = resampled - resampled.mean(1, keepdims=True) - (scores - scores.mean())
  return float(np.mean(np.sum(deviations ** 2, axis=1)) / (n - 1))


def two_level_bootstrap(stats_a: np.ndarray, stats_b: np.ndarray,
                        corpus_fn: Callable[[np.ndarray], np.ndarray], *,
                        residual_pool: Optional[np.ndarray] = None,
                        pool_df: Optional[int] = None, samples: int = 10000, seed: int = 0,
                        batch: int = 1000) -> Dict:
  """Delta B - A with a CI and p-value that count both training seeds and test sentences.

  Each resample draws N sentence indices with replacement (multinomial counts, the same for
  both arms and all seeds); an arm's value is the mean over its seeds of `corpus_fn` of the
  weighted sums, plus the mean of as many seed offsets as it has seeds, drawn with
  replacement from its residual source: its own seeds' residuals (score minus the arm's mean
  on the full test set, times sqrt(n/(n-1)): a resample of n values has (n-1)/n of their
  variance), or `residual_pool` for both arms (a sweep's rows usually share a seed variance,
  and pooling them gives many more degrees of freedom).

  Few seeds: bootstrapping 2-3 seeds underestimates the seed variance, and the few df behind
  its estimate give the delta heavy tails that a bootstrap cannot see. So the resampled
  deltas' spread around delta is multiplied by t.ppf(0.975, df_eff) / norm.ppf(0.975): a 95%
  interval then matches a t interval. df_eff = df * max(1, (V / U)^2) (Welch-Satterthwaite,
  the sentence part counted as known), df = pool_df or (n_a - 1) + (n_b - 1) for own
  residuals, V the resampled delta's variance, U the seed part sum(m / n) of it as the
  residuals estimate it (m: mean square of the arm's residual source).

  Double counting: a seed's residual on the full test set also holds that seed's luck on
  these sentences, which the sentence resampling already reproduces. So each arm's offsets
  are scaled by sqrt(1 - v / m), v the variance across resamples of its seeds' deviations
  from their mean beyond their full-set deviations (the other arm's v for one seed). The first
  design (t factor on the residuals, no scaling) was conservative where that luck is much of
  the seed variance, as often for BLEU (null rejection down to 0.014 at 0.05, a fifth less
  power); scaling with the factor still on the residuals alone was liberal (0.06-0.075), as
  the uncertain quantity is all of m, luck included: hence the Satterthwaite factor.

  Args:
    stats_a: [S_a, N, K] per-seed per-sentence statistics of arm A (e.g. the baseline).
    stats_b: [S_b, N, K] the same for arm B, on the same N sentences.
    corpus_fn: summed statistics [..., K] -> score [...], e.g. `corpus_mean` or a
      `METRIC_FNS` entry.
    residual_pool: 1-D seed residuals of the whole sweep (`pooled_residuals`), or None.
    pool_df: the pool's degrees of freedom; required with `residual_pool`.
    samples: number of resamples.
    seed: seed of np.random.default_rng; equal inputs give equal results.
    batch: resamples computed at once (memory ~ batch * (N + S * K) floats).

  Returns:
    dict: delta, ci_low, ci_high (2.5 / 97.5 percentiles of the resampled deltas), p
    (two-sided, by inverting the percentile interval: (1 + 2 #{resampled deltas on the
    smaller side of 0}) / (samples + 1), so p < 0.05 exactly when the 95% CI excludes 0), p_at_floor (that
    count was 0), samples, seed_source ('own' or 'pooled'), interval_df (df_eff), seed_shrink (the
    arms' sqrt(1 - v / m)).
  """
  stats = [np.asarray(stats_a, dtype=np.float64), np.asarray(stats_b, dtype=np.float64)]
  shapes = [x.shape for x in stats]
  if any(len(x) != 3 or min(x) < 1 for x in shapes) or shapes[0][1:] != shapes[1][1:]:
    raise UserError(f'bootstrap needs [seeds, sentences, stats] arrays on the same sentences, '
                    f'got {shapes[0]} and {shapes[1]}: evaluate every member on one split')
  if samples < 1 or batch < 1:
    raise UserError(f'samples={samples}, batch={batch}: pass positive counts')
  source = 'own' if residual_pool is None else 'pooled'
  if shapes[0] == shapes[1] and np.array_equal(*stats):
    return {'delta': 0.0, 'ci_low': 0.0, 'ci_high': 0.0, 'p': 1.0, 'p_at_floor': False,
            'samples': samples, 'seed_source': source, 'interval_df': None, 'seed_shrink': [0.0, 0.0]}
  (n_a, n_sent, k), n_b = shapes[0], shapes[1][0]
  scores = [corpus_fn(x.sum(1)) for x in stats]
  delta = float(scores[1].mean() - scores[0].mean())
  if residual_pool is None:
    if min(n_a, n_b) < 2:
      raise UserError(f'arms with {n_a} and {n_b} seeds: an arm with one seed says nothing of '
                      'the seed variance; pass residual_pool/pool_df from pooled_residuals')
    pools = [(x - x.mean()) * math.sqrt(len(x) / (len(x) - 1)) for x in scores]
    df = _welch_df(scores[0], scores[1])
  else:
    pool = np.asarray(residual_pool, dtype=np.float64).ravel()
    if not len(pool) or pool_df is None or pool_df < 1 or not np.isfinite(pool).all():
      raise UserError(f'residual_pool of {len(pool)} values with pool_df={pool_df}: pass both '
                      'as pooled_residuals returns them (rows with >= 2 seeds)')
    pools, df = [pool, pool], pool_df
  flats = [x.transpose(1, 0, 2).reshape(n_sent, -1) for x in stats]
  resampled = [np.empty((samples, len(x))) for x in stats]
  rng = np.random.default_rng(seed)
  for start in range(0, samples, batch):
    size = min(batch, samples - start)
    draws = rng.integers(0, n_sent, (size, n_sent)) + n_sent * np.arange(size)[:, None]
    weights = np.bincount(draws.ravel(), minlength=size * n_sent).reshape(size, n_sent)
    weights = weights.astype(np.float64)
    for flat, out in zip(flats, resampled):
      sums = (weights @ flat).reshape(size, out.shape[1], k)
      out[start:start + size] = corpus_fn(sums)
  parts = [_sentence_part(r, x) for r, x in zip(resampled, scores)]
  parts = [p if p is not None else (parts[1 - i] or 0.0) for i, p in enumerate(parts)]
  arms, shrinks, unshrunk, seed_var = [], [], 0.0, 0.0
  for values, pool, part in zip(resampled, pools, parts):
    square, n = float(np.mean(pool ** 2)), values.shape[1]
    shrinks.append(math.sqrt(max(0.0, 1 - part / square)) if square > 0 else 0.0)
    unshrunk, seed_var = unshrunk + square / n, seed_var + shrinks[-1] ** 2 * square / n
    offsets = rng.choice(pool, size=values.shape, replace=True).mean(1) * shrinks[-1]
    arms.append(values.mean(1) + offsets)
  sentence_var = float(np.var(resampled[1].mean(1) - resampled[0].mean(1)))
  df_eff = df * max(1.0, ((sentence_var + seed_var) / unshrunk) ** 2) if unshrunk else math.inf
  factor = scipy.stats.t.ppf(0.975, df_eff) / scipy.stats.norm.ppf(0.975)
  deltas = delta + factor * (arms[1] - arms[0] - delta)
  # p by inverting the percentile interval: twice the smaller share of resampled deltas on
  # either side of 0, so the 95% interval excludes 0 exactly when p < 0.05.
  count = int(min(np.sum(deltas <= 0), np.sum(deltas >= 0)))
  low, high = np.percentile(deltas, [2.5, 97.5])
  return {'delta': delta, 'ci_low': float(low), 'ci_high': float(high),
          'p': min(1.0, (1 + 2 * count) / (samples + 1)), 'p_at_floor': count == 0,
          'samples': samples,
          'seed_source': source, 'interval_df': float(df_eff), 'seed_shrink': shrinks}


def _welch_df(a: np.ndarray, b: np.ndarray) -> float:
  """Welch-Satterthwaite degrees of freedom of a difference of two means: with unequal seed
  variances the noisier arm's few seeds set them ((n_a - 1) + (n_b - 1) when they are equal)."""
  va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
  if va + vb == 0:
    return float((len(a) - 1) + (len(b) - 1))
  return float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))


def pooled_residuals(groups: Sequence[Sequence[float]]) -> Tuple[np.ndarray, int, float]:
  """Seed residuals pooled over a sweep's rows, for `two_level_bootstrap`.

  Args:
    groups: one 1-D array of per-seed scores (full test set) per row.

  Returns:
    (residuals, df, pooled_sd): (x - row mean) * sqrt(n / (n - 1)) of every row with >= 2
    seeds, df = sum(n_i - 1), pooled_sd = sqrt(sum of squared deviations / df).
  """
  residuals, squares, df = [], 0.0, 0
  for group in groups:
    x = np.asarray(group, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
      raise UserError('a row has a NaN/inf seed score: fix or drop that member before pooling')
    if len(x) < 2:
      continue
    deviations = x - x.mean()
    residuals.append(deviations * math.sqrt(len(x) / (len(x) - 1)))
    squares += float(np.sum(deviations ** 2))
    df += len(x) - 1
  if df < 1:
    raise UserError('no row has two or more seeds, so nothing estimates the seed variance: '
                    'train at least one row with two seeds')
  return np.concatenate(residuals), df, math.sqrt(squares / df)


def seed_level_tests(scores_a: Sequence[float], scores_b: Sequence[float]) -> Dict:
  """Tests on the per-seed scores alone (each seed's score on the full test set).

  Both ignore test-set sampling (would other seeds differ, on these very sentences?). With
  2-3 seeds Welch's t test has very few df (its p leans on normality) and the permutation
  test very few reassignments (see perm_min_p).

  Returns:
    dict: welch_p, welch_df (scipy's Welch t test of B against A; None below 2 seeds an arm
    or with no variance), perm_p (exact two-sided permutation test of the difference in
    means over all reassignments of the pooled seeds; None above 20000 reassignments),
    perm_min_p (the smallest p that permutation test can give with these seed counts).
  """
  a = np.asarray(scores_a, dtype=np.float64).ravel()
  b = np.asarray(scores_b, dtype=np.float64).ravel()
  out = {'welch_p': None, 'welch_df': None, 'perm_p': None, 'perm_min_p': None}
  if len(a) >= 2 and len(b) >= 2:
    result = scipy.stats.ttest_ind(b, a, equal_var=False)
    if np.isfinite(result.pvalue):
      out['welch_p'], out['welch_df'] = float(result.pvalue), float(result.df)
  if not len(a) or not len(b):
    return out
  count = math.comb(len(a) + len(b), len(a))
  out['perm_min_p'] = (2 if len(a) == len(b) else 1) / count
  if count <= _MAX_PERMUTATIONS:
    pooled = np.concatenate([a, b])
    picks = np.array(list(itertools.combinations(range(len(pooled)), len(a))))
    sum_a = pooled[picks].sum(1)
    diffs = (pooled.sum() - sum_a) / len(b) - sum_a / len(a)
    observed = abs(b.mean() - a.mean())
    tolerance = 1e-12 * max(observed, float(np.abs(pooled).max()), 1e-300)
    out['perm_p'] = float(np.mean(np.abs(diffs) >= observed - tolerance))
  return out


def sentence_paired_test(baseline_hyps: Sequence[str], system_hyps: Sequence[str],
                         references: Sequence[str], test_type: str = 'bs',
                         samples: int = 1000) -> float:
  """p-value of `system_hyps` against `baseline_hyps` (same sentences) for cased corpus BLEU.

  test_type 'bs' is paired bootstrap resampling (Koehn, 2004), 'ar' approximate randomisation
  (Riezler and Maxwell, 2005), both as sacrebleu implements them (seeded, so repeatable).
  It resamples sentences only and ignores training randomness: another seed of either system
  could differ by more than this test allows, so use `two_level_bootstrap` across seeds.
  """
  from sacrebleu.metrics import BLEU
  from sacrebleu.significance import PairedTest
  if test_type not in ('bs', 'ar'):
    raise UserError(f'unknown paired test {test_type!r}: use bs (bootstrap) or ar '
                    '(approximate randomisation)')
  if not (len(baseline_hyps) == len(system_hyps) == len(references)):
    raise UserError(f'paired test needs equal sentence counts, got {len(baseline_hyps)}, '
                    f'{len(system_hyps)} and {len(references)}: evaluate every member on the '
                    'same split')
  if list(system_hyps) == list(baseline_hyps):
    # sacrebleu counts resampled differences strictly above the observed one, so two identical
    # systems (every difference 0) would get p = 1/(n+1); there is no evidence of a difference.
    return 1.0
  test = PairedTest([('baseline', list(baseline_hyps)), ('system', list(system_hyps))],
                    {'BLEU': BLEU()}, [list(references)], test_type=test_type,
                    n_samples=samples)
  _, scores = test()
  return float(scores['BLEU'][1].p_value)


def holm(p_values: Sequence[Optional[float]]) -> List[Optional[float]]:
  """Holm-adjusted p-values in the given order; None stays None and does not count in m."""
  present = [i for i, p in enumerate(p_values) if p is not None]
  order = sorted(present, key=lambda i: p_values[i])
  adjusted: List[Optional[float]] = [None] * len(p_values)
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, (len(order) - rank) * p_values[i])
    adjusted[i] = min(1.0, running)
  return adjusted


def _check_power_args(delta, seed_sd, sentence_var, alpha):  # -> |delta|
  if seed_sd < 0 or sentence_var < 0 or seed_sd == sentence_var == 0 or not 0 < alpha < 1:
    raise UserError(f'seed_sd={seed_sd}, sentence_var={sentence_var}, alpha={alpha}: need '
                    'seed_sd >= 0 and sentence_var >= 0, not both 0, and 0 < alpha < 1')
  return abs(float(delta))


def _power(n: np.ndarray, delta: float, seed_sd: float, sentence_var: float,
           alpha: float) -> np.ndarray:
  df = 2 * n - 2
  noncentrality = delta / np.sqrt(2 * seed_sd ** 2 / n + sentence_var)
  t_crit = scipy.stats.t.ppf(1 - alpha / 2, df)
  power = (scipy.stats.nct.sf(t_crit, df, noncentrality) +
           scipy.stats.nct.cdf(-t_crit, df, noncentrality))
  # scipy's noncentral t gives NaN far in its tail (noncentrality above ~10 at few df), where
  # the power is 1 to many digits: the normal approximation is exact enough there.
  normal = (scipy.stats.norm.sf(t_crit - noncentrality) +
            scipy.stats.norm.cdf(-t_crit - noncentrality))
  return np.where(np.isnan(power), normal, power)


def power_at(n: int, delta: float, seed_sd: float, sentence_var: float = 0.0,
             alpha: float = 0.05) -> float:
  """Power of a two-sided two-sample t test (df 2n - 2) with n >= 2 seeds per arm.

  Args:
    n: seeds per arm; delta: the true difference of the arms' means; seed_sd: standard
      deviation of one seed's score (full test set); sentence_var: variance of the delta
      from the test sentences that more seeds do not remove (e.g. a paired sentence
      bootstrap's squared standard error); alpha: the test's level.

  Returns:
    P(|T| > t_crit), T noncentral t, noncentrality delta / sqrt(2 seed_sd^2 / n + sentence_var).
  """
  delta = _check_power_args(delta, seed_sd, sentence_var, alpha)
  if n < 2:
    raise UserError(f'power needs at least 2 seeds per arm, got {n}: pass n >= 2')
  return float(_power(np.float64(n), delta, seed_sd, sentence_var, alpha))


def seeds_for_power(delta: float, seed_sd: float, sentence_var: float = 0.0, *,
                    alpha: float = 0.05, power: float = 0.8,
                    max_seeds: int = 1000) -> Optional[int]:
  """Smallest n >= 2 seeds per arm at which `power_at` reaches `power`, else None.

  None when max_seeds do not reach it: a large sentence_var caps the power however many
  seeds, and a delta of 0 gives alpha.
  """
  delta = _check_power_args(delta, seed_sd, sentence_var, alpha)
  n = np.arange(2, max(int(max_seeds), 2) + 1, dtype=np.float64)
  reached = np.nonzero(_power(n, delta, seed_sd, sentence_var, alpha) >= power)[0]
  return int(n[reached[0]]) if len(reached) else None


def format_p(p: Optional[float], samples: Optional[int] = None) -> str:
  """A p-value for a table: '' for None, '< 1/10001' at a resampling test's floor.

  The floor is 1 / (samples + 1) (no resample as extreme); other values get 3 decimals
  ('0.012', '0.340'), or scientific notation below 0.001 ('4.0e-04').
  """
  if p is None:
    return ''
  if samples is not None and p <= 1.0 / (samples + 1) * (1 + 1e-9):
    return f'< 1/{samples + 1}'
  return f'{p:.3f}' if p >= 0.001 else f'{p:.1e}'
