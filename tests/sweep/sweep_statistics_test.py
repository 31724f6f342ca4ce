"""sweep/statistics.py against independent computations: sacrebleu's corpus BLEU, an exact
enumeration of the two-level bootstrap on a tiny case, hand-computed Holm / pooling /
permutation p-values, and calibration on simulated null sweeps (false positives, coverage,
power) next to the old seeds-concatenated sentence bootstrap."""
import itertools
import math

import numpy as np
import pytest
import sacrebleu
import scipy.stats

from transformer_jax.base.errors import UserError
from transformer_jax.evaluation import bleu
from transformer_jax.sweep.reporting import statistics as st

_PAIRS = [
    ('Ein Mann fährt Fahrrad auf der Straße.',
     'Ein Mann fährt mit dem Fahrrad auf der Straße.'),
    ('Zwei Hunde spielen im Schnee.', 'Zwei Hunde spielen im Schnee.'),
    ('Eine Frau liest ein Buch im Park.', 'Eine Frau liest im Park ein Buch.'),
    ('Kinder spielen Fußball auf einer Wiese.', 'Die Kinder spielen auf der Wiese Fußball.'),
    ('Ein Junge springt in den See.', 'Ein kleiner Junge springt in einen See.'),
    ('Der Koch bereitet das Essen vor.', 'Ein Koch bereitet in der Küche Essen zu.'),
    ('Menschen gehen eine Straße entlang.', 'Leute laufen eine belebte Straße entlang.'),
    ('Ein Mädchen mit rotem Hut lacht.', 'Ein Mädchen mit einem roten Hut lacht.'),
    ('Ein Hund rennt über den Strand.', 'Ein brauner Hund rennt über den Sand.'),
    ('Zwei Männer arbeiten an einem Dach.', 'Zwei Arbeiter reparieren ein Dach.'),
    ('Eine Gruppe sitzt um ein Feuer.', 'Eine Gruppe von Freunden sitzt um ein Lagerfeuer.'),
    ('Der Mann spielt Gitarre auf der Bühne.', 'Ein Mann spielt auf einer Bühne Gitarre.'),
    ('Ein Kind isst ein Eis.', 'Ein Kind isst ein Eis.'),
    ('Eine Frau trägt eine blaue Jacke.', 'Die Frau trägt eine blaue Jacke und Jeans.'),
    ('Ein Radfahrer fährt einen Berg hinauf.', 'Ein Radfahrer fährt den Berg hinauf.'),
    ('Leute warten an der Haltestelle.', 'Menschen warten an einer Bushaltestelle.'),
    ('Ein alter Mann füttert Tauben.', 'Ein älterer Herr füttert die Tauben im Park.'),
    ('Zwei Frauen unterhalten sich im Café.', 'Zwei Frauen reden in einem Café.'),
    ('Ein Skifahrer fährt den Hang hinunter.',
     'Ein Skifahrer fährt einen steilen Hang hinunter.'),
    ('Die Band spielt vor vielen Leuten.', 'Eine Band spielt vor einer großen Menge.'),
    ('Ein Mann repariert sein Auto.', 'Ein Mann repariert ein altes Auto.'),
    ('Ein Baby schläft in seinem Bett.', 'Ein Baby schläft in einem Bett.'),
    ('Ein Surfer reitet auf einer Welle.', 'Ein Surfer reitet eine große Welle.'),
    ('Ein Hund fängt einen Ball.', 'Ein schwarzer Hund fängt einen roten Ball.'),
    ('Arbeiter bauen ein neues Haus.', 'Bauarbeiter errichten ein Haus.'),
    ('Eine Katze liegt auf dem Sofa.', 'Eine Katze liegt auf der Couch.'),
    ('Ein Mann verkauft Obst auf dem Markt.', 'Ein Händler verkauft Obst auf einem Markt.'),
    ('Schüler sitzen in einem Klassenzimmer.', 'Schüler sitzen in einem Klassenraum.'),
    ('Ein Paar tanzt auf der Straße.', 'Ein Paar tanzt auf einer Straße.'),
    ('Ein Fischer wirft sein Netz aus.', 'Ein Fischer wirft ein Netz ins Wasser.'),
]
_HYPS, _REFS = [h for h, _ in _PAIRS], [r for _, r in _PAIRS]
# Sentences with unigram and bigram matches but no 4-gram match anywhere: smoothing matters.
_NO4_HYPS = ['Mann der fährt Fahrrad schnell', 'Hunde im spielen Schnee heute', 'Buch liest Frau']
_NO4_REFS = ['Der Mann fährt Fahrrad.', 'Zwei Hunde spielen im Schnee.', 'Eine Frau liest.']


