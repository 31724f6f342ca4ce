"""Word vectors: Spearman with ties, SimLex scoring, word2vec text files, embedding init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax.base.errors import UserError
from transformer_jax.evaluation import word_vectors


def test_average_ranks_and_spearman_by_hand():
  np.testing.assert_array_equal(word_vectors.average_ranks([10, 20, 20, 5]), [2, 3.5, 3.5, 1])
  # x ranks 1..4, y ranks (1.5, 1.5, 3, 4): rho = cov / (sd sd) computed by hand
  rx, ry = np.array([1, 2, 3, 4.]), np.array([1.5, 1.5, 3, 4])
  rx, ry = rx - rx.mean(), ry - ry.mean()
  expected = (rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry))
  assert word_vectors.spearman([1, 2, 3, 4], [7, 7, 8, 9]) == pytest.approx(expected)
  assert word_vectors.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_matches_scipy():
  stats = pytest.importorskip('scipy.stats')
  rng = np.random.default_rng(0)
  x = rng.integers(0, 10, size=200).astype(float)     # many ties
  y = x + rng.integers(0, 6, size=200)
  assert word_vectors.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_simlex_scores_and_coverage(tmp_path):
  path = tmp_path / 'simlex.txt'
  path.write_text('word1\tword2\tPOS\tSimLex999\n'
                  'cat\tdog\tN\t8.0\ncat\tcar\tN\t1.0\ndog\tcar\tN\t2.0\ncat\tzebra\tN\t5.0\n')
  pairs = word_vectors.read_simlex(str(path))
  vocab = ['<pad>', '<unk>', 'cat', 'dog', 'car']
  vectors = np.array([[0, 0], [0, 0], [1, 0], [1, 0.1], [0, 1]], float)
  scores = word_vectors.simlex_scores(vocab, vectors, pairs)
  assert scores['simlex_coverage'] == 0.75
  assert scores['simlex_spearman'] == pytest.approx(1.0)   # cos order cat-dog > dog-car > cat-car
  assert word_vectors.nearest_neighbours(vocab, vectors, 'cat', k=2) == [
      ('dog', pytest.approx(1 / np.sqrt(1.01))), ('car', 0.0)]
  with pytest.raises(UserError, match='simlex_path'):
    word_vectors.read_simlex(str(tmp_path / 'missing.txt'))


def test_word2vec_text_round_trip(tmp_path):
  path = str(tmp_path / 'vectors.txt')
  words = ['dog', 'cat', "isn't"]
  vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
  word_vectors.save_word2vec_text(path, words, vectors)
  assert open(path).readline() == '3 4\n'
  loaded_words, loaded = word_vectors.load_word2vec_text(path)
  assert loaded_words == words
  np.testing.assert_allclose(loaded, vectors, rtol=1e-5)
  with pytest.raises(UserError, match='init_embeddings'):
    word_vectors.load_word2vec_text(str(tmp_path / 'none.txt'))


def test_set_embedding_rows_exactly_and_only_matching_pieces():
  pieces = ['<pad>', '</s>', '<unk>', '\u2581Dog', '\u2581the', 'ing', '\u2581cat', 'dog']
  words = ['dog', 'cat', 'ing', 'zebra']
  vectors = np.arange(12, dtype=np.float32).reshape(4, 3) + 100
  rng = np.random.default_rng(0)
  params = {'shared_embedding': {'embedding': jnp.asarray(rng.normal(size=(10, 3)), jnp.float32)},
            'layer': {'kernel': jnp.asarray(rng.normal(size=(10, 3)), jnp.float32)}}
  new, count = word_vectors.set_embedding_rows(params, pieces, words, vectors, model_dim=3)
  assert count == 4
  table, old = np.asarray(new['shared_embedding']['embedding']), np.asarray(
      params['shared_embedding']['embedding'])
  expected_rows = {3: 0, 5: 2, 6: 1, 7: 0}        # id -> row of `vectors`
  for i in range(10):
    want = vectors[expected_rows[i]] if i in expected_rows else old[i]
    np.testing.assert_array_equal(table[i], want)
  np.testing.assert_array_equal(np.asarray(new['layer']['kernel']),
                                np.asarray(params['layer']['kernel']))
  with pytest.raises(UserError, match='model_dim is 4'):
    word_vectors.set_embedding_rows(params, pieces, words, vectors, model_dim=4)


@pytest.mark.slow   # among the longest on 2 cores: kept out of the ~10 min default suite
def test_init_embeddings_in_a_fresh_transformer_run(tmp_path, shared_data):
  """launch-level: train.init_embeddings sets the rows of a Multi30k Transformer's table."""
  from tests.run import experiments_test                       # pylint: disable=import-outside-toplevel
  from transformer_jax.train import components
  from transformer_jax.train import trainer
  config = experiments_test.smoke_config('multi30k', shared_data)
  dim = config.model.model_dim
  path = str(tmp_path / 'vectors.txt')
  words = ['a', 'dog', 'man']
  vectors = np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32)
  word_vectors.save_word2vec_text(path, words, vectors)
  config.train.update(init_embeddings=path, num_steps=1)
  config.optim.learning_rate = 1e-12         # one step hardly moves the rows
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir)
  params = experiments_test.final_params(config, workdir).params
  tokenizer = components.build(config, workdir).tokenizer
  table = np.asarray(jax.tree_util.tree_leaves(
      {k: v for k, v in params.items() if 'embedding' in k})[0])
  loaded_words, loaded = word_vectors.load_word2vec_text(path)   # text keeps 6 digits
  checked = 0
  for word, row in zip(loaded_words, loaded):
    ids = tokenizer.encode([word])[0][:-1]
    if len(ids) == 1:
      np.testing.assert_allclose(table[ids[0]], row, atol=1e-6)
      checked += 1
  assert checked >= 2


def test_a_malformed_or_non_finite_vectors_file_names_its_line(tmp_path):
  path = tmp_path / 'vectors.txt'
  for text, words in [(b'2 3\ndog 1 2 3\ncat 1 2 -inf\n', r'vectors.txt:3: value 3 of .cat. is -'),
                      (b'2 3\ndog 1 2 3\ncat 1 2,5 3\n', r'vectors.txt:3: value 2 of .cat. is .2,'),
                      (b'3\ndog 1 2 3\n', r'vectors.txt:1: header .3. is not "<count> <dim>"'),
                      (b'1 0\ndog\n', r'vectors.txt:1: header .1 0. is not'),
                      (b'\xff\xfe\n', r'vectors.txt:1: header')]:
    path.write_bytes(text)
    with pytest.raises(UserError, match=words):
      word_vectors.load_word2vec_text(str(path))
    with pytest.raises(UserError, match=words):
      word_vectors.check_word2vec_text(str(path))
  path.write_bytes(b'2 3\ndog 1 2 3\r\ncat 4 5 6\n')          # CRLF line ends are fine
  words, vectors = word_vectors.load_word2vec_text(str(path))
  assert words == ['dog', 'cat'] and vectors.dtype == np.float32
  np.testing.assert_array_equal(vectors, [[1, 2, 3], [4, 5, 6]])
  assert word_vectors.check_word2vec_text(str(path)) == 3


def test_importing_word_vectors_loads_no_jax():
  import pathlib
  import subprocess
  import sys
  code = ('import sys; import transformer_jax.evaluation.word_vectors; '
          'sys.exit(1 if "jax" in sys.modules else 0)')
  assert subprocess.run([sys.executable, '-c', code],
                        cwd=pathlib.Path(__file__).resolve().parents[2]).returncode == 0
