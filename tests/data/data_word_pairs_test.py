"""word2vec rows: SST-2 phrases, subsampling, dynamic window, noise, resumable iterator, errors."""
import gzip

import ml_collections
import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.data.sources import word_pairs


def _tokenizer(counts):
  """Words w2, w3, ... with the given counts (ids 2, 3, ...)."""
  words = [f'w{i}' for i in range(2, 2 + len(counts))]
  return word_pairs.WordTokenizer(list(word_pairs.SPECIALS) + words, [0, 0] + list(counts))


def _corpus(tokenizer, sentences):
  return word_pairs.Corpus(tokenizer, sentences)


def test_words_and_tokenizer_round_trip(tmp_path):
  assert word_pairs.words("A dog's T-shirt, isn't it? 2 DOGS") == [
      'a', "dog's", 't-shirt', "isn't", 'it', '2', 'dogs']
  tokenizer = word_pairs.WordTokenizer.build(['b a b', 'c b a', 'd'], min_count=2)
  assert tokenizer.vocab == ['<pad>', '<unk>', 'b', 'a']
  assert tokenizer.encode(['a x b']) == [[3, 1, 2]]
  assert tokenizer.decode([3, 2, 0]) == 'a b'
  path = str(tmp_path / 'tokenizer' / 'word_vocab.txt')
  tokenizer.save(path)
  loaded = word_pairs.WordTokenizer.load(path)
  assert loaded.vocab == tokenizer.vocab and list(loaded.counts) == [0, 0, 3, 2]


def test_outermost_rows_keep_each_sentence_once():
  rows = ['a good film .', 'the cast', 'good film', 'A Good Film', 'the cast is a good film .',
          'cast is', 'film', 'goodfilm', 'is a', '...', 'bad']
  assert word_pairs.outermost_rows(rows) == ['the cast is a good film .', 'goodfilm', 'bad']
  # words, not characters: 'a' is inside 'a b' but 'b c' is not inside 'ab c'
  assert word_pairs.outermost_rows(['ab c', 'b c', 'a', 'a b']) == ['ab c', 'b c', 'a b']
  assert word_pairs.outermost_rows(['x y', 'x y']) == ['x y']


def test_outermost_rows_against_brute_force():
  rng = np.random.default_rng(0)
  rows = [' '.join(rng.choice(['a', 'b', 'c', 'dd'], size=rng.integers(1, 6))) for _ in range(300)]
  padded = [f' {r} ' for r in rows]
  inside = lambda i, j: padded[i] in padded[j] and (len(rows[j]) > len(rows[i]) or j < i)
  expected = [r for i, r in enumerate(rows) if not any(inside(i, j) for j in range(len(rows))
                                                      if j != i)]
  assert word_pairs.outermost_rows(rows) == expected


def test_keep_probability_is_mikolovs_formula():
  counts = np.array([0, 0, 900, 90, 10])
  t = 0.01
  keep = word_pairs.keep_probabilities(counts, t)
  f = counts[2:] / 1000
  np.testing.assert_allclose(keep[2:], np.minimum(1, (np.sqrt(f / t) + 1) * t / f))
  np.testing.assert_array_equal(word_pairs.keep_probabilities(counts, 0.0), 1.0)


def test_subsampling_frequencies():
  tokenizer = _tokenizer([90000, 10000])
  corpus = _corpus(tokenizer, [('w2 ' * 9 + 'w3 ') * 10000])    # one sentence of 100,000 words
  rows = word_pairs.make_rows(corpus, tokenizer.counts, mode='cbow', window=20, subsample=0.01,
                              rng=np.random.default_rng(0))
  kept = np.bincount(rows['center'][:, 0], minlength=4)
  expected = word_pairs.keep_probabilities(tokenizer.counts, 0.01)[2:] * [90000, 10000]
  # every kept word has a kept neighbour in the one long sentence, so it is a CBOW row
  np.testing.assert_allclose(kept[2:], expected, rtol=0.05)


def test_dynamic_window_offsets_are_triangular():
  """Window b uniform in 1..W: offset d is seen with probability (W - d + 1) / W."""
  tokenizer = _tokenizer([1] * 40)
  sentence = ' '.join(f'w{i}' for i in range(2, 42))
  window, n = 4, 200
  corpus = _corpus(tokenizer, [sentence] * n)
  rows = word_pairs.make_rows(corpus, tokenizer.counts, mode='skipgram', window=window,
                              subsample=0.0, rng=np.random.default_rng(1))
  offsets = rows['context'][:, 0] - rows['center'][:, 0]
  assert set(np.unique(np.abs(offsets))) == set(range(1, window + 1))
  interior = (rows['center'][:, 0] >= 2 + window) & (rows['center'][:, 0] < 42 - window)
  per_center = n * (40 - 2 * window)
  for d in range(1, window + 1):
    seen = np.sum(interior & (offsets == d)) / per_center
    assert abs(seen - (window - d + 1) / window) < 0.03
  # never across sentences: every pair is from one sentence of consecutive ids
  assert np.all(np.abs(offsets) <= window)


