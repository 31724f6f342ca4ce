"""Tests for transformer_jax/evaluation/bleu.py."""
import gzip
import math

import pytest

from transformer_jax.evaluation import bleu

SENTENCES = ['Ein Mann mit einem orangefarbenen Hut, der etwas anstarrt.',
             'Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun.',
             'Zwei Kinder spielen „Fangen“ im Park.']


def test_identical_text_scores_100():
  assert bleu.bleu_tok_lc(SENTENCES, SENTENCES) == pytest.approx(100.0)
  score, signature = bleu.sacre_bleu(SENTENCES, SENTENCES)
  assert score == pytest.approx(100.0)
  assert signature.startswith('nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:')


def test_hand_computed_bleu():
  # One wrong last word of six: n-gram precisions 5/6, 4/5, 3/4, 2/3, no brevity penalty.
  expected = 100 * (5 / 6 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
  assert bleu.bleu_tok_lc(['a b c d e f'], ['a b c d e g']) == pytest.approx(expected)
  assert bleu.sacre_bleu(['a b c d e f'], ['a b c d e g'])[0] == pytest.approx(expected)
  # Five of six words, all matching: only the brevity penalty exp(1 - 6 / 5) remains.
  assert bleu.bleu_tok_lc(['a b c d e'], ['a b c d e f']) == pytest.approx(
      100 * math.exp(1 - 6 / 5))


def test_only_bleu_tok_lc_ignores_case():
  refs = [SENTENCES[0], SENTENCES[2]]  # not SENTENCES[1]: 'ß'.upper().lower() is 'ss'
  upper = [s.upper() for s in refs]
  assert bleu.bleu_tok_lc(upper, refs) == pytest.approx(100.0)
  assert bleu.sacre_bleu(upper, refs)[0] < 10.0


def test_moses_settings_on_german():
  # Quotes are normalised to '"' and split off; hyphenated words stay whole (no -a);
  # no HTML escaping of '&' or "'".
  text = 'Ein „Hunde-Spiel“ im Park, sagt er: „Es ist schön!“'
  assert bleu.moses_preprocess(text) == (
      'ein " hunde-spiel " im park , sagt er : " es ist schön ! "')
  assert bleu.moses_preprocess("Ein Mann & ein Hund's Ball.") == (
      "ein mann & ein hund ' s ball .")


def test_tokenization_makes_punctuation_separate_words():
  # Detached punctuation would cost sacreBLEU nothing (13a splits it too) but the
  # Moses tokenizer must split it as well, or "park." would not match "park .".
  assert bleu.bleu_tok_lc(['ein hund im park.'], ['Ein Hund im Park .']) == pytest.approx(100)


def test_bleu_by_length_counts_every_sentence_once():
  sources = [' '.join(['w'] * n) for n in (1, 9, 10, 14, 15, 19, 20, 24, 25, 60)]
  hyps = [f'das ist satz nummer {i} .' for i in range(len(sources))]
  refs = [f'das ist satz nummer {i} !' for i in range(len(sources))]
  rows = bleu.bleu_by_length(sources, hyps, refs)
  assert [row['bucket'] for row in rows] == ['0-9', '10-14', '15-19', '20-24', '25+']
  assert [row['count'] for row in rows] == [2, 2, 2, 2, 2]
  assert sum(row['count'] for row in rows) == len(sources)
  rows = bleu.bleu_by_length(sources[:3], hyps[:3], refs[:3], buckets=(0, 5, 100))
  assert [row['count'] for row in rows] == [1, 2, 0]
  assert math.isnan(rows[2]['bleu_tok_lc']) and math.isnan(rows[2]['sacrebleu'])
  table = bleu.format_table(rows)
  assert table.splitlines()[0].startswith('| source words |')
  assert '| 100+ | 0 | n/a | n/a |' in table


def test_bleu_by_length_rejects_bad_buckets():
  with pytest.raises(ValueError, match='starting at 0'):
    bleu.bleu_by_length(['a'], ['a'], ['a'], buckets=(5, 10))


def test_plot_writes_png(tmp_path):
  sources = ['a b c', ' '.join(['w'] * 12), ' '.join(['w'] * 30)]
  rows_a = bleu.bleu_by_length(sources, SENTENCES, SENTENCES)
  rows_b = bleu.bleu_by_length(sources, SENTENCES[::-1], SENTENCES)
  path = bleu.plot_bleu_by_length({'base': rows_a, 'big': rows_b}, tmp_path / 'bleu.png')
  data = path.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 1000


def test_perplexity():
  assert bleu.perplexity(2 * math.log(7.0), 2.0) == pytest.approx(7.0)
  assert bleu.perplexity(1e6, 1.0) == math.inf


def test_multi30k_test_references(shared_data):
  path = shared_data / 'multi30k' / 'test_2016_flickr.de.gz'
  if not path.exists():
    pytest.skip(f'{path} not found')
  with gzip.open(path, 'rt', encoding='utf-8') as f:
    refs = f.read().splitlines()
  assert len(refs) == 1000
  # Also shows the normalisation is not pathological: this takes ~0.1 s on 2 cores.
  assert bleu.bleu_tok_lc(refs, refs) == pytest.approx(100.0)