@pytest.mark.parametrize('hyps,refs', [(_HYPS, _REFS), (_NO4_HYPS, _NO4_REFS)])
def test_corpus_bleu_matches_sacrebleu(hyps, refs):
  stats = st.bleu_stats(hyps, refs, 'sacrebleu')
  assert stats.shape == (len(hyps), 10)
  assert list(stats[:, 0]) == [len(sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a()(h).split())
                               for h in hyps]  # hyp_len first
  expected = sacrebleu.corpus_bleu(hyps, [refs]).score
  assert st.corpus_bleu(stats.sum(0), 'exp') == pytest.approx(expected, abs=1e-9)
  assert st.METRIC_FNS['sacrebleu'](stats.sum(0)) == pytest.approx(expected, abs=1e-9)
  tok = st.bleu_stats(hyps, refs, 'bleu_tok_lc', lang='de')
  assert st.METRIC_FNS['bleu_tok_lc'](tok.sum(0)) == pytest.approx(
      bleu.bleu_tok_lc(hyps, refs), abs=1e-9)
  if hyps is _NO4_HYPS:
    assert stats[:, 5].sum() == 0 and expected > 0  # exp smoothing keeps it above 0
    assert st.corpus_bleu(stats.sum(0), 'none') == 0.0
  # Vectorised over leading axes: every prefix of the corpus at once.
  prefixes = np.cumsum(stats, axis=0)
  for n in (1, len(hyps) // 2, len(hyps)):
    assert st.corpus_bleu(prefixes, 'exp')[n - 1] == pytest.approx(
        sacrebleu.corpus_bleu(hyps[:n], [refs[:n]]).score, abs=1e-9)


def test_mean_stats_and_errors():
  stats = st.mean_stats([1.0, 2.0, 6.0])
  assert st.corpus_mean(stats.sum(0)) == 3.0
  with pytest.raises(UserError):
    st.mean_stats([1.0, float('nan')])
  with pytest.raises(UserError):
    st.bleu_stats(['a'], ['a', 'b'], 'sacrebleu')
  with pytest.raises(UserError):
    st.bleu_stats(['a'], ['a'], 'chrf')


def _exact_bootstrap(a, b, pool=None, pool_df=None):
  """Every equally likely outcome of the two-level bootstrap (corpus mean), by enumeration."""
  n_sent = len(a[0])
  tuples = list(itertools.product(range(n_sent), repeat=n_sent))

  def seed_means(arm, idx):
    return [sum(row[i] for i in idx) / len(idx) for row in arm]

  def mean(xs):
    return sum(xs) / len(xs)

  full = [seed_means(arm, range(n_sent)) for arm in (a, b)]
  delta = mean(full[1]) - mean(full[0])
  resampled = [[seed_means(arm, idx) for idx in tuples] for arm in (a, b)]
  parts = []
  for arm, f in zip(resampled, full):
    n = len(f)
    parts.append(None if n < 2 else mean([
        sum((s[j] - mean(s) - (f[j] - mean(f))) ** 2 for j in range(n)) / (n - 1) for s in arm]))
  parts = [p if p is not None else parts[1 - i] for i, p in enumerate(parts)]
  if pool is None:
    sources = [[(x - mean(f)) * math.sqrt(len(f) / (len(f) - 1)) for x in f] for f in full]
    df = scipy.stats.ttest_ind(full[1], full[0], equal_var=False).df     # Welch-Satterthwaite
  else:
    sources, df = [pool, pool], pool_df
  squares = [mean([r * r for r in src]) for src in sources]
  shrinks = [math.sqrt(max(0.0, 1 - p / m)) for p, m in zip(parts, squares)]
  sentence_deltas = [mean(sb) - mean(sa) for sa, sb in zip(*resampled)]
  sentence_var = mean([(d - mean(sentence_deltas)) ** 2 for d in sentence_deltas])
  seed_var = sum(s * s * m / len(f) for s, m, f in zip(shrinks, squares, full))
  unshrunk = sum(m / len(f) for m, f in zip(squares, full))
  df_eff = df * max(1.0, ((sentence_var + seed_var) / unshrunk) ** 2)
  factor = scipy.stats.t.ppf(0.975, df_eff) / scipy.stats.norm.ppf(0.975)
  outcomes = []
  for d in sentence_deltas:
    for draw_a in itertools.product(sources[0], repeat=len(a)):
      for draw_b in itertools.product(sources[1], repeat=len(b)):
        raw = d + shrinks[1] * mean(draw_b) - shrinks[0] * mean(draw_a)
        outcomes.append(delta + factor * (raw - delta))
  return delta, sorted(outcomes), shrinks


def _arm_stats(arm):
  return np.stack([st.mean_stats(seed) for seed in arm])


_A = [[1.0, 2.0, 3.0], [1.6, 2.5, 3.4]]
_B = [[1.8, 2.4, 3.9], [2.3, 3.3, 3.6]]


@pytest.mark.parametrize('a,b,pool,pool_df', [
    (_A, _B, None, None),
    (_A + [[1.2, 2.4, 2.9]], [_B[1]], [0.4, -0.4, 0.25, -0.05, -0.2], 3),
])
def test_two_level_bootstrap_matches_exact_enumeration(a, b, pool, pool_df):
  delta, outcomes, shrinks = _exact_bootstrap(a, b, pool, pool_df)
  assert all(0 < s < 1 for s in shrinks)  # the case exercises the double-counting correction
  samples = 40000
  got = st.two_level_bootstrap(_arm_stats(a), _arm_stats(b), st.corpus_mean, residual_pool=pool,
                               pool_df=pool_df, samples=samples, seed=3)
  assert got['delta'] == pytest.approx(delta, abs=1e-12)
  assert got['seed_source'] == ('own' if pool is None else 'pooled')
  assert got['seed_shrink'] == pytest.approx(shrinks, abs=0.02)
  # p inverts the percentile interval: twice the smaller share on either side of 0.
  p_exact = min(1.0, 2 * min(np.mean([x <= 0 for x in outcomes]),
                             np.mean([x >= 0 for x in outcomes])))
  assert 0.05 < p_exact < 0.5
  assert got['p'] == pytest.approx(p_exact, abs=4 * math.sqrt(p_exact / samples) + 2e-3)
  # The distribution is discrete; its atoms move a little with the resampled shrink.
  quantile = lambda q: outcomes[int(q * (len(outcomes) - 1))]
  tol = 0.02 * (quantile(0.975) - quantile(0.025))
  assert quantile(0.015) - tol <= got['ci_low'] <= quantile(0.035) + tol
  assert quantile(0.965) - tol <= got['ci_high'] <= quantile(0.985) + tol


def test_two_level_bootstrap_delta_uses_every_seed_and_is_reproducible():
  base2, base3 = _arm_stats(_A), _arm_stats(_A + [[3.0, 4.0, 5.0]])
  system = _arm_stats(_B)
  two = st.two_level_bootstrap(base2, system, st.corpus_mean, samples=500)
  three = st.two_level_bootstrap(base3, system, st.corpus_mean, samples=500)
  assert two['delta'] == pytest.approx((8.1 + 9.2) / 6 - (6 + 7.5) / 6, abs=1e-12)
  assert three['delta'] == pytest.approx((8.1 + 9.2) / 6 - (6 + 7.5 + 12) / 9, abs=1e-12)
  assert three == st.two_level_bootstrap(base3, system, st.corpus_mean, samples=500)
  assert three != st.two_level_bootstrap(base3, system, st.corpus_mean, samples=500, seed=1)
  same = st.two_level_bootstrap(system, system, st.corpus_mean, samples=500)
  assert (same['p'], same['ci_low'], same['ci_high'], same['p_at_floor']) == (1.0, 0, 0, False)
  far = st.two_level_bootstrap(base2, _arm_stats(np.array(_B) + 10), st.corpus_mean, samples=500)
  assert far['p'] == 1 / 501 and far['p_at_floor'] and st.format_p(far['p'], 500) == '< 1/501'
  # A metric with no per-sentence form: one "sentence" per seed, seed variance only (t on
  # Welch's df, below 2 here as the arms' spreads differ).
  single = st.two_level_bootstrap(base2[:, :1], system[:, :1], st.corpus_mean, samples=2000)
  welch = scipy.stats.ttest_ind(system[:, 0, 0], base2[:, 0, 0], equal_var=False).df
  assert single['interval_df'] == pytest.approx(welch) and single['seed_shrink'] == [1.0, 1.0]
  assert single['ci_low'] < single['delta'] < single['ci_high']
  with pytest.raises(UserError, match='pooled_residuals'):
    st.two_level_bootstrap(base2, system[:1], st.corpus_mean)
  with pytest.raises(UserError):
    st.two_level_bootstrap(base2, system[:, :2], st.corpus_mean)
  with pytest.raises(UserError, match='pool_df'):
    st.two_level_bootstrap(base2, system, st.corpus_mean, residual_pool=np.ones(3))


def test_two_level_bootstrap_on_bleu():
  rng = np.random.default_rng(0)
  words = [h.split() for h in _HYPS]
  arms = []
  for _ in range(2):  # two arms of two "seeds": hypotheses with random words dropped
    arms.append([[' '.join(w for w in ws if rng.random() > 0.2) or ws[0] for ws in words]
                 for _ in range(2)])
  stats = [np.stack([st.bleu_stats(h, _REFS, 'sacrebleu') for h in arm]) for arm in arms]
  got = st.two_level_bootstrap(*stats, st.METRIC_FNS['sacrebleu'], samples=300)
  means = [np.mean([sacrebleu.corpus_bleu(h, [_REFS]).score for h in arm]) for arm in arms]
  assert got['delta'] == pytest.approx(means[1] - means[0], abs=1e-9)
  assert got['ci_low'] < got['delta'] < got['ci_high'] and 0 < got['p'] <= 1


def test_holm():
  assert st.holm([0.01, None, 0.04, 0.03, 0.005]) == pytest.approx(
      [0.03, None, 0.06, 0.06, 0.02])
  assert st.holm([0.5, 0.6]) == [1.0, 1.0]
  assert st.holm([None, None]) == [None, None]


def test_pooled_residuals():
  groups = [np.array([1.0, 2.0, 4.0]), np.array([3.0, 5.0]), np.array([7.0])]
  residuals, df, sd = st.pooled_residuals(groups)
  assert df == 3
  squares = np.sum((groups[0] - 7 / 3) ** 2) + np.sum((groups[1] - 4) ** 2)
  assert sd == pytest.approx(math.sqrt(squares / 3))
  expected = np.concatenate([(groups[0] - 7 / 3) * math.sqrt(1.5), (groups[1] - 4) * math.sqrt(2)])
  np.testing.assert_allclose(residuals, expected)
  with pytest.raises(UserError):
    st.pooled_residuals([[1.0], [2.0]])


def test_seed_level_tests():
  a, b = [1.0, 2.0], [3.0, 4.0, 6.0]
  got = st.seed_level_tests(a, b)
  welch = scipy.stats.ttest_ind(b, a, equal_var=False)
  assert got['welch_p'] == pytest.approx(welch.pvalue)
  assert got['welch_df'] == pytest.approx(welch.df)
  # Of the 10 ways to pick 2 of the 5 values as arm A, only {1,2} (observed, 13/3 - 3/2) and
  # {4,6} (7/3 - 5) have |mean difference| >= 17/6.
  assert got['perm_p'] == pytest.approx(0.2) and got['perm_min_p'] == pytest.approx(0.1)
  assert st.seed_level_tests([1, 2, 3], [4, 5, 6])['perm_min_p'] == pytest.approx(0.1)
  one = st.seed_level_tests([1.0], [2.0, 3.0])
  assert one['welch_p'] is None and one['perm_p'] == pytest.approx(2 / 3)
  big = st.seed_level_tests(np.arange(10.0), np.arange(10.0) + 1)
  assert big['perm_p'] is None and big['perm_min_p'] == pytest.approx(2 / 184756)


def test_sentence_paired_test():
  assert st.sentence_paired_test(_HYPS, _HYPS, _REFS) == 1.0
  worse = [' '.join(h.split()[:3]) for h in _HYPS]
  assert st.sentence_paired_test(_HYPS, worse, _REFS, samples=200) < 0.05
  with pytest.raises(UserError):
    st.sentence_paired_test(_HYPS, _HYPS[:-1], _REFS)


def test_seeds_for_power():
  counts = [st.seeds_for_power(d, 1.0) for d in (1.0, 2.0, 3.0)]
  assert counts[0] > counts[1] > counts[2] >= 2
  n = counts[1]
  assert st.power_at(n, 2.0, 1.0) >= 0.8 > st.power_at(n - 1, 2.0, 1.0)
  assert st.seeds_for_power(0.0, 1.0) is None
  assert st.seeds_for_power(1.0, 1.0, sentence_var=1.0) is None  # test-set noise caps power
  assert st.power_at(4, 0.0, 1.0) == pytest.approx(0.05)


def test_format_p():
  assert [st.format_p(p, 10000) for p in (None, 1 / 10001, 0.0123, 0.34, 4e-4)] == [
      '', '< 1/10001', '0.012', '0.340', '4.0e-04']


def _sweep(rng, seeds, effects, sd_seed, sd_noise, n_sent=150):
  """Per-seed per-sentence scores: shared difficulty + row effect + seed offset + noise."""
  difficulty = rng.normal(0, 1, n_sent)
  return [difficulty + effect + rng.normal(0, sd_seed, (n, 1))
          + rng.normal(0, sd_noise, (n, n_sent)) for n, effect in zip(seeds, effects)]


def _old_pooled_p(base, row, rng, samples):
  """The old test: seeds both arms have concatenated, sentences (pairs) resampled only."""
  common = min(len(base), len(row))
  diffs = (row[:common] - base[:common]).ravel()
  means = diffs[rng.integers(0, len(diffs), (samples, len(diffs)))].mean(1)
  return (1 + np.sum(np.abs(means - diffs.mean()) >= abs(diffs.mean()))) / (samples + 1)


def _pooled_test(rows, seed, samples=500):
  pool, df, _ = st.pooled_residuals([r.mean(1) for r in rows])
  arrays = [np.stack([st.mean_stats(s) for s in r]) for r in rows[:2]]
  return st.two_level_bootstrap(*arrays, st.corpus_mean, residual_pool=pool, pool_df=df,
                                samples=samples, seed=seed)


def test_calibration_on_simulated_sweeps():
  # Seed SD 0.1; a seed's luck on 150 sentences of noise SD 1 is 1/sqrt(150) = 0.08 more.
  sd_seed, sd_noise, seeds = 0.1, 1.0, [3] + [2] * 9
  rng = np.random.default_rng(20240601)
  sims, new_hits, old_hits = 2000, 0, 0
  for i in range(sims):
    rows = _sweep(rng, seeds, np.zeros(10), sd_seed, sd_noise)
    new_hits += _pooled_test(rows, i)['p'] < 0.05
    old_hits += _old_pooled_p(rows[0], rows[1], rng, 500) < 0.05
  covered, cover_sims = 0, 600
  for i in range(cover_sims):
    effects = np.concatenate([[0.0], rng.normal(0, 0.2, 9)])
    result = _pooled_test(_sweep(rng, seeds, effects, sd_seed, sd_noise), i)
    covered += result['ci_low'] <= effects[1] <= result['ci_high']
  detected, power_sims = 0, 300
  for i in range(power_sims):  # 2 seed SDs, 5 seeds an arm, modest sentence noise
    arms = _sweep(rng, [5, 5], [0.0, 2 * sd_seed], sd_seed, 0.5)
    stats = [np.stack([st.mean_stats(s) for s in arm]) for arm in arms]
    detected += st.two_level_bootstrap(*stats, st.corpus_mean, samples=500, seed=i)['p'] < 0.05
  rates = new_hits / sims, old_hits / sims, covered / cover_sims, detected / power_sims
  print(f'false positives at 0.05: two-level {rates[0]:.3f}, old pooled {rates[1]:.3f}; '
        f'95% CI coverage {rates[2]:.3f}; power at 2 seed SDs, 5 seeds {rates[3]:.3f}')
  assert rates[0] <= 0.07
  assert rates[1] >= 0.15
  assert 0.90 <= rates[2] <= 0.99
  assert rates[3] > 0.5


def test_power_far_in_the_noncentral_tail_is_not_nan():
  # scipy's noncentral t returns NaN at noncentrality ~14 with 4 df; such a delta needs the
  # fewest seeds, not more.
  assert st.power_at(3, 7.63, 0.331, 0.175) == pytest.approx(1.0)
  assert st.seeds_for_power(7.63, 0.331, 0.175) == 2


def _report_test(rows, samples=500):
  """The report's path: comparisons.compare_stats with the sweep's pool (heterogeneity rule
  included), the first row as the reference."""
  from transformer_jax.sweep.reporting import comparisons
  pool = comparisons.pooled({str(i): r.mean(1) for i, r in enumerate(rows)})
  arrays = [np.stack([st.mean_stats(s) for s in r]) for r in rows[:2]]
  return comparisons.compare_stats(*arrays, st.corpus_mean, pool, samples)


def _noisier_null(rng, seeds):
  """A null sweep whose second row's seeds vary 4x more than the others' (SD 0.4 vs 0.1)."""
  rows = _sweep(rng, seeds, np.zeros(len(seeds)), 0.1, 1.0)
  rows[1] = rows[1] - rows[1].mean(1, keepdims=True) + rows[1].mean() + \
      rng.normal(0, 0.4, (seeds[1], 1))
  return rows


def test_report_comparisons_when_one_row_is_noisier():
  """Pooling assumes the rows share one seed variance. A row whose seeds vary 4x more: with
  5 seeds an arm the report uses the arms' own seeds and stays calibrated where the pool alone
  is not; with 2 seeds a row cannot show its own variance, and the heterogeneity rule only
  removes part of the excess (docs/ablations.md says so; more seeds are the remedy)."""
  rng = np.random.default_rng(7)
  rates = {}
  for seeds in ([5] * 10, [3] + [2] * 9):
    sims, hits, pooled_hits = 300, 0, 0
    for _ in range(sims):
      rows = _noisier_null(rng, seeds)
      hits += _report_test(rows)['p'] < 0.05
      pooled_hits += _pooled_test(rows, 0)['p'] < 0.05
    rates[seeds[1]] = hits / sims, pooled_hits / sims
  print(f'noisier row, false positives (report, pool only): 5 seeds {rates[5]}, 2 seeds {rates[2]}')
  # Welch-Satterthwaite's df are a little liberal at 5 seeds (0.077 here): the bound is 0.05
  # plus 3 binomial standard errors of a rate over 300 simulations (0.013 each).
  assert rates[5][0] <= 0.09 and rates[5][1] > 0.2
  assert rates[2][0] < rates[2][1]


def test_same_sign_as_paper_reads_a_fall_in_loss_as_a_gain():
  from transformer_jax.sweep.reporting import tables
  assert tables.improvement('bleu_tok_lc', -4.2) == -4.2
  assert tables.improvement('accuracy', 0.01) == 0.01
  assert tables.improvement('loss', 0.46) == -0.46          # loss rose: worse, as BLEU fell
  assert tables.improvement('perplexity', -3.0) == 3.0
  assert tables._agreement(-1.2, tables.improvement('loss', 0.46)) == 'yes'   # pylint: disable=protected-access