def test_cbow_rows_pad_context():
  tokenizer = _tokenizer([1, 1, 1])
  corpus = _corpus(tokenizer, ['w2 w3', 'w4'])       # w4 alone: no neighbour, no row
  rows = word_pairs.make_rows(corpus, tokenizer.counts, mode='cbow', window=2, subsample=0.0,
                              rng=np.random.default_rng(0))
  assert sorted(rows['center'][:, 0]) == [2, 3]
  assert rows['context'].shape == (2, 4)
  for center, context in zip(rows['center'][:, 0], rows['context']):
    assert sorted(context[context != 0]) == [5 - center]


def test_noise_is_unigram_to_three_quarters():
  counts = np.array([0, 0, 1000, 100, 10])
  noise = word_pairs.noise_distribution(counts)
  expected = counts[2:] ** 0.75 / np.sum(counts[2:] ** 0.75)
  np.testing.assert_allclose(noise[2:], expected)
  assert noise[0] == noise[1] == 0
  draws = word_pairs._negatives(noise, 20000, 5, 0)  # pylint: disable=protected-access
  np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=5)[2:] / draws.size, expected,
                             atol=0.01)


def _config(tmp_path, **changes):
  raw = tmp_path / 'm30k'
  raw.mkdir(exist_ok=True)
  lines = [f'a dog number {i} runs after the red ball' for i in range(30)]
  for prefix in ('train', 'val', 'test_2016_flickr'):
    for lang in ('en', 'de', 'fr'):
      with gzip.open(raw / f'{prefix}.{lang}.gz', 'wt') as f:
        f.write('\n'.join(lines) + '\n')
  sst = tmp_path / 'sst2'
  sst.mkdir(exist_ok=True)
  with gzip.open(sst / 'train.tsv.gz', 'wt') as f:
    f.write('text\tlabel\n' + ''.join(f'a good dog {i % 3}\t{i % 2}\n' for i in range(40)))
    f.write('good dog\t1\n')           # inside the rows above: not read again
  config = ml_collections.ConfigDict(dict(
      raw_dir=str(raw), sst2_dir=str(sst), min_count=2, subsample=0.0, window=3, num_negatives=4,
      pairs_per_batch=16, shuffle_seed=3, word2vec_mode='skipgram'))
  config.update(changes)
  return config


def _iterator(config, tmp_path, **kwargs):
  tokenizer = word_pairs.get_tokenizer(config, str(tmp_path / 'run'))
  return word_pairs.make_train_iterator(config, tokenizer, workdir=str(tmp_path / 'run'),
                                        batch_multiple=8, **kwargs)


@pytest.mark.parametrize('mode', ['skipgram', 'cbow'])
def test_iterator_is_deterministic_and_resumes(tmp_path, mode):
  config = _config(tmp_path, word2vec_mode=mode)
  straight = _iterator(config, tmp_path)
  batches = [next(straight) for _ in range(2 * straight.batches_in_epoch() + 5)]
  assert batches[0]['negatives'].shape == (16, 4)
  assert batches[0]['context'].shape == (16, 1 if mode == 'skipgram' else 6)
  assert straight.get_state()['epoch'] > 1
  first = _iterator(config, tmp_path)
  for _ in range(17):
    next(first)
  resumed = _iterator(config, tmp_path)
  resumed.set_state(first.get_state())
  for expected in batches[17:]:
    got = next(resumed)
    for key in expected:
      np.testing.assert_array_equal(got[key], expected[key])
  other = _iterator(_config(tmp_path, word2vec_mode=mode, shuffle_seed=4), tmp_path)
  assert not np.array_equal(next(other)['center'], batches[0]['center'])
  with pytest.raises(UserError, match='other data or data settings'):
    other.set_state(first.get_state())


def test_train_sentences_read_sst2_sentences_once(tmp_path):
  sentences = word_pairs.train_sentences(_config(tmp_path))
  assert sentences[30:] == ['a good dog 0', 'a good dog 1', 'a good dog 2']


def test_processes_split_the_global_batch(tmp_path):
  config = _config(tmp_path)
  whole = next(_iterator(config, tmp_path))
  halves = [next(_iterator(config, tmp_path, process_index=i, process_count=2)) for i in range(2)]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])


def test_eval_batches_fixed_and_padded_at_end(tmp_path):
  config = _config(tmp_path)
  tokenizer = word_pairs.get_tokenizer(config, str(tmp_path / 'run'))
  make = lambda: word_pairs.make_eval_batches(config, tokenizer, 'validation',
                                              workdir=str(tmp_path / 'run'), batch_multiple=8)
  a, b = make(), make()
  for x, y in zip(a.batches, b.batches):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  weights = np.concatenate([(x['context'] != 0).any(axis=1) for x in a.batches])
  assert weights.sum() == a.num_examples and weights[:a.num_examples].all()


def test_bad_settings_and_malformed_sst2_line(tmp_path):
  config = _config(tmp_path, pairs_per_batch=12)
  with pytest.raises(UserError, match='pairs_per_batch=12'):
    _iterator(config, tmp_path)
  bad = tmp_path / 'bad.tsv.gz'
  with gzip.open(bad, 'wt') as f:
    f.write('text\tlabel\nfine line\t1\nno label here\n')
  with pytest.raises(UserError, match=r'bad.tsv.gz:3: expected'):
    word_pairs.read_sst2_sentences(str(bad))
  config = _config(tmp_path, sst2_dir=str(tmp_path / 'nowhere'))
  with pytest.raises(UserError, match='sst2_dir'):
    word_pairs.check_available(config, str(tmp_path))
